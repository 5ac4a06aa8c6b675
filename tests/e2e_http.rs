//! End-to-end HTTP downloads through the real `dfget` binary: a daemon in a temp dir, the
//! client on its socket, and an origin (the in-process `TestOrigin` for behaviours a real server
//! cannot be made to show, nginx for interop).
//!
//! Invariant: each test proves the one property its name states, with its own daemon, so a
//! failure points at one behaviour; 100 MiB is downloaded at most twice in the whole file.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Barrier;
use std::time::Duration;

use common::range::{self, Answer};
use common::*;

const BIG: usize = 100 * MIB;

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

/// `dfget -u URL -O OUT EXTRA..`.
fn download(daemon: &Daemon, url: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["-u", url, "-O", path_str(out)];
    args.extend_from_slice(extra);
    daemon.dfget(&args)
}

/// The piece ranges a 4 MiB-piece download of `len` bytes must request.
/// How many times each piece of a `len`-byte file was asked for by these Range headers (with
/// their request counts), asserting each is a run of whole pieces: the engine asks for one piece
/// or, once the rate is known, several consecutive ones in one request.
fn piece_asks<'a>(len: usize, ranges: impl IntoIterator<Item = (&'a str, usize)>) -> Vec<usize> {
    let mut asks = vec![0; len.div_ceil(PIECE)];
    for (header, n) in ranges {
        let Answer::Partial(first, last) = range::answer(header, len as u64) else {
            panic!("Range {header} does not name bytes of the {len}-byte file");
        };
        let (first, last) = (first as usize, last as usize);
        assert_eq!(first % PIECE, 0, "Range {header} does not start at a piece boundary");
        assert!(last + 1 == len || (last + 1) % PIECE == 0, "Range {header} does not end at a piece boundary");
        (first / PIECE..=last / PIECE).for_each(|piece| asks[piece] += n);
    }
    asks
}

#[test]
fn exact_bytes_for_edge_sizes_from_test_origin() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let sizes = [0, 1, PIECE - 1, PIECE, PIECE + 1, 3 * PIECE + 7, BIG];
    let mut names = Vec::new();
    for (seed, &len) in sizes.iter().enumerate() {
        let body = content(len, seed as u64 + 1);
        let path = format!("/size-{len}");
        origin.add(&path, body.clone());
        let name = format!("size-{len}.bin");
        download_exact(&daemon, &origin.url(&path), dir.path(), &name, &body);
        names.push(name);
    }
    names.sort();
    assert_eq!(dir_entries(dir.path()), names, "only the outputs, no temp files");
}

#[test]
fn exact_bytes_for_edge_sizes_from_nginx() {
    let root = out_dir();
    let sizes = [PIECE + 1, 3 * PIECE + 7, BIG];
    let bodies: Vec<Vec<u8>> = sizes.iter().enumerate().map(|(seed, &len)| content(len, 100 + seed as u64)).collect();
    for (len, body) in sizes.iter().zip(&bodies) {
        fs::write(root.path().join(format!("size-{len}")), body).expect("write nginx file");
    }
    let nginx = Nginx::start(root.path());
    let daemon = Daemon::start_default();
    let dir = out_dir();
    for (len, body) in sizes.iter().zip(&bodies) {
        let url = nginx.url(&format!("/size-{len}"));
        download_exact(&daemon, &url, dir.path(), &format!("size-{len}.bin"), body);
    }
}

#[test]
fn multi_piece_file_is_fetched_as_ranges_over_several_connections_from_test_origin() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let len = 5 * PIECE + 7;
    let body = content(len, 7);
    // A slow first byte keeps one connection busy long enough for another worker to start.
    origin.add_with("/multi.bin", body.clone(), Serve::normal().with_delay(Duration::from_millis(100)));
    let dir = out_dir();
    download_exact(&daemon, &origin.url("/multi.bin"), dir.path(), "multi.bin", &body);

    let ranged: Vec<Request> = origin.requests_for("/multi.bin").into_iter().filter(|r| r.range.is_some()).collect();
    let conns: BTreeSet<u64> = ranged.iter().map(|r| r.conn_id).collect();
    assert!(conns.len() > 1, "Range requests came over {} connection(s), expected > 1: {ranged:#?}", conns.len());
    let ranges: BTreeSet<String> = ranged.iter().filter_map(|r| r.range.clone()).collect();
    let asks = piece_asks(len, ranges.iter().map(|r| (r.as_str(), 1)));
    assert!(asks.iter().all(|&n| n > 0), "some piece was never asked for (asks per piece {asks:?}): {ranges:?}");
}

