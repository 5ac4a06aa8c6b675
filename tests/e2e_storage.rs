//! End-to-end tests of storage that survives (issue 5): the GC's quota and expiry, crash and
//! clean-stop resume, re-verification of a cached file, a full disk, and the `dfget tasks` CLI —
//! each through the real `dfget` binary, a daemon in a temp dir and an in-process throttling
//! origin that counts what it serves.
//!
//! Invariant: each test proves the one property its name states with its own daemon and origin,
//! and asserts on what the origin served or the disk holds (not only on the client's exit code),
//! so a daemon that "succeeds" by refetching everything or leaving files behind fails the test.

mod common;
#[path = "support_storage/mod.rs"]
mod support_storage;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use common::{assert_file_is, content, poll_until, stderr_of, MIB, PIECE};
use support_storage::{
    meta_pieces_done, pieces_requested, task_files_on_disk, task_id_of, Setup, StorageDaemon, ThrottledOrigin,
};

/// `--cores 2` × `limits::PIECE_WORKERS_PER_CORE` (16): the most pieces a kill can catch in flight
/// (fewer when fewer are left: the bound below takes the smaller).
const MAX_PIECES_IN_FLIGHT: u64 = 2 * 16;

fn ids_of(tasks: &[serde_json::Value]) -> BTreeSet<String> {
    tasks.iter().map(|t| t["id"].as_str().unwrap_or_default().to_string()).collect()
}

fn n_done(pieces: &[bool]) -> usize {
    pieces.iter().filter(|d| **d).count()
}

#[test]
fn quota_keeps_task_bytes_under_disk_gc_threshold_evicting_least_recently_used() {
    let origin = ThrottledOrigin::start();
    // gcInterval 1h: the periodic loop never runs here, so the quota is kept by the GC pass that
    // admitting a task which would cross it must trigger.
    let daemon = StorageDaemon::start("gcInterval: 1h\nstorage:\n  multiplex: true\n  diskGCThreshold: 10Mi\n");
    let bodies: Vec<Vec<u8>> = (0..5).map(|i| content(PIECE, 500 + i)).collect();
    let urls: Vec<String> = (0..5).map(|i| origin.url(&format!("/q{i}"))).collect();
    for (i, body) in bodies.iter().enumerate() {
        origin.add(&format!("/q{i}"), body.clone());
    }
    let ids: Vec<String> = urls.iter().map(|u| task_id_of(u)).collect();
    let fetch = |i: usize, name: &str| {
        let out = daemon.out(name);
        daemon.assert_ok(&daemon.download(&urls[i], &out), &format!("download q{i}"));
        assert_file_is(&out, &bodies[i]);
    };
    let expect_cache = |kept: &[usize], step: &str| {
        let want: BTreeSet<String> = kept.iter().map(|&i| ids[i].clone()).collect();
        let listed = daemon.ls();
        assert_eq!(ids_of(&listed), want, "{step}: tasks ls --json lists {listed:#?}");
        let listed_bytes: u64 = listed.iter().map(|t| t["len_bytes"].as_u64().unwrap_or(0)).sum();
        assert!(listed_bytes <= 10 * MIB as u64, "{step}: listed tasks hold {listed_bytes} bytes > 10 MiB");
        let (disk_bytes, on_disk) = task_files_on_disk(&daemon.data_dir());
        assert_eq!(on_disk.into_iter().collect::<BTreeSet<_>>(), want, "{step}: task files on disk");
        assert!(disk_bytes <= 10 * MIB as u64, "{step}: task files hold {disk_bytes} bytes > 10 MiB");
    };

    fetch(0, "q0");
    expect_cache(&[0], "after q0");
    fetch(1, "q1");
    expect_cache(&[0, 1], "after q1");
    // A cache hit is an access: q0 becomes more recently used than q1.
    let n_before = origin.n_requests("/q0");
    fetch(0, "q0-hit");
    assert_eq!(origin.n_requests("/q0"), n_before, "the second q0 request must be a cache hit");
    fetch(2, "q2");
    expect_cache(&[0, 2], "after q2 (q1 least recently used)");
    fetch(3, "q3");
    expect_cache(&[2, 3], "after q3");
    fetch(4, "q4");
    expect_cache(&[3, 4], "after q4: the oldest three evicted");
    // Evicting a task removes the cache's name only: an OUT linked from it keeps its bytes.
    assert_file_is(&daemon.out("q0"), &bodies[0]);
    assert!(daemon.core_log().contains("gc evicted task"), "no eviction logged\n{}", daemon.diagnostics());
}

