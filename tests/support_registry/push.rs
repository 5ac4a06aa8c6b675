//! Pushes ORAS artifacts with oras-py (PyPI `oras`), the way users publish SIF images: one
//! `python3` run per call, one push per spec, each from its own directory (oras-py refuses
//! files outside the current directory), with the manifest digest read from the registry's
//! `Docker-Content-Digest` answer to the manifest PUT.
//!
//! Invariant: python runs with `$HOME` and `$DOCKER_CONFIG` in a temp dir, so it neither reads
//! nor writes the real user's docker credentials; credentials are passed explicitly.

use std::fs;
use std::process::Command;
use std::time::Duration;

use super::{ensure_tools, SIF_CONFIG};
use crate::common::{run_with_limit, stderr_of, temp_dir};

const PUSH_LIMIT: Duration = Duration::from_secs(180);

/// One layer file: its name in the artifact, its bytes, its media type.
pub struct Layer<'a> {
    pub name: &'a str,
    pub bytes: &'a [u8],
    pub media_type: &'a str,
}

/// `target` is `repo:tag` (the registry is added by `push`).
pub struct PushSpec<'a> {
    pub target: &'a str,
    pub layers: Vec<Layer<'a>>,
}

impl<'a> PushSpec<'a> {
    /// The usual SIF image: one layer of `SIF_LAYER`.
    pub fn sif(target: &'a str, bytes: &'a [u8]) -> PushSpec<'a> {
        PushSpec { target, layers: vec![Layer { name: "img.sif", bytes, media_type: super::SIF_LAYER }] }
    }
}

#[derive(Debug, Clone)]
pub struct Pushed {
    pub target: String,
    /// `sha256:<hex>` of the manifest, as the registry reported it.
    pub manifest_digest: String,
    /// `sha256:<hex>` of each layer, computed from the files pushed.
    pub layer_digests: Vec<String>,
}

impl Pushed {
    /// `repo@sha256:..`: the digest reference of this artifact.
    pub fn digest_ref(&self) -> String {
        let repo = self.target.rsplit_once(':').map_or(self.target.as_str(), |(repo, _)| repo);
        format!("{repo}@{}", self.manifest_digest)
    }
}

/// How oras-py authenticates: nothing, Basic on every request (htpasswd registries), or the
/// Bearer token flow with these credentials sent to the token realm.
pub enum PushAuth<'a> {
    Anonymous,
    Basic(&'a str, &'a str),
    Token(&'a str, &'a str),
}

const SCRIPT: &str = r#"
import hashlib, json, os, sys
import oras.client
spec = json.load(open(sys.argv[1]))
for p in spec["pushes"]:
    os.chdir(p["dir"])
    client = oras.client.OrasClient(hostname=spec["host"], insecure=True, auth_backend=spec["backend"])
    if spec["user"] is not None:
        client.auth.set_basic_auth(spec["user"], spec["password"])
    resp = client.push(target=spec["host"] + "/" + p["target"], files=p["files"],
                       manifest_config="cfg.json:" + spec["config_type"], quiet=True)
    if resp.status_code not in (200, 201):
        sys.exit("push %s: HTTP %s: %s" % (p["target"], resp.status_code, resp.text))
    layers = []
    for f in p["files"]:
        with open(f.rsplit(":", 1)[0], "rb") as layer:
            layers.append("sha256:" + hashlib.sha256(layer.read()).hexdigest())
    print("PUSHED", p["target"], resp.headers["Docker-Content-Digest"], ",".join(layers), flush=True)
"#;

/// Pushes every spec to `host` (`127.0.0.1:PORT`); panics with python's output on failure.
pub fn push(host: &str, auth: PushAuth, specs: &[PushSpec]) -> Vec<Pushed> {
    ensure_tools();
    let work = temp_dir("oras-push-");
    let mut pushes = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let dir = work.path().join(format!("p{i}"));
        fs::create_dir_all(&dir).expect("mkdir push dir");
        fs::write(dir.join("cfg.json"), "{}").expect("write cfg.json");
        let mut files = Vec::new();
        for layer in &spec.layers {
            fs::write(dir.join(layer.name), layer.bytes).expect("write layer file");
            files.push(format!("{}:{}", layer.name, layer.media_type));
        }
        pushes.push(serde_json::json!({"dir": dir, "target": spec.target, "files": files}));
    }
    let (backend, user, password) = match auth {
        PushAuth::Anonymous => ("token", None, None),
        PushAuth::Basic(u, p) => ("basic", Some(u), Some(p)),
        PushAuth::Token(u, p) => ("token", Some(u), Some(p)),
    };
    let spec = serde_json::json!({
        "host": host, "backend": backend, "user": user, "password": password,
        "config_type": SIF_CONFIG, "pushes": pushes,
    });
    let spec_path = work.path().join("spec.json");
    fs::write(&spec_path, spec.to_string()).expect("write spec.json");
    let home = work.path().join("home");
    fs::create_dir_all(&home).expect("mkdir home");
    let mut cmd = Command::new("python3");
    cmd.arg("-c").arg(SCRIPT).arg(&spec_path).env("HOME", &home).env("DOCKER_CONFIG", &home);
    cmd.env("PYTHONDONTWRITEBYTECODE", "1").current_dir(work.path());
    let out = run_with_limit(&mut cmd, PUSH_LIMIT);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "oras-py push failed ({}):\n{stdout}\n{}", out.status, stderr_of(&out));
    collect(&stdout, specs)
}

/// Reads the `PUSHED <target> <manifest digest> <layer digests,..>` lines python printed.
fn collect(stdout: &str, specs: &[PushSpec]) -> Vec<Pushed> {
    specs
        .iter()
        .map(|spec| {
            let fields: Vec<&str> = stdout
                .lines()
                .filter_map(|l| l.strip_prefix("PUSHED "))
                .map(|l| l.split(' ').collect::<Vec<&str>>())
                .find(|f| f.first() == Some(&spec.target))
                .unwrap_or_else(|| panic!("no digest printed for {}:\n{stdout}", spec.target));
            let is_digest = |d: &str| d.starts_with("sha256:") && d.len() == 71;
            let manifest_digest = fields.get(1).copied().unwrap_or("").to_string();
            // Hashed by python (hashlib): sha2 in a debug test build takes seconds for 100 MiB.
            let layer_digests: Vec<String> =
                fields.get(2).copied().unwrap_or("").split(',').map(str::to_string).collect();
            assert!(is_digest(&manifest_digest), "odd manifest digest in {fields:?}");
            assert!(
                layer_digests.len() == spec.layers.len() && layer_digests.iter().all(|d| is_digest(d)),
                "{fields:?}"
            );
            Pushed { target: spec.target.to_string(), manifest_digest, layer_digests }
        })
        .collect()
}
