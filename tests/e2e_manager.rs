//! Joining a Dragonfly cluster through its manager, end to end: Dragonfly's real manager (Go,
//! with PostgreSQL and Redis), Dragonfly's real scheduler registered with it, and our daemons told
//! only `scheduler.manager.netAddrs`; nginx as the origin, whose access log counts the bytes it
//! served. And the manager's failures: down, with and without a static scheduler list.
//!
//! Each test names what it proves; the origin byte count is what shows pieces travelled between
//! peers rather than from the origin.

mod common;

use std::time::Duration;

use common::cluster::{manager_only, manager_peer, serve, settled_origin_bytes, start_peer, static_scheduler};
use common::manager::Manager;
use common::scheduler::Scheduler;
use common::{assert_file_is, assert_success, free_port, out_dir, poll_until, Nginx, MIB};

fn warned(log: &str, fragment: &str) -> bool {
    log.lines().any(|l| l.contains("\"level\":\"warn\"") && l.contains(fragment))
}

#[test]
fn peers_told_only_the_manager_find_the_scheduler_and_the_second_gets_pieces_from_the_first() {
    let root = common::temp_dir("dfget-manager-origin-");
    let nginx = Nginx::start(root.path());
    let manager = Manager::start();
    // Started before any scheduler registered: the manager lists none, and the daemon says so
    // and asks again (every few seconds) instead of waiting the whole refreshInterval.
    let early = start_peer(&manager_only(&manager.addr(), "10m"), 1, "", Vec::new());
    let log = || early.daemon.core_log();
    assert!(
        poll_until(Duration::from_secs(15), || warned(&log(), "lists no active scheduler")),
        "no warning about a manager without schedulers:\n{}",
        log()
    );
    let sched = Scheduler::start_with_manager(&manager.addr());
    assert!(manager.wait_scheduler_registered(), "the scheduler never registered:\n{}", manager.log());
    // The manager's ListSchedulers answer now names the scheduler, and the daemon announces to it.
    let from_manager = format!("schedulers from the manager: {}", sched.addr());
    assert!(poll_until(Duration::from_secs(20), || log().contains(&from_manager)), "{}", log());
    assert!(poll_until(Duration::from_secs(15), || log().contains("announced to the scheduler")), "{}", log());
    let second = manager_peer(&manager.addr(), 2, "");
    assert!(second.daemon.core_log().contains(&from_manager), "{}", second.daemon.core_log());

    let len = 64 * MIB;
    let bytes = serve(root.path(), "f.bin", len, 21);
    let out = out_dir();
    assert_success(&early.daemon.download(&nginx.url("/f.bin"), &out.path().join("first")), "first download");
    let dest = out.path().join("second");
    assert_success(&second.daemon.download(&nginx.url("/f.bin"), &dest), "second download");
    assert_file_is(&dest, &bytes);
    let log2 = second.daemon.core_log();
    assert!(log2.contains("scheduler gave parents"), "the second peer was given no parent:\n{log2}");
    assert!(log2.contains("first piece from a parent"), "no piece came from the first peer:\n{log2}");
    let served = settled_origin_bytes(&nginx, "/f.bin");
    eprintln!("through the manager: origin served {served} bytes for 2 x {len}");
    assert!(served as f64 <= 1.2 * len as f64, "origin served {served} bytes for two peers of a {len}-byte file");
    assert!(sched.log().contains("peer1") || sched.log().contains("127.0.0.2"), "the scheduler never saw peer1");

    // The manager goes away: at its next refresh (10 s) the second peer keeps the scheduler the
    // manager gave, and a new download is still registered with that scheduler.
    drop(manager);
    let kept = format!("keeping the schedulers it gave before: {}", sched.addr());
    assert!(
        poll_until(Duration::from_secs(30), || warned(&second.daemon.core_log(), &kept)),
        "no warning that the manager is gone:\n{}",
        second.daemon.core_log()
    );
    let told = |log: &str| log.matches("scheduler says back-to-source").count();
    let before = told(&second.daemon.core_log());
    serve(root.path(), "g.bin", 8 * MIB, 23);
    assert_success(
        &second.daemon.download(&nginx.url("/g.bin"), &out.path().join("g")),
        "download after the manager left",
    );
    let log2 = second.daemon.core_log();
    assert!(told(&log2) > before, "the download was not registered with the scheduler:\n{log2}");
}

#[test]
fn a_manager_that_is_down_gives_a_warning_and_downloads_come_from_the_origin() {
    let root = common::temp_dir("dfget-manager-origin-");
    let nginx = Nginx::start(root.path());
    // Nothing listens there: the manager is down.
    let down = format!("127.0.0.1:{}", free_port());
    let p = start_peer(&manager_only(&down, "10m"), 1, "", Vec::new());
    let log = || p.daemon.core_log();
    let unreachable = |l: &str| warned(l, "the manager is unreachable") && warned(l, "downloads go to the origin");
    assert!(poll_until(Duration::from_secs(15), || unreachable(&log())), "no warning about the manager:\n{}", log());
    let bytes = serve(root.path(), "f.bin", 12 * MIB, 22);
    let dest = out_dir();
    let dest = dest.path().join("f");
    assert_success(&p.daemon.download(&nginx.url("/f.bin"), &dest), "download with the manager down");
    assert_file_is(&dest, &bytes);
    assert!(warned(&log(), "scheduler unreachable, downloading from the origin"), "{}", log());
    assert_eq!(settled_origin_bytes(&nginx, "/f.bin"), 12 * MIB as u64, "the origin served the file once");
}

#[test]
fn a_manager_that_is_down_falls_back_to_the_static_scheduler_list() {
    let sched = Scheduler::start();
    let down = format!("127.0.0.1:{}", free_port());
    let both = format!("{}{}", static_scheduler(&sched.addr()), &manager_only(&down, "10m")["scheduler:\n".len()..]);
    let p = start_peer(&both, 1, "", Vec::new());
    let log = || p.daemon.core_log();
    let fallback = format!("using scheduler.netAddrs: {}", sched.addr());
    assert!(poll_until(Duration::from_secs(15), || warned(&log(), &fallback)), "no fallback warning:\n{}", log());
    assert!(poll_until(Duration::from_secs(10), || log().contains("announced to the scheduler")), "{}", log());
}
