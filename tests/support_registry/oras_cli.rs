//! Pushes with the `oras` CLI (oras.land/oras, oras-go v2), the reference ORAS client: it writes
//! OCI 1.1 manifests (`artifactType`, the empty config `application/vnd.oci.empty.v1+json`)
//! unlike oras-py. Each call runs `oras push … img.sif:application/vnd.sylabs.sif.layer.v1.sif`
//! from its own directory and keeps the manifest it pushed (`--export-manifest`), so a test can
//! both pull it and check that it really is the OCI 1.1 shape. `index` builds a multi-platform
//! OCI index from pushed manifests with `oras manifest index create`.
//!
//! Invariant: the CLI runs with `$HOME` and `$DOCKER_CONFIG` in a temp dir (it never reads or
//! writes the real user's credentials); credentials are passed as flags.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use super::push::Pushed;
use super::SIF_LAYER;
use crate::common::{go_tool, run_with_limit, sha256_hex, stderr_of, temp_dir};

const PUSH_LIMIT: Duration = Duration::from_secs(180);

/// How the CLI reaches the registry.
#[derive(Clone)]
pub enum Transport {
    PlainHttp,
    /// https, trusting this CA file.
    CaFile(PathBuf),
}

/// Registry, credentials and transport for a series of CLI calls.
pub struct OrasCli {
    pub host: String,
    pub credentials: Option<(String, String)>,
    pub transport: Transport,
}

/// What `push` made: the `Pushed` record plus the manifest bytes as pushed.
pub struct CliPushed {
    pub pushed: Pushed,
    pub manifest: serde_json::Value,
}

impl OrasCli {
    pub fn plain(host: &str) -> OrasCli {
        OrasCli { host: host.to_string(), credentials: None, transport: Transport::PlainHttp }
    }

    /// `oras push HOST/TARGET img.sif:SIF_LAYER` (plus `extra` flags, e.g. `--artifact-platform`).
    pub fn push(&self, target: &str, bytes: &[u8], extra: &[&str]) -> CliPushed {
        let work = temp_dir("oras-cli-push-");
        fs::write(work.path().join("img.sif"), bytes).expect("write img.sif");
        let manifest_path = work.path().join("manifest.json");
        let mut args: Vec<String> = vec!["push".into(), "--no-tty".into()];
        args.extend(["--export-manifest".into(), manifest_path.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        args.push(format!("{}/{target}", self.host));
        args.push(format!("img.sif:{SIF_LAYER}"));
        self.run(&work, &args);
        let manifest_bytes = fs::read(&manifest_path).expect("oras wrote the pushed manifest");
        let manifest = serde_json::from_slice(&manifest_bytes).expect("the pushed manifest is JSON");
        let pushed = Pushed {
            target: target.to_string(),
            manifest_digest: format!("sha256:{}", sha256_hex(&manifest_bytes)),
            layer_digests: vec![format!("sha256:{}", sha256_hex(bytes))],
        };
        CliPushed { pushed, manifest }
    }

    /// `oras manifest index create HOST/REPO:TAG SOURCES…`: an OCI index whose children carry the
    /// platforms the sources were pushed with.
    pub fn index(&self, repo_tag: &str, sources: &[&str]) {
        let work = temp_dir("oras-cli-index-");
        let mut args: Vec<String> = vec!["manifest".into(), "index".into(), "create".into()];
        args.push(format!("{}/{repo_tag}", self.host));
        args.extend(sources.iter().map(|s| s.to_string()));
        self.run(&work, &args);
    }

    fn run(&self, work: &tempfile::TempDir, args: &[String]) -> Output {
        let home = work.path().join("home");
        fs::create_dir_all(&home).expect("mkdir home");
        let mut cmd = Command::new(go_tool("oras"));
        cmd.args(args).current_dir(work.path()).env("HOME", &home).env("DOCKER_CONFIG", &home);
        match &self.transport {
            Transport::PlainHttp => cmd.arg("--plain-http"),
            Transport::CaFile(ca) => cmd.arg("--ca-file").arg(ca),
        };
        if let Some((user, password)) = &self.credentials {
            cmd.args(["--username", user, "--password", password]);
        }
        let out = run_with_limit(&mut cmd, PUSH_LIMIT);
        assert!(
            out.status.success(),
            "oras {args:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            stderr_of(&out)
        );
        out
    }
}
