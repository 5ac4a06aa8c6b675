//! Many clients on one downloading URL: N concurrent `POST /download` streams (threads speaking
//! the socket protocol, as `dfget` does) of one rate-limited task on a 2-core daemon, while a
//! prober times `GET /healthy` every 20 ms. Reports the time until every client is done, the
//! probes' p50/p99/max, and then — with N clients waiting on a slow URL — how long SIGTERM takes.
//!
//! `cargo bench --bench waiters` uses N = 10,000; under `cargo test --all-targets` (no `--bench`
//! argument) it runs a 200-client smoke pass so the harness itself stays tested. The origin is
//! the throttled in-process one of the tests (1 MiB/s per connection), so every client waits.

#[path = "../tests/common/range.rs"]
#[allow(dead_code)]
mod range;
#[path = "../tests/common/server.rs"]
#[allow(dead_code)]
mod server;
#[path = "../tests/support_load/mod.rs"]
mod support_load;
#[path = "../tests/support_storage/origin.rs"]
#[allow(dead_code)]
mod throttled;
/// The throttled origin reaches its server plumbing and Range parser as `crate::common::…`, as in
/// the tests.
mod common {
    pub(crate) use super::{range, server};
}

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support_load::{quantile, raise_nofile, Clients, HealthProbe, Outcome};

const MIB: usize = 1024 * 1024;

fn start_daemon(dir: &Path) -> Child {
    std::fs::create_dir_all(dir).expect("bench dir");
    let cfg = dir.join("dfget.yaml");
    let yaml = format!(
        "dataDir: {}\nlogDir: {}\nstorage:\n  multiplex: true\ndownload:\n  downloadGRPC:\n    unixListen:\n      socket: {}\n",
        dir.join("data").display(),
        dir.join("log").display(),
        dir.join("d.sock").display()
    );
    std::fs::write(&cfg, yaml).expect("config");
    let child = Command::new(env!("CARGO_BIN_EXE_dfget"))
        .args(["daemon", "--cores", "2", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let deadline = Instant::now() + Duration::from_secs(10);
    while support_load::healthy_latency(&dir.join("d.sock"), Duration::from_secs(1)).is_none() {
        assert!(Instant::now() < deadline, "daemon not healthy within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn sigterm(child: &mut Child) -> Duration {
    let t = Instant::now();
    // SAFETY: signalling our own child, not yet reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    while child.try_wait().ok().flatten().is_none() {
        assert!(t.elapsed() < Duration::from_secs(60), "daemon still running 60 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(5));
    }
    t.elapsed()
}

fn count(outcomes: &[Outcome], done: bool) -> usize {
    outcomes.iter().filter(|o| matches!(o, Outcome::Done { .. }) == done).count()
}

/// All `n` clients download one 64 MiB task; returns (wall time, healthy latencies, failures).
fn waiters_finish(n: usize, dir: &Path) -> (Duration, Vec<Option<Duration>>, usize) {
    let origin = throttled::ThrottledOrigin::start();
    origin.add("/f", vec![7u8; 64 * MIB]);
    origin.throttle("/f", 0, MIB as u64);
    let mut daemon = start_daemon(dir);
    let sock = dir.join("d.sock");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let probe = HealthProbe::start(&sock, Duration::from_millis(20), Duration::from_secs(30));
    let t = Instant::now();
    let outcomes = Clients::start(n, &sock, &origin.url("/f"), &out, Duration::from_secs(120)).join();
    let wall = t.elapsed();
    let health = probe.stop();
    sigterm(&mut daemon);
    (wall, health, n - count(&outcomes, true))
}

/// `n` clients wait on a slow task; returns how long SIGTERM took.
fn sigterm_while_waiting(n: usize, dir: &Path) -> Duration {
    let origin = throttled::ThrottledOrigin::start();
    origin.add("/slow", vec![9u8; 64 * MIB]);
    origin.throttle("/slow", 0, 256 * 1024);
    let mut daemon = start_daemon(dir);
    let sock = dir.join("d.sock");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).expect("out dir");
    let clients = Clients::start(n, &sock, &origin.url("/slow"), &out, Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(3 + n as u64 / 2000));
    let took = sigterm(&mut daemon);
    let outcomes = clients.join();
    assert_eq!(count(&outcomes, true), 0, "a client of an unfinished download reported done");
    took
}

fn main() {
    let n: usize = if std::env::args().any(|a| a == "--bench") { 10_000 } else { 200 };
    let nofile = raise_nofile();
    let dir = tempfile::tempdir().expect("tempdir");
    let (wall, health, failed) = waiters_finish(n, &dir.path().join("finish"));
    let mut answered: Vec<Duration> = health.iter().flatten().copied().collect();
    let unanswered = health.len() - answered.len();
    let (p50, p99) = (quantile(&mut answered, 0.5), quantile(&mut answered, 0.99));
    let max = answered.last().copied().unwrap_or_default();
    println!(
        "waiters: {n} clients on one 64 MiB task (8 conns x 1 MiB/s), all done in {:.1} s, {failed} failed; \
         /healthy: {} probes, {unanswered} unanswered, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (nofile {nofile})",
        wall.as_secs_f64(),
        health.len(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3,
        max.as_secs_f64() * 1e3,
    );
    let stop = sigterm_while_waiting(n, &dir.path().join("stop"));
    println!("waiters: SIGTERM with {n} clients waiting: daemon exited in {:.0} ms", stop.as_secs_f64() * 1e3);
    assert_eq!(failed, 0, "{failed} of {n} clients did not finish");
    assert_eq!(unanswered, 0, "{unanswered} /healthy probes got no answer");
}