#[test]
fn task_larger_than_quota_is_refused_at_once() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start("storage:\n  multiplex: true\n  diskGCThreshold: 10Mi\n");
    let len = 12 * MIB;
    origin.add("/too-big", content(len, 7));
    let url = origin.url("/too-big");
    let out = daemon.out("too-big");
    let result = daemon.download(&url, &out);
    let stderr = stderr_of(&result);
    assert!(!result.status.success(), "a 12 MiB task under a 10 MiB quota succeeded");
    assert!(stderr.contains("larger than") && stderr.contains("quota"), "unclear refusal: {stderr}");
    assert!(!out.exists(), "a refused download left {}", out.display());
    // "At once": refused from the first response's length, before the pieces are fetched.
    let served = origin.served_bytes("/too-big");
    assert!(served <= PIECE as u64, "origin served {served} bytes of a refused task");
    assert!(poll_until(Duration::from_secs(5), || task_files_on_disk(&daemon.data_dir()).1.is_empty()));
    assert!(daemon.listed(&task_id_of(&url)).is_none(), "refused task still listed");
    assert!(daemon.is_healthy());
}

#[test]
fn finished_task_expires_after_task_expire_time_and_cache_hits_refresh_it() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start("gcInterval: 1s\nstorage:\n  multiplex: true\n  taskExpireTime: 2s\n");
    let body = content(MIB + 1, 21);
    origin.add("/expire", body.clone());
    let url = origin.url("/expire");
    let id = task_id_of(&url);
    let out = daemon.out("expire");
    daemon.assert_ok(&daemon.download(&url, &out), "first download");
    assert_file_is(&out, &body);
    let listed = daemon.listed(&id).unwrap_or_else(|| panic!("task {id} not listed after download"));
    assert_eq!(listed["state"], "done");
    let n_fetches = origin.n_requests("/expire");

    // Four cache hits one second apart: 4 s is twice the expiry, so only the hits (accesses)
    // keep the task; had it been evicted, the next hit would show as a new origin request.
    for hit in 0..4 {
        std::thread::sleep(Duration::from_secs(1));
        let out = daemon.out(&format!("expire-hit-{hit}"));
        daemon.assert_ok(&daemon.download(&url, &out), &format!("cache hit {hit}"));
        assert_file_is(&out, &body);
        assert_eq!(origin.n_requests("/expire"), n_fetches, "hit {hit}: task expired while being accessed");
    }
    let last_access = Instant::now();
    let gone = poll_until(Duration::from_secs(10), || daemon.listed(&id).is_none() && !daemon.task_dir(&id).exists());
    let idle = last_access.elapsed();
    assert!(gone, "idle task still there {idle:?} after its last access\n{}", daemon.diagnostics());
    assert!(idle >= Duration::from_millis(1500), "task evicted after only {idle:?} idle (taskExpireTime 2s)");
    assert!(daemon.core_log().contains("gc evicted task"), "no eviction logged\n{}", daemon.diagnostics());
}

#[test]
fn running_download_from_slow_origin_is_never_expired_and_completes_exactly() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start("gcInterval: 1s\nstorage:\n  multiplex: true\n  taskExpireTime: 2s\n");
    let len = 12 * MIB;
    let body = content(len, 33);
    origin.add("/slow", body.clone());
    // 700 KiB/s per connection: each of the three pieces takes ~6 s, three times the expiry.
    origin.throttle("/slow", 0, 700 * 1024);
    let url = origin.url("/slow");
    let id = task_id_of(&url);
    let out = daemon.out("slow");
    let started = Instant::now();
    let mut client = daemon.spawn_download(&url, &out);

    // Past taskExpireTime + gcInterval since the task's last access: an expiry that ignored
    // "running" would have removed it by now.
    std::thread::sleep(Duration::from_secs(4));
    assert!(client.is_running(), "the slow download ended early");
    let listed = daemon.listed(&id).unwrap_or_else(|| panic!("running task gone\n{}", daemon.diagnostics()));
    assert_eq!(listed["state"], "running", "{listed}");
    assert!(daemon.data_path(&id).exists(), "running task's file removed");

    let result = client.wait(Duration::from_secs(60));
    daemon.assert_ok(&result, "slow download");
    assert_file_is(&out, &body);
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(4), "download took only {took:?}: the throttle did not hold, nothing proven");
}

