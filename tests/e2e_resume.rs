//! Resume keeps what was in flight (issue 10, finding 7): a 256 MiB download at ~4 MB/s per
//! connection is SIGKILLed three times; each restart resumes it, asking only for the bytes not yet
//! on disk (pieces a fraction fetched included), so the origin serves at most 1.15 × the file.
//!
//! The origin is the throttled in-process one (`tests/support_storage/origin.rs`): a per-connection
//! rate and a byte count per file, which nginx's burst-then-limit `limit_rate` cannot give exactly.

mod common;
#[allow(dead_code)]
mod support_storage;

use std::time::Duration;

use common::{assert_file_is, content, poll_until, MIB};
use support_storage::{task_id_of, StorageDaemon, ThrottledOrigin};

const RATE_BYTES_PER_SEC: u64 = 4_000_000;

#[test]
fn three_sigkills_during_256mib_download_cost_at_most_15_percent_extra_origin_bytes() {
    let origin = ThrottledOrigin::start();
    let mut daemon = StorageDaemon::start("storage:\n  multiplex: true\n");
    let len = 256 * MIB;
    let body = content(len, 1070);
    origin.add("/big", body.clone());
    origin.throttle("/big", 0, RATE_BYTES_PER_SEC);
    let url = origin.url("/big");
    let out = daemon.out("big");
    let meta = daemon.meta_path(&task_id_of(&url));
    for (run, fraction) in [0.25, 0.5, 0.75].into_iter().enumerate() {
        let client = daemon.spawn_download(&url, &out);
        let target = (len as f64 * fraction) as u64;
        let reached = poll_until(Duration::from_secs(120), || origin.served_bytes("/big") >= target);
        assert!(
            reached,
            "run {run}: origin served only {} bytes\n{}",
            origin.served_bytes("/big"),
            daemon.diagnostics()
        );
        daemon.kill9();
        let got = client.wait(Duration::from_secs(30));
        assert!(!got.status.success(), "run {run}: client of a killed daemon reported success");
        assert!(meta.exists(), "run {run}: no meta.json survived the kill");
        daemon.restart();
    }
    let last = daemon.spawn_download(&url, &out);
    let got = last.wait(Duration::from_secs(180));
    daemon.assert_ok(&got, "download after three kills");
    assert_file_is(&out, &body);
    // Bytes a dead daemon's sockets still accepted count too: they are what the origin paid.
    std::thread::sleep(Duration::from_millis(500));
    let served = origin.served_bytes("/big");
    let ratio = served as f64 / len as f64;
    eprintln!("three SIGKILLs: origin served {served} bytes for a {len}-byte file ({ratio:.3}×)");
    assert!(ratio <= 1.15, "origin served {ratio:.3}× the file ({served} bytes)\n{}", daemon.diagnostics());
}
