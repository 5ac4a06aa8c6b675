//! Harness for the ORAS end-to-end tests: a real registry (Debian's docker-registry 2.8.2 or
//! distribution v3) with optional htpasswd or token auth and TLS, a test token service, artifact
//! pushes with oras-py and the `oras` CLI, certificates made with openssl, a network namespace for
//! a non-loopback registry, and a `dfget daemon` whose docker config and `$HOME` live in its own
//! temp dir. The daemon, process helpers and tool installers are `tests/common`'s.
//!
//! Invariant: every process or thread started here is stopped by a `Drop` impl (SIGTERM, a few
//! seconds' grace, SIGKILL), so a panicking test leaves nothing running; and no spawned process ever reads
//! the real user's `$HOME` or docker config (both point into temp dirs).

// Each test uses a different subset of the harness.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod daemon;
pub mod front;
pub mod netns;
pub mod oras_cli;
pub mod pull;
pub mod push;
pub mod registry;
pub mod token;

use std::process::{Command, Stdio};
use std::sync::OnceLock;

pub use crate::common::{content, dir_entries, free_port, regular_files_under, stderr_of, temp_dir, KIB, MIB};
pub use certs::TestCerts;
pub use daemon::{DaemonOpts, OrasDaemon};
pub use netns::NetNs;
pub use oras_cli::{CliPushed, OrasCli, Transport};
pub use pull::{assert_failed_cleanly, assert_pulled};
pub use push::{push, Layer, PushAuth, PushSpec, Pushed};
pub use registry::{BlobRequest, Kind, Registry, RegistryAuth, RegistryOpts};
pub use token::{TokenRequest, TokenServer};

use crate::common::ensure_tool;

/// The media type the daemon accepts for the one layer of an image.
pub const SIF_LAYER: &str = "application/vnd.sylabs.sif.layer.v1.sif";
pub const SIF_CONFIG: &str = "application/vnd.sylabs.sif.config.v1+json";

/// Checks once per test binary that docker-registry, htpasswd, openssl and oras-py are there,
/// installing what is missing; panics with the reason when that is impossible, because a test
/// that silently skips the real servers proves nothing.
pub fn ensure_tools() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = READY.get_or_init(install_missing) {
        panic!("ORAS e2e prerequisites missing: {e}");
    }
}

fn install_missing() -> Result<(), String> {
    ensure_tool("docker-registry", &["docker-registry"]);
    ensure_tool("htpasswd", &["apache2-utils"]);
    ensure_tool("openssl", &["openssl"]);
    let has_oras =
        || Command::new("python3").args(["-c", "import oras.client"]).output().is_ok_and(|o| o.status.success());
    if !has_oras() {
        let pip = Command::new("python3").args(["-m", "pip", "install", "oras"]).stdin(Stdio::null()).output();
        let pip = pip.map_err(|e| format!("pip install oras: cannot run: {e}"))?;
        if !pip.status.success() {
            return Err(format!("pip install oras failed ({}): {}", pip.status, String::from_utf8_lossy(&pip.stderr)));
        }
        if !has_oras() {
            return Err("python3 cannot import oras.client even after `pip install oras`".into());
        }
    }
    Ok(())
}