#[test]
fn sigkill_mid_download_resumes_after_restart_fetching_only_missing_pieces() {
    let origin = ThrottledOrigin::start();
    let mut daemon = StorageDaemon::start("storage:\n  multiplex: true\n");
    let len = 64 * MIB;
    let body = content(len, 64);
    origin.add("/big", body.clone());
    // The first half at full speed, the rest at 1 MiB/s per connection: the kill lands after
    // pieces 0..8 are recorded and while the next ones are a fraction fetched.
    origin.throttle("/big", 32 * MIB as u64, MIB as u64);
    let url = origin.url("/big");
    let id = task_id_of(&url);
    let out = daemon.out("big");
    let client = daemon.spawn_download(&url, &out);
    let meta = daemon.meta_path(&id);
    let recorded = poll_until(Duration::from_secs(30), || meta_pieces_done(&meta).is_some_and(|d| n_done(&d) >= 8));
    assert!(recorded, "meta.json never recorded the fast pieces\n{}", daemon.diagnostics());
    daemon.kill9();
    // What the dead run fetched: bytes the origin pushes afterwards into sockets the kernel has
    // not torn down yet (io_uring keeps them a while) never reach a daemon.
    let served_first = origin.served_bytes("/big");
    let n_requests_first = origin.n_requests("/big");

    let done_at_kill = meta_pieces_done(&meta).expect("meta.json survives SIGKILL");
    let n_pieces = len.div_ceil(PIECE);
    assert_eq!(done_at_kill.len(), n_pieces);
    assert!(n_done(&done_at_kill) < n_pieces, "the kill landed after the download finished: nothing to resume");
    let first = client.wait(Duration::from_secs(30));
    assert!(!first.status.success(), "client of a killed daemon reported success");
    assert!(!out.exists(), "client of a killed daemon left {}", out.display());

    origin.unthrottle_new_requests("/big");
    daemon.restart();
    daemon.assert_ok(&daemon.download(&url, &out), "download after restart");
    assert_file_is(&out, &body);

    let served_second = origin.served_bytes_since("/big", n_requests_first);
    let total = served_first + served_second;
    eprintln!(
        "sigkill: {} of {n_pieces} pieces recorded at the kill; origin served {served_first} bytes before, \
         {served_second} after",
        n_done(&done_at_kill)
    );
    assert!(served_second < len as u64, "second run fetched {served_second} bytes: the whole file, no resume");
    let missing_bytes = (n_pieces - n_done(&done_at_kill)) as u64 * PIECE as u64;
    assert!(served_second <= missing_bytes, "second run fetched {served_second} bytes, {missing_bytes} were missing");
    let in_flight = MAX_PIECES_IN_FLIGHT.min((n_pieces - n_done(&done_at_kill)) as u64);
    let bound = len as u64 + in_flight * PIECE as u64;
    assert!(total <= bound, "origin served {total} bytes in all (first {served_first}), bound {bound}");
    let refetched = pieces_requested(&origin.ranges("/big")[n_requests_first..], PIECE as u64, len as u64);
    for piece in &refetched {
        assert!(!done_at_kill[*piece as usize], "piece {piece} was recorded done before the kill yet fetched again");
    }
    assert!(daemon.core_log().contains("resuming unfinished task"), "no resume logged\n{}", daemon.diagnostics());
}

#[test]
fn corrupt_cached_task_file_is_downloaded_again() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start("storage:\n  multiplex: true\n");
    let len = 2 * PIECE + 3;
    let body = content(len, 99);
    origin.add("/c", body.clone());
    let url = origin.url("/c");
    let id = task_id_of(&url);
    daemon.assert_ok(&daemon.download(&url, &daemon.out("c1")), "first download");
    let n_first = origin.n_requests("/c");
    // Control: untouched, the next request is a cache hit (no origin request).
    daemon.assert_ok(&daemon.download(&url, &daemon.out("c2")), "cache hit");
    assert_eq!(origin.n_requests("/c"), n_first, "an intact cached task was fetched again");

    // Flip bytes inside piece 1, length unchanged (in place: the file's inode stays the same).
    let data = daemon.data_path(&id);
    let file = fs::OpenOptions::new().read(true).write(true).open(&data).expect("open task file");
    let mut bytes = [0u8; 16];
    let at = PIECE as u64 + 100;
    file.read_exact_at(&mut bytes, at).expect("read task file");
    bytes.iter_mut().for_each(|b| *b ^= 0xff);
    file.write_all_at(&bytes, at).expect("corrupt task file");
    drop(file);
    assert_eq!(fs::metadata(&data).expect("stat").len(), len as u64);

    let out = daemon.out("c3");
    daemon.assert_ok(&daemon.download(&url, &out), "download after corruption");
    assert_file_is(&out, &body);
    assert!(origin.n_requests("/c") > n_first, "corrupt cache was served without going to the origin");
    assert_file_is(&daemon.data_path(&id), &body);
    assert!(
        daemon.core_log().contains("failed verification"),
        "no verification failure logged\n{}",
        daemon.diagnostics()
    );
}

