//! A `dfget daemon` for the ORAS tests: the shared `common::Daemon` (reached through `Deref`)
//! with its own `$HOME` and docker config in a temp dir, optionally holding registry credentials,
//! and either the minimal test config or the seed page's config block.
//!
//! ORAS credentials come from the daemon's `$DOCKER_CONFIG`, so this harness sets `DOCKER_CONFIG`
//! and `HOME` per daemon (on the daemon and on its clients) instead of inheriting the test's.
//!
//! Invariant: an `OrasDaemon` exists only once it answered `/healthy`; Drop always stops it
//! (as `common::Daemon` does) before its home is removed, and it never sees the real user's home
//! or docker config.

use std::fs;
use std::ops::Deref;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use tempfile::TempDir;

use crate::common::{temp_dir, Daemon};

/// The seed page's YAML block, verbatim (its `storage:` and top-level `oras:`).
const SEED_YAML: &str = include_str!("../fixtures/seed-dfget.yaml");

#[derive(Default)]
pub struct DaemonOpts {
    /// `(registry host:port, user, password)` entries of `$DOCKER_CONFIG/config.json`.
    pub credentials: Vec<(String, String, String)>,
    /// `(registry host:port, identity token)` entries, as `docker login` writes them for OAuth2
    /// registries: `identitytoken` beside an `auth` of `<token>:`.
    pub identity_tokens: Vec<(String, String)>,
    /// Use the seed page's `storage:` + `oras:` block instead of the minimal test config.
    pub seed_config: bool,
    /// `--log-level`; None = the daemon's default.
    pub log_level: Option<&'static str>,
    /// More YAML merged into the minimal test config (ignored with `seed_config`).
    pub extra_yaml: &'static str,
    /// The `oras:` block of the minimal test config (indented lines); None = `insecureSkipVerify: true`.
    pub oras_yaml: Option<String>,
    /// Variables set on the daemon only (e.g. `SSL_CERT_FILE`).
    pub daemon_env: Vec<(String, std::ffi::OsString)>,
}

pub struct OrasDaemon {
    /// Declared first: the process stops before its home is removed.
    daemon: Daemon,
    /// `home/` (`$HOME`) and `docker/` (`$DOCKER_CONFIG`).
    _env_dir: TempDir,
}

impl OrasDaemon {
    pub fn start(opts: DaemonOpts) -> OrasDaemon {
        let env_dir = temp_dir("oras-daemon-env-");
        let (home, docker) = (env_dir.path().join("home"), env_dir.path().join("docker"));
        fs::create_dir_all(&home).expect("mkdir home");
        fs::create_dir_all(&docker).expect("mkdir docker config dir");
        if !opts.credentials.is_empty() || !opts.identity_tokens.is_empty() {
            let config = docker_config(&opts.credentials, &opts.identity_tokens);
            fs::write(docker.join("config.json"), config).expect("write config.json");
        }
        let (extra_yaml, verbatim_yaml) = if opts.seed_config {
            (String::new(), SEED_YAML)
        } else {
            let oras = opts.oras_yaml.as_deref().unwrap_or("  insecureSkipVerify: true\n");
            (format!("oras:\n{oras}{}", opts.extra_yaml), "")
        };
        let daemon = Daemon::start(crate::common::DaemonOpts {
            extra_yaml,
            verbatim_yaml,
            log_level: opts.log_level.map(str::to_string),
            env: vec![("HOME".into(), home.into()), ("DOCKER_CONFIG".into(), docker.into())],
            env_remove: vec!["XDG_RUNTIME_DIR".into()],
            daemon_env: opts.daemon_env,
            ..crate::common::DaemonOpts::default()
        });
        OrasDaemon { daemon, _env_dir: env_dir }
    }
}

impl Deref for OrasDaemon {
    type Target = Daemon;

    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

fn docker_config(credentials: &[(String, String, String)], identity_tokens: &[(String, String)]) -> String {
    let mut auths: serde_json::Map<String, serde_json::Value> = credentials
        .iter()
        .map(|(host, user, password)| {
            (host.clone(), serde_json::json!({"auth": STANDARD.encode(format!("{user}:{password}"))}))
        })
        .collect();
    for (host, token) in identity_tokens {
        auths.insert(host.clone(), serde_json::json!({"auth": STANDARD.encode("<token>:"), "identitytoken": token}));
    }
    serde_json::json!({ "auths": auths }).to_string()
}
