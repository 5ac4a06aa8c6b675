//! End-to-end tests of what the fast paths (issue 9) must still catch: an OUT edited in place
//! behind an O(1) cache hit, recorded pieces that never reached the disk (zeroed or cut off after
//! a SIGKILL or a stop, as a power loss leaves them), a digest mismatch found by hashing during
//! the download, and exact bytes when one stream is read (an origin ignoring Range, a real
//! docker-registry with one connection allowed) — through the real `dfget` binary, a daemon in a
//! temp dir, in-process origins that count what they serve, and docker-registry with oras-py.
//!
//! Invariant: every test asserts on the bytes on disk and on what the origin served, never on
//! timing: speed lives in `benches/` and PERF.md.

mod common;
#[path = "support_registry/mod.rs"]
mod support_registry;
#[path = "support_storage/mod.rs"]
mod support_storage;

use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::time::Duration;

use common::{assert_file_is, content, dir_entries, poll_until, sha256_hex, stderr_of, Serve, TestOrigin, PIECE};
use support_storage::{meta_pieces_done, pieces_requested, task_id_of, StorageDaemon, ThrottledOrigin};

const MULTIPLEX: &str = "storage:\n  multiplex: true\n";

fn n_done(pieces: &[bool]) -> usize {
    pieces.iter().filter(|d| **d).count()
}

/// XORs `mask` into `len` bytes of `path` at `at`, in place (same inode, same length).
fn flip_in_place(path: &Path, at: u64, len: usize, mask: u8) {
    let file = fs::OpenOptions::new().read(true).write(true).open(path).expect("open for an in-place edit");
    let mut bytes = vec![0u8; len];
    file.read_exact_at(&mut bytes, at).expect("read before the edit");
    bytes.iter_mut().for_each(|b| *b ^= mask);
    file.write_all_at(&bytes, at).expect("edit in place");
}

/// Overwrites `[at, at + len)` of `path` with zeros, in place: what a preallocated file shows
/// where a power loss dropped pieces that were recorded but never written back.
fn zero_in_place(path: &Path, at: u64, len: usize) {
    let file = fs::OpenOptions::new().write(true).open(path).expect("open task file");
    file.write_all_at(&vec![0u8; len], at).expect("zero recorded piece");
}

#[test]
fn out_edited_in_place_through_its_hard_link_is_detected_and_downloaded_again() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start(MULTIPLEX);
    let len = 3 * PIECE + 5;
    let body = content(len, 901);
    origin.add("/edit", body.clone());
    let url = origin.url("/edit");
    let id = task_id_of(&url);
    let first = daemon.out("first");
    daemon.assert_ok(&daemon.download(&url, &first), "first download");
    assert_file_is(&first, &body);
    let ino = |p: &Path| fs::metadata(p).expect("stat").ino();
    assert_eq!(ino(&first), ino(&daemon.data_path(&id)), "precondition: OUT is a hard link of the task file");
    let n_first = origin.n_requests("/edit");
    // Control: untouched, the next request is a cache hit (no origin request).
    daemon.assert_ok(&daemon.download(&url, &daemon.out("hit")), "cache hit");
    assert_eq!(origin.n_requests("/edit"), n_first, "an intact cached task was fetched again");

    // One byte, in place, through the user's OUT: same inode, same length, so only the
    // file's timestamps tell that the cache changed.
    let at = (PIECE + 17) as u64;
    flip_in_place(&first, at, 1, 0x5a);
    assert_eq!(fs::metadata(&first).expect("stat").len(), len as u64);

    let second = daemon.out("second");
    daemon.assert_ok(&daemon.download(&url, &second), "download after the edit");
    assert_file_is(&second, &body);
    assert!(origin.n_requests("/edit") > n_first, "the edited cache was served without going to the origin");
    // The new task file is a new inode: the user's edited OUT keeps the user's edit.
    assert_ne!(ino(&second), ino(&first), "the new download reused the edited inode");
    let edited = fs::read(&first).expect("read edited OUT");
    assert_eq!(edited[at as usize], body[at as usize] ^ 0x5a, "the user's own edit was undone");
    // And the re-downloaded task is a cache hit again.
    let n_second = origin.n_requests("/edit");
    let third = daemon.out("third");
    daemon.assert_ok(&daemon.download(&url, &third), "hit after the re-download");
    assert_file_is(&third, &body);
    assert_eq!(origin.n_requests("/edit"), n_second, "the re-downloaded task was not reused");
}