/// A daemon whose data dir is on a tmpfs of `size_mib`, or None (after printing why the test is
/// skipped) where tmpfs cannot be mounted (not root, no CAP_SYS_ADMIN).
fn daemon_on_tmpfs(test: &str, size_mib: u64) -> Option<StorageDaemon> {
    let setup = Setup { extra_yaml: "storage:\n  multiplex: true\n".into(), tmpfs_data_mib: Some(size_mib) };
    match StorageDaemon::start_with(setup) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("SKIP {test}: needs a {size_mib} MiB tmpfs for the data dir: {e}");
            None
        }
    }
}

#[test]
fn disk_full_fails_download_with_clear_error_and_daemon_keeps_serving() {
    let Some(daemon) = daemon_on_tmpfs("disk_full_fails_download_with_clear_error_and_daemon_keeps_serving", 8) else {
        return;
    };
    let origin = ThrottledOrigin::start();
    origin.add("/huge", content(20 * MIB, 5));
    let small = content(MIB, 6);
    origin.add("/small", small.clone());

    // OUT on the data dir's filesystem: this test is about the full disk, not about exporting
    // across filesystems (export_to_another_filesystem_falls_back_to_copy covers that).
    let out = daemon.out_on_data_fs("huge");
    let result = daemon.download(&origin.url("/huge"), &out);
    let stderr = stderr_of(&result);
    assert!(!result.status.success(), "20 MiB fit on an 8 MiB filesystem?");
    let lower = stderr.to_lowercase();
    assert!(
        lower.contains("space") || lower.contains("enospc") || lower.contains("quota"),
        "error does not say the disk is full: {stderr}"
    );
    assert!(!out.exists(), "failed download left {}", out.display());
    assert!(daemon.is_healthy(), "daemon unhealthy after ENOSPC\n{}", daemon.diagnostics());
    let cleaned = poll_until(Duration::from_secs(5), || task_files_on_disk(&daemon.data_dir()).1.is_empty());
    assert!(cleaned, "failed task left files: {:?}", task_files_on_disk(&daemon.data_dir()));

    let out = daemon.out_on_data_fs("small");
    daemon.assert_ok(&daemon.download(&origin.url("/small"), &out), "small download after ENOSPC");
    assert_file_is(&out, &small);
}

/// Found by the disk-full test: with the data dir on tmpfs and OUT on another filesystem, the
/// hard link fails (EXDEV), FICLONE fails, and `copy_file_range` between filesystems of different
/// types fails with EXDEV too (Linux >= 5.19): the export must still copy the bytes.
#[test]
fn export_to_another_filesystem_falls_back_to_copy() {
    let Some(daemon) = daemon_on_tmpfs("export_to_another_filesystem_falls_back_to_copy", 16) else {
        return;
    };
    let origin = ThrottledOrigin::start();
    let body = content(PIECE + 5, 8);
    origin.add("/x", body.clone());
    let out = daemon.out("x");
    daemon.assert_ok(&daemon.download(&origin.url("/x"), &out), "download to another filesystem");
    assert_file_is(&out, &body);
}

