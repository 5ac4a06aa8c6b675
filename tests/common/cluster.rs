//! Our daemons as members of a Dragonfly cluster, for the cluster suites (`e2e_p2p.rs`,
//! `e2e_manager.rs`): a peer with its own loopback address (127.0.0.N+1) and upload ports, told of
//! the cluster by a static scheduler or by a manager; and the origin-side counts (nginx's access
//! log) that show whether pieces travelled between peers or from the origin.
//!
//! Invariant: a `Peer` returned by `peer`/`peer_with_env`/`manager_peer` has announced itself to
//! a scheduler; its daemon stops when it is dropped (`Daemon`'s own guard).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::{content, free_port, poll_until, Daemon, DaemonOpts, Nginx};

pub struct Peer {
    pub daemon: Daemon,
    pub ip: String,
    pub grpc_port: u16,
    pub vortex_port: u16,
}

/// A `scheduler:` section naming one static scheduler.
pub fn static_scheduler(addr: &str) -> String {
    format!("scheduler:\n  netAddrs:\n    - type: tcp\n      addr: {addr}\n")
}

/// A `scheduler:` section naming only a manager, as a Dragonfly cluster's dfget.yaml does.
pub fn manager_only(addr: &str, refresh: &str) -> String {
    format!(
        "scheduler:\n  manager:\n    enable: true\n    netAddrs:\n      - type: tcp\n        addr: {addr}\n    \
         refreshInterval: {refresh}\n"
    )
}

/// Peer `n` with `scheduler_yaml`, its host identity and upload ports, not waited on.
pub fn start_peer(scheduler_yaml: &str, n: u8, extra: &str, daemon_env: Vec<(String, OsString)>) -> Peer {
    let ip = format!("127.0.0.{}", n + 1);
    let (grpc_port, vortex_port) = (free_port(), free_port());
    let yaml = format!(
        "{scheduler_yaml}host:\n  advertiseIP: {ip}\n  hostname: peer{n}\n\
         upload:\n  tcpListen:\n    listen: {ip}\n    port: {grpc_port}\n  vortexPort: {vortex_port}\n{extra}"
    );
    let daemon = Daemon::start(DaemonOpts { extra_yaml: yaml, daemon_env, ..DaemonOpts::default() });
    Peer { daemon, ip, grpc_port, vortex_port }
}

pub fn peer(sched_addr: &str, n: u8, extra: &str) -> Peer {
    peer_with_env(sched_addr, n, extra, Vec::new())
}

pub fn peer_with_env(sched_addr: &str, n: u8, extra: &str, daemon_env: Vec<(String, OsString)>) -> Peer {
    let p = start_peer(&static_scheduler(sched_addr), n, extra, daemon_env);
    assert!(
        p.daemon.wait_log("announced to the scheduler"),
        "peer{n} never announced itself:\n{}",
        p.daemon.core_log()
    );
    p
}

/// Peer `n` told only of the manager at `manager_addr`: it must learn the scheduler from the
/// manager and announce itself to it.
pub fn manager_peer(manager_addr: &str, n: u8, extra: &str) -> Peer {
    let p = start_peer(&manager_only(manager_addr, "10s"), n, extra, Vec::new());
    let announced = poll_until(Duration::from_secs(30), || p.daemon.core_log().contains("announced to the scheduler"));
    assert!(announced, "peer{n} never announced itself through the manager:\n{}", p.daemon.core_log());
    p
}

pub fn origin_bytes(nginx: &Nginx, uri: &str) -> u64 {
    nginx.access_log_entries().iter().filter(|e| e.uri == uri).map(|e| e.body_bytes_sent).sum()
}

/// Writes `len` bytes of seeded content to `dir/name` for the origin to serve, and returns them.
pub fn serve(dir: &Path, name: &str, len: usize, seed: u64) -> Vec<u8> {
    let bytes = content(len, seed);
    std::fs::write(dir.join(name), &bytes).expect("write origin file");
    bytes
}

/// nginx writes its access-log line when a request completes; wait for the count to settle.
pub fn settled_origin_bytes(nginx: &Nginx, uri: &str) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..20 {
        let now = origin_bytes(nginx, uri);
        if now == last {
            return now;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}