/// The warm repeat of one command (`dfget -u URL -O OUT` again, OUT already the cache's hard
/// link): a cache hit that leaves OUT the same file and nothing else in its directory (renaming a
/// temp link over a link of the same inode would be a no-op that leaves the temp name behind).
#[test]
fn repeating_a_download_onto_its_own_out_is_a_hit_that_leaves_no_temp_file() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start(MULTIPLEX);
    let body = content(2 * PIECE + 11, 905);
    origin.add("/again", body.clone());
    let url = origin.url("/again");
    let out = daemon.out("again");
    let out_dir = out.parent().expect("out dir").to_path_buf();
    daemon.assert_ok(&daemon.download(&url, &out), "first download");
    let n_first = origin.n_requests("/again");
    let ino = fs::metadata(&out).expect("stat OUT").ino();
    for round in 0..3 {
        daemon.assert_ok(&daemon.download(&url, &out), &format!("repeat {round}"));
        assert_file_is(&out, &body);
        assert_eq!(fs::metadata(&out).expect("stat OUT").ino(), ino, "repeat {round}: OUT is another file");
        assert_eq!(dir_entries(&out_dir), vec!["again".to_string()], "repeat {round}: OUT's directory");
    }
    assert_eq!(origin.n_requests("/again"), n_first, "a repeat went to the origin");
    assert_eq!(daemon.core_log().matches("reuse file peer task done").count(), 3, "{}", daemon.diagnostics());
}

/// Many hits of one finished task at once: each export links the task file to a temp name and then
/// renames it, and between the two the file's ctime has moved with its link count unchanged, which
/// is what an edit in place looks like. A hit checked in that gap used to take it for an edit and
/// forget the file's state, and every hit after it read the whole file again. Every one of these
/// hits must stay O(1): no full read in the log, no request to the origin, every OUT exact.
#[test]
fn concurrent_hits_of_one_task_never_mistake_each_others_links_for_an_edit() {
    const ROUNDS: usize = 8;
    const HITS: usize = 60;
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start(MULTIPLEX);
    let body = content(2 * PIECE + 3, 907);
    origin.add("/many", body.clone());
    let url = origin.url("/many");
    daemon.assert_ok(&daemon.download(&url, &daemon.out("first")), "first download");
    let n_first = origin.n_requests("/many");
    for round in 0..ROUNDS {
        let outs: Vec<_> = (0..HITS).map(|k| daemon.out(&format!("hit-{round}-{k}"))).collect();
        let clients: Vec<_> = outs.iter().map(|out| daemon.spawn_download(&url, out)).collect();
        for (k, client) in clients.into_iter().enumerate() {
            daemon.assert_ok(&client.wait(Duration::from_secs(60)), &format!("round {round}, hit {k}"));
        }
        outs.iter().for_each(|out| assert_file_is(out, &body));
        // Removing OUTs moves the link count down between rounds, as users do.
        outs.iter().step_by(2).for_each(|out| fs::remove_file(out).expect("remove an OUT"));
    }
    assert_eq!(origin.n_requests("/many"), n_first, "a hit went to the origin");
    let log = daemon.core_log();
    assert_eq!(log.matches("reuse file peer task done").count(), ROUNDS * HITS, "{}", daemon.diagnostics());
    assert_eq!(log.matches("reads the whole task file").count(), 0, "a hit re-read the file\n{}", daemon.diagnostics());
}

/// A download stopped (by `stop`: SIGKILL or SIGTERM) once meta.json records `min_recorded`
/// pieces: `n_pieces` 4 MiB pieces, the first half at full speed and the rest at 256 KiB/s per
/// connection, so the stop lands after the fast pieces are recorded and while slow ones are in
/// flight.
struct Interrupted {
    path: &'static str,
    url: String,
    id: String,
    body: Vec<u8>,
    /// meta.json's pieces after the stop.
    recorded: Vec<bool>,
    /// Requests the origin had seen by then.
    n_requests: usize,
}

fn interrupt(
    daemon: &mut StorageDaemon,
    origin: &ThrottledOrigin,
    path: &'static str,
    n_pieces: usize,
    min_recorded: usize,
    stop: fn(&mut StorageDaemon),
) -> Interrupted {
    let body = content(n_pieces * PIECE, 902 + n_pieces as u64);
    origin.add(path, body.clone());
    origin.throttle(path, (n_pieces / 2 * PIECE) as u64, 256 * 1024);
    let url = origin.url(path);
    let id = task_id_of(&url);
    let client = daemon.spawn_download(&url, &daemon.out("interrupted"));
    let meta = daemon.meta_path(&id);
    let enough =
        poll_until(Duration::from_secs(30), || meta_pieces_done(&meta).is_some_and(|d| n_done(&d) >= min_recorded));
    assert!(enough, "meta.json never recorded the fast pieces\n{}", daemon.diagnostics());
    stop(daemon);
    let _ = client.wait(Duration::from_secs(30));
    let recorded = meta_pieces_done(&meta).expect("meta.json survives the stop");
    assert!(n_done(&recorded) >= min_recorded && n_done(&recorded) < n_pieces, "recorded at the stop: {recorded:?}");
    Interrupted { path, url, id, body, recorded, n_requests: origin.n_requests(path) }
}