#[test]
fn tasks_cli_lists_stats_removes_and_collects_and_refuses_rm_of_running_without_force() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start("storage:\n  multiplex: true\n");
    assert!(daemon.ls().is_empty(), "fresh daemon lists tasks");
    let body = content(MIB, 1);
    origin.add("/a", body.clone());
    let url = origin.url("/a");
    let id = task_id_of(&url);
    daemon.assert_ok(&daemon.download(&url, &daemon.out("a")), "download a");

    let listed = daemon.ls();
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let task = &listed[0];
    assert_eq!(task["id"], id.as_str());
    assert_eq!(task["url"], url.as_str());
    assert_eq!(task["len_bytes"], MIB as u64);
    assert_eq!(task["completed_bytes"], MIB as u64);
    assert_eq!(task["state"], "done");
    assert_eq!(task["readers"], 0);
    assert!(task["last_access_unix_ms"].as_u64().is_some_and(|ms| ms > 1_600_000_000_000), "{task}");
    let table = daemon.tasks(&["ls"]);
    daemon.assert_ok(&table, "tasks ls");
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("TASK") && table.contains(&id[..16]) && table.contains(&url), "table: {table}");

    let stat = daemon.tasks(&["stat", &id]);
    daemon.assert_ok(&stat, "tasks stat");
    let stat: serde_json::Value = serde_json::from_slice(&stat.stdout).expect("stat prints JSON");
    assert_eq!(stat["id"], id.as_str());
    let missing = "0".repeat(64);
    assert_eq!(daemon.tasks(&["stat", &missing]).status.code(), Some(2), "stat of an unknown id");

    let gc = daemon.tasks(&["gc"]);
    daemon.assert_ok(&gc, "tasks gc");
    let gc: serde_json::Value = serde_json::from_slice(&gc.stdout).expect("gc prints JSON");
    assert_eq!(gc["evicted"], 0, "gc evicted a fresh task under a 6h expiry");
    assert!(daemon.listed(&id).is_some());

    daemon.assert_ok(&daemon.tasks(&["rm", &id]), "tasks rm");
    assert!(daemon.listed(&id).is_none(), "removed task still listed");
    assert!(!daemon.task_dir(&id).exists(), "removed task's files still on disk");
    assert_eq!(daemon.tasks(&["rm", &id]).status.code(), Some(2), "rm of a removed task");
    assert_file_is(&daemon.out("a"), &body);

    rm_of_running_task_needs_force(&daemon, &origin);
}

/// Second half of the CLI test: a slow download is refused removal, then force-removed (its
/// client fails cleanly), and the URL downloads fine afterwards.
fn rm_of_running_task_needs_force(daemon: &StorageDaemon, origin: &ThrottledOrigin) {
    let body = content(8 * MIB, 2);
    origin.add("/running", body.clone());
    origin.throttle("/running", 0, 256 * 1024);
    let url = origin.url("/running");
    let id = task_id_of(&url);
    let out = daemon.out("running");
    let client = daemon.spawn_download(&url, &out);
    let running = poll_until(Duration::from_secs(10), || daemon.listed(&id).is_some_and(|t| t["state"] == "running"));
    assert!(running, "slow task never listed as running\n{}", daemon.diagnostics());

    let refused = daemon.tasks(&["rm", &id]);
    assert_eq!(refused.status.code(), Some(2), "rm of a running task without --force: {}", stderr_of(&refused));
    assert!(stderr_of(&refused).contains("--force"), "refusal does not say how: {}", stderr_of(&refused));
    assert_eq!(daemon.listed(&id).map(|t| t["state"].clone()), Some("running".into()), "refused rm changed the task");

    daemon.assert_ok(&daemon.tasks(&["rm", &id, "--force"]), "tasks rm --force");
    let aborted = client.wait(Duration::from_secs(20));
    assert!(!aborted.status.success(), "download of a force-removed task succeeded");
    assert!(!out.exists(), "force-removed download left {}", out.display());
    // The client hears the failure as soon as the task fails; the task's own `drive` removes its
    // files and then its entry a moment later, so both are waited for, not asserted at once.
    assert!(poll_until(Duration::from_secs(5), || daemon.listed(&id).is_none()), "force-removed task still listed");
    assert!(poll_until(Duration::from_secs(5), || !daemon.task_dir(&id).exists()), "force-removed files remain");

    // Let the removed task's in-flight pieces drain first: a new task racing the old one's
    // cleanup is rm_force_of_running_task_leaves_next_download_of_same_url_intact's subject.
    origin.unthrottle("/running");
    assert!(poll_until(Duration::from_secs(10), || origin.active_responses("/running") == 0));
    std::thread::sleep(Duration::from_millis(500));
    daemon.assert_ok(&daemon.download(&url, &out), "download after rm --force");
    assert_file_is(&out, &body);
}

