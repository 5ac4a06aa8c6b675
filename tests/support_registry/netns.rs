//! A network namespace the test makes (as root) with a veth pair, so that a server can listen on
//! an address that is not loopback — `10.x.y.2` inside the namespace, reached from the host side
//! `10.x.y.1` — without any traffic leaving this machine. Used to test rules that depend on a
//! registry *not* being loopback.
//!
//! Invariant: the namespace and its veth pair exist only while the `NetNs` lives; Drop deletes
//! the namespace (which deletes the pair). Addresses are a /30 chosen from the process id and a
//! counter, so concurrent test processes do not collide.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct NetNs {
    pub name: String,
    host_if: String,
    /// The address inside the namespace, where its servers listen.
    pub inner_ip: String,
}

impl NetNs {
    pub fn create() -> NetNs {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        // SAFETY: geteuid has no preconditions.
        assert!(unsafe { libc::geteuid() } == 0, "network namespaces need root");
        let n = COUNTER.fetch_add(1, Ordering::SeqCst) % 4;
        let pid = std::process::id();
        // A /30 per (pid, counter) in 10.64.0.0/10: base < 2^22.
        let base = (((pid % (1 << 18)) * 4 + n) << 2) as u32;
        let ip = |last: u32| {
            let a = base + last;
            format!("10.{}.{}.{}", 64 + (a >> 16), (a >> 8) & 255, a & 255)
        };
        let tag = format!("{}{n}", pid % 100_000);
        let ns = NetNs { name: format!("dfget-e2e-{tag}"), host_if: format!("dfh{tag}"), inner_ip: ip(2) };
        let inner_if = format!("dfn{tag}");
        let host_ip = format!("{}/30", ip(1));
        let inner_cidr = format!("{}/30", ns.inner_ip);
        ip_cmd(&["netns", "add", &ns.name]);
        ip_cmd(&["link", "add", &ns.host_if, "type", "veth", "peer", "name", &inner_if]);
        ip_cmd(&["link", "set", &inner_if, "netns", &ns.name]);
        ip_cmd(&["addr", "add", &host_ip, "dev", &ns.host_if]);
        ip_cmd(&["link", "set", &ns.host_if, "up"]);
        ip_cmd(&["netns", "exec", &ns.name, "ip", "addr", "add", &inner_cidr, "dev", &inner_if]);
        ip_cmd(&["netns", "exec", &ns.name, "ip", "link", "set", &inner_if, "up"]);
        ip_cmd(&["netns", "exec", &ns.name, "ip", "link", "set", "lo", "up"]);
        ns
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).stderr(Stdio::null()).status();
    }
}

fn ip_cmd(args: &[&str]) {
    let out = Command::new("ip").args(args).stdin(Stdio::null()).output().expect("run ip (iproute2)");
    assert!(out.status.success(), "ip {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}