#[test]
fn multi_piece_file_is_fetched_as_ranges_over_several_connections_from_nginx() {
    let root = out_dir();
    let len = 5 * PIECE + 7;
    let body = content(len, 8);
    // nginx rate-limits /slow/ (40 MB/s per request), so pieces overlap in time.
    fs::create_dir_all(root.path().join("slow")).expect("mkdir slow");
    fs::write(root.path().join("slow/multi.bin"), &body).expect("write nginx file");
    let nginx = Nginx::start(root.path());
    let daemon = Daemon::start_default();
    let dir = out_dir();
    download_exact(&daemon, &nginx.url("/slow/multi.bin"), dir.path(), "multi.bin", &body);

    // nginx logs a request once it completes; the client returned, so all should be there.
    let mut ranged = Vec::new();
    poll_until(Duration::from_secs(2), || {
        ranged = nginx
            .access_log_entries()
            .into_iter()
            .filter(|e| e.uri == "/slow/multi.bin" && e.range.is_some())
            .collect();
        ranged.iter().map(|e| e.connection).collect::<BTreeSet<_>>().len() > 1
    });
    let conns: BTreeSet<u64> = ranged.iter().map(|e| e.connection).collect();
    assert!(conns.len() > 1, "nginx saw Range requests over {} connection(s), expected > 1: {ranged:#?}", conns.len());
}

#[test]
fn second_download_of_same_url_is_a_hard_link_without_origin_request() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let body = content(3 * PIECE + 7, 21);
    origin.add("/reuse.bin", body.clone());
    let url = origin.url("/reuse.bin");
    let dir = out_dir();
    download_exact(&daemon, &url, dir.path(), "first.bin", &body);
    let requests_before = origin.requests().len();

    let second = download_exact(&daemon, &url, dir.path(), "second.bin", &body);
    let new_requests = &origin.requests()[requests_before..];
    assert!(new_requests.is_empty(), "cache hit still asked the origin: {new_requests:#?}");

    let meta = fs::metadata(&second).expect("stat second output");
    assert!(meta.nlink() >= 2, "second output has nlink {}, expected a hard link", meta.nlink());
    let data_dir = daemon.data_dir();
    let linked: Vec<PathBuf> = regular_files_under(&data_dir)
        .into_iter()
        .filter(|p| fs::metadata(p).map(|m| (m.dev(), m.ino()) == (meta.dev(), meta.ino())).unwrap_or(false))
        .collect();
    assert!(!linked.is_empty(), "no file under {} shares the output's inode {}", data_dir.display(), meta.ino());
    assert!(
        daemon.wait_log("reuse file peer task done"),
        "no 'reuse file peer task done' in core.log:\n{}",
        daemon.core_log()
    );
}

#[test]
fn twenty_concurrent_clients_share_one_fetch_per_piece() {
    const CLIENTS: usize = 20;
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let len = 4 * PIECE + 100; // 5 pieces, the last one short
    let body = content(len, 33);
    // Slow pieces keep the task in flight while all clients arrive (subscribe, not cache hit).
    origin.add_with("/shared.bin", body.clone(), Serve::normal().with_delay(Duration::from_millis(50)));
    let url = origin.url("/shared.bin");
    let dir = out_dir();
    let barrier = Barrier::new(CLIENTS);
    let outputs: Vec<(PathBuf, Output)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let (daemon, url, barrier) = (&daemon, &url, &barrier);
                let out = dir.path().join(format!("client-{i}.bin"));
                scope.spawn(move || {
                    barrier.wait();
                    let result = download(daemon, url, &out, &[]);
                    (out, result)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("client thread")).collect()
    });
    for (out, result) in &outputs {
        assert_success(result, &out.display().to_string());
        assert_file_is(out, &body);
    }

    let counts = origin.range_counts("/shared.bin");
    for (range, n) in &counts {
        match range {
            Some(range) => assert_eq!(*n, 1, "Range {range} fetched {n} times: {counts:?}"),
            None => assert!(*n <= 1, "{n} requests without Range (one probe at most): {counts:?}"),
        }
    }
    let asks = piece_asks(len, counts.iter().filter_map(|(range, &n)| Some((range.as_deref()?, n))));
    assert!(asks.iter().all(|&n| n == 1), "each piece fetched once, asks per piece {asks:?}: {counts:?}");
}

#[test]
fn peer_task_done_is_logged_as_json_with_a_64_hex_task_id() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let body = content(PIECE + 1, 44);
    origin.add("/logged.bin", body.clone());
    let dir = out_dir();
    download_exact(&daemon, &origin.url("/logged.bin"), dir.path(), "logged.bin", &body);

    let is_done = |v: &serde_json::Value| v["msg"].as_str().is_some_and(|m| m.starts_with("peer task done, cost: "));
    poll_until(Duration::from_secs(5), || daemon.core_log_json().iter().any(is_done));
    let lines = daemon.core_log_json();
    let done = lines.iter().find(|v| is_done(v)).unwrap_or_else(|| {
        panic!("no JSON line with msg 'peer task done, cost: ..' in core.log:\n{}", daemon.core_log())
    });
    let msg = done["msg"].as_str().unwrap_or_default();
    let cost = msg.trim_start_matches("peer task done, cost: ").strip_suffix("ms");
    assert!(cost.is_some_and(|c| c.parse::<u64>().is_ok()), "cost not 'Nms' in {msg:?}");
    let task = done["task"].as_str().unwrap_or_default();
    assert!(
        task.len() == 64 && task.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "task field is not 64 lowercase hex: {done}"
    );
    assert!(done["peer"].as_str().is_some_and(|p| !p.is_empty()), "no peer field: {done}");
    assert!(done["component"].is_string(), "no component field: {done}");
}