/// Found by the CLI test under load: `rm --force` fails a running task and drops it from the
/// index at once, but its home core keeps writing piece 0 from the first response until that body
/// ends, and only then runs the failed task's cleanup, which removes `<dataDir>/tasks/<id>` — by
/// then the directory of the *new* task for the same URL. The new task must keep its files.
#[test]
fn rm_force_of_running_task_leaves_next_download_of_same_url_intact() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start("storage:\n  multiplex: true\n");
    let body = content(2 * PIECE, 3);
    origin.add("/again", body.clone());
    origin.throttle("/again", 0, 256 * 1024);
    let url = origin.url("/again");
    let id = task_id_of(&url);
    let old_client = daemon.spawn_download(&url, &daemon.out("old"));
    let running = poll_until(Duration::from_secs(10), || daemon.listed(&id).is_some_and(|t| t["state"] == "running"));
    assert!(running, "slow task never listed as running\n{}", daemon.diagnostics());
    daemon.assert_ok(&daemon.tasks(&["rm", &id, "--force"]), "tasks rm --force");
    assert!(!old_client.wait(Duration::from_secs(20)).status.success(), "force-removed download succeeded");

    // The old task's pieces stay throttled (still in flight); the new task is served fast.
    origin.unthrottle_new_requests("/again");
    let out = daemon.out("new");
    daemon.assert_ok(&daemon.download(&url, &out), "download of the same URL after rm --force");
    assert_file_is(&out, &body);
    assert_eq!(daemon.listed(&id).map(|t| t["state"].clone()), Some("done".into()));

    // Now the old task's responses end, and with them its home core's wait.
    origin.unthrottle("/again");
    assert!(poll_until(Duration::from_secs(10), || origin.active_responses("/again") == 0));
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        daemon.data_path(&id).exists() && daemon.meta_path(&id).exists(),
        "the finished new task's files were removed by the old task's cleanup\n{}",
        daemon.diagnostics()
    );
    let n_before = origin.n_requests("/again");
    let out = daemon.out("hit");
    daemon.assert_ok(&daemon.download(&url, &out), "cache hit of the new task");
    assert_file_is(&out, &body);
    assert_eq!(origin.n_requests("/again"), n_before, "the new task was not a cache hit any more");
}

#[test]
fn sigterm_mid_download_removes_socket_parks_task_and_next_request_resumes() {
    let origin = ThrottledOrigin::start();
    let mut daemon = StorageDaemon::start("storage:\n  multiplex: true\n");
    let len = 4 * PIECE;
    let body = content(len, 77);
    origin.add("/parked", body.clone());
    // Pieces 0 and 1 fast, 2 and 3 at 256 KiB/s (16 s each): the stop lands between them.
    origin.throttle("/parked", 2 * PIECE as u64, 256 * 1024);
    let url = origin.url("/parked");
    let id = task_id_of(&url);
    let out = daemon.out("parked");
    let client = daemon.spawn_download(&url, &out);
    let half = poll_until(Duration::from_secs(20), || {
        daemon.listed(&id).is_some_and(|t| t["completed_bytes"].as_u64().unwrap_or(0) >= 2 * PIECE as u64)
    });
    assert!(half, "the fast half never completed\n{}", daemon.diagnostics());

    let status = daemon.sigterm(Duration::from_secs(10));
    assert!(status.success(), "daemon exit after SIGTERM: {status}\n{}", daemon.diagnostics());
    assert!(!daemon.socket().exists(), "socket file left after a clean stop");
    let parked = meta_pieces_done(&daemon.meta_path(&id)).expect("running task's meta.json written at stop");
    assert_eq!(parked, vec![true, true, false, false], "parked pieces");
    let first = client.wait(Duration::from_secs(20));
    assert!(!first.status.success(), "client of a stopped daemon reported success");
    assert!(!out.exists(), "client of a stopped daemon left {}", out.display());
    let n_requests_first = origin.n_requests("/parked");

    origin.unthrottle_new_requests("/parked");
    daemon.restart();
    let listed = daemon.listed(&id).unwrap_or_else(|| panic!("parked task not listed after restart"));
    assert_eq!(listed["state"], "parked", "{listed}");
    assert_eq!(listed["url"], url.as_str());
    daemon.assert_ok(&daemon.download(&url, &out), "download after restart");
    assert_file_is(&out, &body);
    let served_second = origin.served_bytes_since("/parked", n_requests_first);
    assert!(served_second <= 2 * PIECE as u64, "second run fetched {served_second} bytes, two pieces were missing");
    let refetched = pieces_requested(&origin.ranges("/parked")[n_requests_first..], PIECE as u64, len as u64);
    assert!(refetched.iter().all(|p| *p >= 2), "parked pieces fetched again: {refetched:?}");
}

