//! Harness for the transport end-to-end tests (issue 3): a scriptable plain/TLS origin, a test PKI
//! and a TLS nginx, tinyproxy, a listener whose accept queue is full, daemons with a given
//! `download.resourceClients.http` block or proxy environment, and the checks every failure case
//! shares. Daemons, nginx, the origin plumbing and the tool installer are `tests/common`'s.
//!
//! Invariant: every process, thread or socket a test starts through this module is stopped or
//! closed by a `Drop` impl; a missing external tool is installed with apt-get (`common::tools`),
//! and when that is impossible the test fails loudly naming the package — it never silently skips.

#![allow(dead_code)]

pub mod script_origin;
pub mod tinyproxy;
pub mod tls_site;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use crate::common::{Daemon, DaemonOpts};

pub use crate::common::{assert_download_fails, assert_still_serves, download_exact, out_dir};
#[allow(unused_imports)]
pub use script_origin::{Ctx, Next, Req, ScriptOrigin};
pub use tinyproxy::Tinyproxy;
pub use tls_site::{TestPki, TlsNginx};

/// The daemon's `download.resourceClients.http` block with `keys` (YAML scalars, written as
/// given: quote paths and URLs yourself when they need it).
pub fn http_transport_yaml(keys: &[(&str, String)]) -> String {
    let mut yaml = String::from("download:\n  resourceClients:\n    http:\n");
    if keys.is_empty() {
        yaml.push_str("      {}\n");
    }
    for (k, v) in keys {
        yaml.push_str(&format!("      {k}: {v}\n"));
    }
    yaml
}

/// A daemon (2 cores) whose http(s) transport has `keys`.
pub fn daemon_with(keys: &[(&str, String)]) -> Daemon {
    Daemon::start(DaemonOpts { extra_yaml: http_transport_yaml(keys), ..DaemonOpts::default() })
}

/// Same, with debug logs (retried errors are logged at debug level only).
pub fn daemon_with_debug_log(keys: &[(&str, String)]) -> Daemon {
    Daemon::start(DaemonOpts {
        extra_yaml: http_transport_yaml(keys),
        log_level: Some("debug".into()),
        ..DaemonOpts::default()
    })
}

/// Every proxy variable: a daemon from `env_daemon` sees only the ones its test names.
const PROXY_VARS: [&str; 8] =
    ["http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"];

/// A daemon (2 cores) with `transport_yaml` (a whole `download:` block, see
/// `http_transport_yaml`, or "") and the environment variables `env` — set on the daemon process
/// only, because it reads the proxy variables itself. The proxy variables of the test process
/// are never passed on, to the daemon or to its clients: only the ones the test names.
pub fn env_daemon(transport_yaml: &str, env: &[(&str, String)]) -> Daemon {
    Daemon::start(DaemonOpts {
        extra_yaml: transport_yaml.to_string(),
        daemon_env: env.iter().map(|(k, v)| (k.to_string(), v.into())).collect(),
        env_remove: PROXY_VARS.map(String::from).to_vec(),
        ..DaemonOpts::default()
    })
}

/// A path as a single-quoted YAML scalar.
pub fn yaml_path(p: &Path) -> String {
    format!("'{}'", p.display())
}

/// Asserts `haystack` contains `needle` (case-insensitively), showing both on failure.
pub fn assert_mentions(haystack: &str, needle: &str, what: &str) {
    assert!(
        haystack.to_ascii_lowercase().contains(&needle.to_ascii_lowercase()),
        "{what}: expected the message to mention {needle:?}, got: {haystack}"
    );
}

/// A 127.0.0.1 listener that never accepts and whose accept queue is full, so a new connect gets
/// no SYN-ACK and hangs (Linux drops a SYN while the accept queue is full).
pub struct FullBacklog {
    listener: TcpListener,
    /// Connections sitting in the accept queue; kept open so the queue stays full.
    queued: Vec<TcpStream>,
}

impl FullBacklog {
    /// `None` when the kernel kept completing connects (the queue never filled), so the caller
    /// can skip with a reason instead of failing on a kernel behaviour.
    pub fn start() -> Option<FullBacklog> {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        // Re-listening on a listening socket only changes its backlog: 0 means one queued
        // connection fills it.
        rustix::net::listen(&listener, 0).expect("listen(0)");
        let addr = listener.local_addr().expect("addr");
        let mut queued = Vec::new();
        for _ in 0..16 {
            match TcpStream::connect_timeout(&addr, Duration::from_millis(300)) {
                Ok(s) => queued.push(s),
                Err(_) => return Some(FullBacklog { listener, queued }),
            }
        }
        None
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("addr")
    }
}