/// Serves sizes 0 and 3 pieces + 7 with `serve` and checks both come out exact.
fn check_rangeless_origin(serve: Serve) {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let dir = out_dir();
    for (seed, len) in [0, 3 * PIECE + 7].into_iter().enumerate() {
        let body = content(len, 50 + seed as u64);
        let path = format!("/rangeless-{len}");
        origin.add_with(&path, body.clone(), serve);
        download_exact(&daemon, &origin.url(&path), dir.path(), &format!("{len}.bin"), &body);
    }
}

#[test]
fn origin_ignoring_range_still_gives_exact_bytes() {
    check_rangeless_origin(Serve::ignore_range());
}

#[test]
fn origin_without_length_chunked_gives_exact_bytes() {
    check_rangeless_origin(Serve::chunked());
}

#[test]
fn origin_without_length_close_delimited_gives_exact_bytes() {
    check_rangeless_origin(Serve::close_delimited());
}

/// A failed client: non-zero exit, a reason naming one of `causes`, nothing left in OUT's
/// directory, and a daemon that still serves a correct download.
fn assert_clean_failure(daemon: &Daemon, result: &Output, out: &Path, causes: &[&str]) {
    let reason = assert_dfget_failed(result, out);
    let lower = reason.to_ascii_lowercase();
    assert!(causes.iter().any(|c| lower.contains(c)), "stderr does not name the cause (one of {causes:?}): {reason:?}");
    assert_still_serves(daemon);
}

#[test]
fn not_found_fails_cleanly_and_daemon_stays_healthy() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let out = dir.path().join("out.bin");
    let result = download(&daemon, &origin.url("/missing.bin"), &out, &[]);
    assert_clean_failure(&daemon, &result, &out, &["404"]);
}

#[test]
fn connection_refused_fails_cleanly_and_daemon_stays_healthy() {
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let url = format!("http://127.0.0.1:{}/nothing-listens.bin", free_port());
    let out = dir.path().join("out.bin");
    let result = download(&daemon, &url, &out, &["--timeout", "30s"]);
    assert_clean_failure(&daemon, &result, &out, &["refused", "connect"]);
}

#[test]
fn digest_mismatch_fails_cleanly_and_daemon_stays_healthy() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let body = content(PIECE + 1, 61);
    origin.add("/digest.bin", body);
    let wrong = format!("sha256:{}", sha256_hex(b"not the content"));
    let dir = out_dir();
    let out = dir.path().join("out.bin");
    let result = download(&daemon, &origin.url("/digest.bin"), &out, &["--digest", &wrong]);
    assert_clean_failure(&daemon, &result, &out, &["digest"]);
    // The error's kind travels on the wire: the client names it.
    assert!(stderr_of(&result).contains("integrity check failed"), "kind not named: {}", stderr_of(&result));
}

#[test]
fn correct_digest_passes() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let body = content(2 * PIECE + 5, 62);
    origin.add("/digest-ok.bin", body.clone());
    let digest = format!("sha256:{}", sha256_hex(&body));
    let dir = out_dir();
    let out = dir.path().join("out.bin");
    let result = download(&daemon, &origin.url("/digest-ok.bin"), &out, &["--digest", &digest]);
    assert_success(&result, "download with the correct digest");
    assert_file_is(&out, &body);
}

#[test]
fn existing_output_is_replaced() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let body = content(PIECE + 9, 63);
    origin.add("/replace.bin", body.clone());
    let dir = out_dir();
    let out = dir.path().join("out.bin");
    // Longer than the new content: a replace that forgot to truncate would show.
    fs::write(&out, content(3 * PIECE, 64)).expect("write old output");
    let result = download(&daemon, &origin.url("/replace.bin"), &out, &[]);
    assert_success(&result, "download over an existing file");
    assert_file_is(&out, &body);
    assert_eq!(dir_entries(dir.path()), vec!["out.bin".to_string()], "temp files left behind");
}

#[test]
fn custom_header_reaches_origin() {
    let origin = TestOrigin::start();
    let daemon = Daemon::start_default();
    let body = content(PIECE + 11, 65);
    origin.add("/header.bin", body.clone());
    let dir = out_dir();
    let out = dir.path().join("out.bin");
    let result = download(&daemon, &origin.url("/header.bin"), &out, &["-H", "X-Dfget-Test: 42"]);
    assert_success(&result, "download with -H");
    assert_file_is(&out, &body);
    let requests = origin.requests_for("/header.bin");
    assert!(!requests.is_empty(), "origin saw no request");
    for request in &requests {
        assert_eq!(request.header("x-dfget-test"), Some("42"), "header missing on {request:#?}");
    }
}