impl Interrupted {
    /// Restarts the daemon, downloads again at full speed, checks the bytes, and returns the
    /// pieces the second run fetched.
    fn resume(&self, daemon: &mut StorageDaemon, origin: &ThrottledOrigin) -> Vec<u64> {
        origin.unthrottle_new_requests(self.path);
        daemon.restart();
        let out = daemon.out("resumed");
        daemon.assert_ok(&daemon.download(&self.url, &out), "download after restart");
        assert_file_is(&out, &self.body);
        let len = self.body.len() as u64;
        pieces_requested(&origin.ranges(self.path)[self.n_requests..], PIECE as u64, len)
    }
}

#[test]
fn sigkill_then_zeroed_recorded_pieces_are_fetched_again_on_resume() {
    let origin = ThrottledOrigin::start();
    let mut daemon = StorageDaemon::start(MULTIPLEX);
    let it = interrupt(&mut daemon, &origin, "/zeroed", 16, 4, |d| d.kill9());
    let recorded: Vec<usize> = (0..it.recorded.len()).filter(|i| it.recorded[*i]).collect();
    // A power loss keeps the record but not the bytes: zero two of the recorded pieces.
    let zeroed = [recorded[0], recorded[recorded.len() - 1]];
    for piece in zeroed {
        zero_in_place(&daemon.data_path(&it.id), (piece * PIECE) as u64, PIECE);
    }
    let refetched = it.resume(&mut daemon, &origin);
    for piece in zeroed {
        assert!(refetched.contains(&(piece as u64)), "zeroed piece {piece} was trusted: refetched {refetched:?}");
    }
    for piece in &recorded[1..recorded.len() - 1] {
        assert!(!refetched.contains(&(*piece as u64)), "intact recorded piece {piece} fetched again: {refetched:?}");
    }
    assert!(daemon.core_log().contains("resuming unfinished task"), "no resume logged\n{}", daemon.diagnostics());
}

#[test]
fn parked_task_file_cut_short_is_fetched_again_on_resume() {
    let origin = ThrottledOrigin::start();
    let mut daemon = StorageDaemon::start(MULTIPLEX);
    let it = interrupt(&mut daemon, &origin, "/cut", 4, 2, |d| {
        let status = d.sigterm(Duration::from_secs(10));
        assert!(status.success(), "daemon exit after SIGTERM: {status}\n{}", d.diagnostics());
    });
    assert!(it.recorded[0] && it.recorded[1], "parked pieces: {:?}", it.recorded);
    // The file loses its tail and half of piece 1 (a crash before the size was written back).
    let data = daemon.data_path(&it.id);
    fs::OpenOptions::new().write(true).open(&data).expect("open").set_len((PIECE + PIECE / 2) as u64).expect("cut");
    let refetched = it.resume(&mut daemon, &origin);
    assert!(refetched.contains(&1), "piece 1 was cut short yet trusted: refetched {refetched:?}");
    let served = origin.served_bytes_since(it.path, it.n_requests);
    assert_eq!(served, (refetched.len() * PIECE) as u64, "bytes served after the restart vs pieces requested");
}

/// `--digest` of `body` with one byte changed at `at`: right length, wrong content.
fn digest_of_changed(body: &[u8], at: usize) -> String {
    let mut other = body.to_vec();
    other[at] ^= 1;
    format!("sha256:{}", sha256_hex(&other))
}

#[test]
fn digest_mismatch_found_while_pieces_land_out_of_order_leaves_no_out() {
    let origin = ThrottledOrigin::start();
    let daemon = StorageDaemon::start(MULTIPLEX);
    // Six throttled full pieces and a 5-byte tail: the tail (and pieces taken later) land before
    // piece 0 is complete, so the hasher sees pieces out of order.
    let len = 6 * PIECE + 5;
    let body = content(len, 904);
    origin.add("/digest", body.clone());
    origin.throttle("/digest", 0, 16 * 1024 * 1024);
    let url = origin.url("/digest");
    let out_dir = daemon.dir().join("digest-out");
    fs::create_dir_all(&out_dir).expect("mkdir");
    for (what, at) in [("first byte", 0), ("last byte", len - 1), ("middle", 3 * PIECE + 1)] {
        let out = out_dir.join("out.bin");
        let wrong = digest_of_changed(&body, at);
        let result = daemon.dfget(&["-u", &url, "-O", out.to_str().expect("utf-8 path"), "--digest", &wrong]);
        let stderr = stderr_of(&result);
        assert!(!result.status.success(), "{what}: a wrong digest passed; stderr: {stderr}");
        assert!(stderr.to_lowercase().contains("digest"), "{what}: the reason does not name the digest: {stderr}");
        assert_eq!(dir_entries(&out_dir), Vec::<String>::new(), "{what}: OUT or a temp file left behind");
        assert!(daemon.is_healthy(), "{what}: daemon unhealthy\n{}", daemon.diagnostics());
    }
    // Nothing of the failed tasks is cached: the right digest downloads the file again.
    origin.unthrottle("/digest");
    let n_before = origin.n_requests("/digest");
    let right = format!("sha256:{}", sha256_hex(&body));
    let out = out_dir.join("right.bin");
    let result = daemon.dfget(&["-u", &url, "-O", out.to_str().expect("utf-8 path"), "--digest", &right]);
    daemon.assert_ok(&result, "download with the right digest");
    assert_file_is(&out, &body);
    assert!(origin.n_requests("/digest") > n_before, "the right digest was served from a failed task's cache");
}