/// `dfget_cache_bytes` from the metrics endpoint: the cache's running total (issue 11).
fn cache_bytes_gauge(port: u16) -> Option<u64> {
    gauge(port, "dfget_cache_bytes")
}

/// One gauge's value from the daemon's metrics endpoint on 127.0.0.1:`port`.
fn gauge(port: u16, name: &str) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let prefix = format!("{name} ");
    text.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.trim().parse().ok())
}

#[test]
fn cache_bytes_total_stays_right_across_finish_failure_evict_rm_park_and_restart() {
    // The admission check reads a running total instead of summing the index per entry; this
    // proves the total equals what the cache holds (every listed task's length) after each way a
    // task enters or leaves it.
    let origin = ThrottledOrigin::start();
    let port = common::free_port();
    let mut daemon = StorageDaemon::start(&format!(
        "metrics: 127.0.0.1:{port}\ngcInterval: 1h\nstorage:\n  multiplex: true\n  diskGCThreshold: 10Mi\n"
    ));
    let bodies: Vec<Vec<u8>> = (0..4).map(|i| content(PIECE, 900 + i)).collect();
    for (i, body) in bodies.iter().enumerate() {
        origin.add(&format!("/c{i}"), body.clone());
    }
    let urls: Vec<String> = (0..4).map(|i| origin.url(&format!("/c{i}"))).collect();
    let ids: Vec<String> = urls.iter().map(|u| task_id_of(u)).collect();
    let parked_body = content(2 * PIECE, 990);
    origin.add("/p", parked_body.clone());
    origin.throttle("/p", PIECE as u64, 256 * 1024);
    let (p_url, p_id) = (origin.url("/p"), task_id_of(&origin.url("/p")));
    let piece = PIECE as u64;
    let settles = |daemon: &StorageDaemon, bytes: u64, kept: &[&str], step: &str| {
        let want: BTreeSet<String> = kept.iter().map(|s| s.to_string()).collect();
        let settled = poll_until(Duration::from_secs(10), || {
            let listed = daemon.ls();
            let listed_bytes: u64 = listed.iter().map(|t| t["len_bytes"].as_u64().unwrap_or(0)).sum();
            cache_bytes_gauge(port) == Some(bytes) && listed_bytes == bytes && ids_of(&listed) == want
        });
        assert!(
            settled,
            "{step}: dfget_cache_bytes {:?}, want {bytes}; listed {:#?}\n{}",
            cache_bytes_gauge(port),
            daemon.ls(),
            daemon.diagnostics()
        );
    };
    let fetch = |daemon: &StorageDaemon, i: usize, name: &str| {
        daemon.assert_ok(&daemon.download(&urls[i], &daemon.out(name)), name);
    };

    settles(&daemon, 0, &[], "empty cache");
    fetch(&daemon, 0, "c0");
    settles(&daemon, piece, &[&ids[0]], "after c0 finished");
    fetch(&daemon, 1, "c1");
    fetch(&daemon, 0, "c0-hit");
    settles(&daemon, 2 * piece, &[&ids[0], &ids[1]], "after c1 and a cache hit of c0");
    // A digest mismatch: laid out and admitted (12 MiB > 10 MiB evicts c1, the least recently
    // used), then failed and removed: it leaves the total too.
    let bad = daemon
        .download_command(&urls[2], &daemon.out("c2-bad"))
        .args(["--digest", &format!("sha256:{}", "0".repeat(64))])
        .output()
        .expect("run dfget");
    assert!(!bad.status.success(), "a wrong digest succeeded");
    settles(&daemon, piece, &[&ids[0]], "after the failed c2 (c1 evicted to admit it)");
    fetch(&daemon, 2, "c2");
    fetch(&daemon, 3, "c3");
    settles(&daemon, 2 * piece, &[&ids[2], &ids[3]], "after c2, c3 (c0 evicted)");
    daemon.assert_ok(&daemon.tasks(&["rm", &ids[2]]), "tasks rm c2");
    settles(&daemon, piece, &[&ids[3]], "after rm c2");

    // Parked at a clean stop, counted once after the restart, and still once when resumed.
    let client = daemon.spawn_download(&p_url, &daemon.out("p"));
    let half = poll_until(Duration::from_secs(20), || {
        daemon.listed(&p_id).is_some_and(|t| t["completed_bytes"].as_u64().unwrap_or(0) >= piece)
    });
    assert!(half, "the fast half of /p never completed\n{}", daemon.diagnostics());
    settles(&daemon, 2 * piece, &[&p_id], "while /p runs (c3 evicted to admit it)");
    assert!(daemon.sigterm(Duration::from_secs(10)).success(), "clean stop");
    let _ = client.wait(Duration::from_secs(20));
    origin.unthrottle_new_requests("/p");
    daemon.restart();
    settles(&daemon, 2 * piece, &[&p_id], "after restart with /p parked");
    daemon.assert_ok(&daemon.download(&p_url, &daemon.out("p")), "resume /p");
    assert_file_is(&daemon.out("p"), &parked_body);
    settles(&daemon, 2 * piece, &[&p_id], "after /p resumed and finished");
    assert!(daemon.sigterm(Duration::from_secs(10)).success(), "clean stop");
    daemon.restart();
    settles(&daemon, 2 * piece, &[&p_id], "after restart with /p restored finished");
    daemon.assert_ok(&daemon.tasks(&["rm", &p_id]), "tasks rm /p");
    settles(&daemon, 0, &[], "after rm /p");
}

#[test]
fn finished_task_rests_compactly_and_stays_a_cache_hit_listed_removable_and_restored() {
    // A finished task nobody reads leaves the live index for its compact resting state (issue 11:
    // a 100,000-file cache in bounded memory); everything a cached task does must still work.
    let origin = ThrottledOrigin::start();
    let port = common::free_port();
    let mut daemon =
        StorageDaemon::start(&format!("metrics: 127.0.0.1:{port}\ngcInterval: 1h\nstorage:\n  multiplex: true\n"));
    let (a, b) = (content(PIECE + 17, 801), content(3 * MIB, 802));
    origin.add("/a", a.clone());
    origin.add("/b", b.clone());
    let (url_a, url_b) = (origin.url("/a"), origin.url("/b"));
    let (id_a, id_b) = (task_id_of(&url_a), task_id_of(&url_b));
    let resting = |n: u64| poll_until(Duration::from_secs(10), || gauge(port, "dfget_tasks_resting") == Some(n));

    daemon.assert_ok(&daemon.download(&url_a, &daemon.out("a1")), "download a");
    assert!(
        resting(1),
        "finished task not at rest: {:?}\n{}",
        gauge(port, "dfget_tasks_resting"),
        daemon.diagnostics()
    );
    let listed = daemon.listed(&id_a).expect("resting task listed");
    assert_eq!(listed["state"], "done", "{listed}");
    assert_eq!(listed["len_bytes"], (PIECE + 17) as u64, "{listed}");
    assert_eq!(listed["url"], url_a.as_str(), "{listed}");
    let n_before = origin.n_requests("/a");
    daemon.assert_ok(&daemon.download(&url_a, &daemon.out("a2")), "cache hit of a resting task");
    assert_file_is(&daemon.out("a2"), &a);
    assert_eq!(origin.n_requests("/a"), n_before, "a resting task's hit asked the origin");
    assert!(resting(1), "task not back at rest after its hit\n{}", daemon.diagnostics());
    assert_eq!(gauge(port, "dfget_tasks"), Some(1), "one task, live or resting");

    daemon.assert_ok(&daemon.tasks(&["rm", &id_a]), "tasks rm of a resting task");
    assert!(daemon.listed(&id_a).is_none(), "removed resting task still listed");
    assert!(!daemon.task_dir(&id_a).exists(), "removed resting task's files still on disk");
    assert!(resting(0), "removed task still at rest");
    assert_file_is(&daemon.out("a1"), &a);

    daemon.assert_ok(&daemon.download(&url_b, &daemon.out("b1")), "download b");
    assert!(resting(1), "b not at rest\n{}", daemon.diagnostics());
    assert!(daemon.sigterm(Duration::from_secs(10)).success(), "clean stop");
    daemon.restart();
    assert!(resting(1), "restored task not at rest\n{}", daemon.diagnostics());
    assert_eq!(daemon.listed(&id_b).expect("restored task listed")["state"], "done");
    let n_before = origin.n_requests("/b");
    daemon.assert_ok(&daemon.download(&url_b, &daemon.out("b2")), "hit after restart");
    assert_file_is(&daemon.out("b2"), &b);
    assert_eq!(origin.n_requests("/b"), n_before, "a restored resting task's hit asked the origin");
    let gc = daemon.tasks(&["gc"]);
    daemon.assert_ok(&gc, "tasks gc");
    assert!(daemon.listed(&id_b).is_some(), "gc under a 6h expiry evicted a fresh resting task");
}