#[test]
fn existing_out_survives_a_digest_mismatch_unchanged() {
    let origin = TestOrigin::start();
    let daemon = StorageDaemon::start(MULTIPLEX);
    let body = content(3 * PIECE + 9, 905);
    origin.add("/keep", body.clone());
    let out = daemon.out("keep.bin");
    fs::write(&out, b"the user's previous file").expect("write old OUT");
    let wrong = digest_of_changed(&body, body.len() / 2);
    let result = daemon.dfget(&["-u", &origin.url("/keep"), "-O", out.to_str().expect("utf-8"), "--digest", &wrong]);
    assert!(!result.status.success(), "a wrong digest passed");
    assert_eq!(fs::read(&out).expect("old OUT"), b"the user's previous file", "a failed download touched OUT");
}

/// Downloads `len` bytes from an origin that ignores Range (one 200 stream) with and without a
/// digest, and checks the bytes and that the origin served the file exactly once per download.
#[test]
fn single_stream_from_range_ignoring_origin_is_exact_with_and_without_digest() {
    let origin = TestOrigin::start();
    let daemon = StorageDaemon::start(MULTIPLEX);
    for (i, len) in [PIECE - 1, 5 * PIECE + 3].into_iter().enumerate() {
        let body = content(len, 906 + i as u64);
        let (plain, checked) = (format!("/ignore-{len}"), format!("/ignore-digest-{len}"));
        origin.add_with(&plain, body.clone(), Serve::ignore_range());
        origin.add_with(&checked, body.clone(), Serve::ignore_range());
        let before = origin.bytes_served();
        let out = daemon.out(&format!("plain-{len}"));
        daemon.assert_ok(&daemon.download(&origin.url(&plain), &out), "range-ignoring origin");
        assert_file_is(&out, &body);
        assert_eq!(origin.requests_for(&plain).len(), 1, "a 200 stream should be the only request");

        let digest = format!("sha256:{}", sha256_hex(&body));
        let out = daemon.out(&format!("digest-{len}"));
        let url = origin.url(&checked);
        let result = daemon.dfget(&["-u", &url, "-O", out.to_str().expect("utf-8"), "--digest", &digest]);
        daemon.assert_ok(&result, "range-ignoring origin with a digest");
        assert_file_is(&out, &body);
        assert_eq!(origin.requests_for(&checked).len(), 1, "a 200 stream should be the only request");
        assert_eq!(origin.bytes_served() - before, 2 * len as u64, "each file served exactly once");
    }
}

#[test]
fn docker_registry_pull_is_exact_with_one_connection_and_with_the_default() {
    use support_registry::{push, DaemonOpts, OrasDaemon, PushAuth, PushSpec, Registry, RegistryAuth};
    let registry = Registry::start(RegistryAuth::None);
    let body = content(9 * PIECE + 11, 907);
    let pushed = push(&registry.host(), PushAuth::Anonymous, &[PushSpec::sif("fast/one:v1", &body)]);
    let blob = &pushed[0].layer_digests[0];
    let dir = common::out_dir();
    let mut served = 0u64;
    for (what, extra_yaml) in [("one connection", "  maxConnsPerHost: 1\n"), ("default", "")] {
        let daemon = OrasDaemon::start(DaemonOpts { extra_yaml, ..DaemonOpts::default() });
        let out = dir.path().join(format!("{}.sif", what.replace(' ', "-")));
        let result = daemon.download(&registry.oras_url("fast/one:v1"), &out);
        assert!(result.status.success(), "{what}: pull failed: {}\n{}", stderr_of(&result), daemon.diagnostics());
        assert_file_is(&out, &body);
        served += body.len() as u64;
        let gets = registry.blob_gets_covering(blob, served);
        let got: u64 = gets.iter().map(|g| g.written_bytes).sum();
        assert_eq!(got, served, "{what}: the blob's bytes should be served exactly once per pull: {gets:#?}");
    }
}
