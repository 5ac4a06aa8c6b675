//! End-to-end tests of bulk lists through the real binary: `dfget -i LIST` (file and standard
//! input) and `dfget prefetch` against nginx and a docker-registry filled by oras-py — per-entry
//! failures with line numbers and no leftovers, reruns that fetch nothing, prefetch then a cache
//! hit with no origin request, duplicates sharing one task, and the progress bar on a terminal.
//!
//! Invariant: each test starts its own servers and daemon in temp dirs and proves what its name
//! says from the origin's own access log or the bytes on disk, never from dfget's word alone.

mod common;
#[path = "support_registry/mod.rs"]
mod support_registry;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{
    assert_file_is, content, dir_entries, free_port, out_dir, regular_files_under, sha256_hex, stderr_of, Daemon,
    Nginx, KIB, MIB, PIECE,
};

/// A directory served by nginx, with `n` files `f{i}.bin` of `len` bytes (seeded by `i`).
fn site(n: usize, len: usize) -> (tempfile::TempDir, Vec<Vec<u8>>) {
    let root = common::temp_dir("dfget-www-");
    let bodies: Vec<Vec<u8>> = (0..n).map(|i| content(len, 1000 + i as u64)).collect();
    for (i, b) in bodies.iter().enumerate() {
        fs::write(root.path().join(format!("f{i}.bin")), b).expect("write site file");
    }
    (root, bodies)
}

/// Requests nginx completed for `uri`.
fn requests_for(nginx: &Nginx, uri: &str) -> usize {
    nginx.access_log_entries().iter().filter(|e| e.uri == uri).count()
}

/// `dfget ARGS` with `input` on standard input (plus `--daemon-sock`, `--no-spawn`).
fn dfget_stdin(daemon: &Daemon, args: &[&str], input: &str) -> Output {
    let mut cmd = daemon.client(args);
    cmd.arg("--no-spawn").stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn dfget");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = input.to_string();
    let writer = std::thread::spawn(move || stdin.write_all(input.as_bytes()));
    let out = child.wait_with_output().expect("dfget output");
    writer.join().expect("stdin writer").expect("write the list to stdin");
    out
}

/// The summary line's numbers: entries, done, cache hits, failed, bytes.
fn summary(out: &Output) -> [u64; 5] {
    let stderr = stderr_of(out);
    let line =
        stderr.lines().rev().find(|l| l.contains(" entries: ")).unwrap_or_else(|| panic!("no summary: {stderr}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit() && c != '.')
        .filter(|s| !s.is_empty() && !s.contains('.'))
        .filter_map(|s| s.parse().ok())
        .collect();
    assert!(nums.len() >= 5, "summary line {line:?}");
    [nums[0], nums[1], nums[2], nums[3], nums[4]]
}

fn exit_code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn mixed_list_fails_bad_entries_by_line_keeps_the_rest_and_a_rerun_fetches_nothing_it_has() {
    let (root, bodies) = site(4, 64 * KIB);
    let big = content(2 * PIECE + 5, 77);
    fs::write(root.path().join("big.bin"), &big).expect("write big");
    let nginx = Nginx::start(root.path());
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let refused = free_port();
    let wrong = "0".repeat(64);
    let list = format!(
        "# a list with every kind of failure\n\
         {f0}\n\
         {f1}\n  out=renamed.bin\n\
         {missing}\n\
         http://127.0.0.1:{refused}/refused.bin\n\
         {f2}\n  checksum=sha-256={wrong}\n\
         ftp://127.0.0.1/nope.bin\n\
         {f3}\n  digest=sha256:{good}\n  dir=nested\n\
         {big}\n  out=sub/big.bin\n",
        f0 = nginx.url("/f0.bin"),
        f1 = nginx.url("/f1.bin"),
        missing = nginx.url("/missing.bin"),
        f2 = nginx.url("/f2.bin"),
        f3 = nginx.url("/f3.bin"),
        good = sha256_hex(&bodies[3]),
        big = nginx.url("/big.bin"),
    );
    let list_path = dir.path().join("list.txt");
    fs::write(&list_path, &list).expect("write list");
    let out_path = dir.path().join("out");
    fs::create_dir(&out_path).expect("mkdir out");
    let cwd = dir.path();
    let run = || {
        let mut cmd = daemon.client(["-i", "list.txt", "-O", "out"]);
        cmd.arg("--no-spawn").current_dir(cwd);
        common::run_with_limit(&mut cmd, Duration::from_secs(120))
    };

    let first = run();
    let stderr = stderr_of(&first);
    assert_eq!(exit_code(&first), 1, "some entries failed: {stderr}");
    assert_file_is(&out_path.join("f0.bin"), &bodies[0]);
    assert_file_is(&out_path.join("renamed.bin"), &bodies[1]);
    assert_file_is(&cwd.join("nested/f3.bin"), &bodies[3]);
    assert_file_is(&out_path.join("sub/big.bin"), &big);
    for (line, what) in [(5, "missing.bin"), (6, "refused.bin"), (7, "f2.bin"), (9, "ftp://")] {
        let reported = stderr.lines().find(|l| l.contains(&format!("list.txt:{line}: ")));
        let reported = reported.unwrap_or_else(|| panic!("line {line} ({what}) not reported: {stderr}"));
        assert!(reported.contains(what), "line {line} names its URL: {reported}");
    }
    assert!(stderr.contains("404"), "the 404 says so: {stderr}");
    assert!(stderr.to_lowercase().contains("refused"), "the refused port says so: {stderr}");
    assert!(stderr.contains("digest mismatch"), "the wrong checksum says so: {stderr}");
    assert_eq!(summary(&first)[..4], [8, 4, 0, 4], "entries, done, hits, failed: {stderr}");
    assert_eq!(summary(&first)[4], (3 * 64 * KIB + big.len()) as u64, "bytes: {stderr}");
    // Nothing for the failed entries, and no temp file anywhere.
    let mut names: Vec<String> = regular_files_under(cwd)
        .iter()
        .map(|p| p.strip_prefix(cwd).expect("under cwd").display().to_string())
        .collect();
    names.sort();
    assert_eq!(names, ["list.txt", "nested/f3.bin", "out/f0.bin", "out/renamed.bin", "out/sub/big.bin"]);

    let before: BTreeMap<String, usize> = ["/f0.bin", "/f1.bin", "/f3.bin", "/big.bin"]
        .iter()
        .map(|u| (u.to_string(), requests_for(&nginx, u)))
        .collect();
    let second = run();
    assert_eq!(exit_code(&second), 1, "{}", stderr_of(&second));
    assert_eq!(summary(&second)[..4], [8, 4, 4, 4], "the good entries are cache hits: {}", stderr_of(&second));
    for (uri, n) in before {
        assert_eq!(requests_for(&nginx, &uri), n, "{uri} was fetched again by the rerun");
    }
    assert_file_is(&out_path.join("sub/big.bin"), &big);
}

#[test]
fn list_from_standard_input_lands_every_entry() {
    let (root, bodies) = site(3, 100 * KIB);
    let nginx = Nginx::start(root.path());
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let list: String = (0..3).map(|i| format!("{}\n", nginx.url(&format!("/f{i}.bin")))).collect();
    let out = dfget_stdin(&daemon, &["-i", "-", "--dir", &dir.path().display().to_string()], &list);
    assert_eq!(exit_code(&out), 0, "{}", stderr_of(&out));
    for (i, body) in bodies.iter().enumerate() {
        assert_file_is(&dir.path().join(format!("f{i}.bin")), body);
    }
    assert_eq!(summary(&out), [3, 3, 0, 0, 3 * 100 * KIB as u64]);
}

#[test]
fn prefetch_fills_the_cache_only_and_a_later_download_is_a_hit_without_origin_request() {
    let (root, bodies) = site(2, 3 * PIECE / 2);
    let nginx = Nginx::start(root.path());
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let urls = [nginx.url("/f0.bin"), nginx.url("/f1.bin")];
    let out = daemon.dfget(&["prefetch", &urls[0], &urls[1]]);
    assert_eq!(exit_code(&out), 0, "{}", stderr_of(&out));
    assert_eq!(summary(&out)[..4], [2, 2, 0, 0]);
    assert!(dir_entries(dir.path()).is_empty(), "prefetch wrote no file");
    let fetched = nginx.access_log_entries().len();
    assert!(fetched >= 4, "both files came from the origin (2 pieces each): {fetched}");

    for (i, url) in urls.iter().enumerate() {
        let target = dir.path().join(format!("out{i}"));
        let got = daemon.download(url, &target);
        assert!(got.status.success(), "{}", stderr_of(&got));
        assert_file_is(&target, &bodies[i]);
    }
    assert_eq!(nginx.access_log_entries().len(), fetched, "the downloads after prefetch asked the origin");
    assert!(daemon.wait_log("reuse file peer task done"), "cache hits are logged: {}", daemon.core_log());
}

#[test]
fn prefetch_of_a_list_from_stdin_then_rerun_is_all_cache_hits() {
    let (root, _bodies) = site(5, 10 * KIB);
    let nginx = Nginx::start(root.path());
    let daemon = Daemon::start_default();
    let list: String = (0..5).map(|i| format!("{}\n  tag=t\n", nginx.url(&format!("/f{i}.bin")))).collect();
    let first = dfget_stdin(&daemon, &["prefetch", "-i", "-"], &list);
    assert_eq!(summary(&first)[..4], [5, 5, 0, 0], "{}", stderr_of(&first));
    let n = nginx.access_log_entries().len();
    let second = dfget_stdin(&daemon, &["prefetch", "-i", "-"], &list);
    assert_eq!(summary(&second)[..4], [5, 5, 5, 0], "{}", stderr_of(&second));
    assert_eq!(nginx.access_log_entries().len(), n, "a rerun fetched again");
}

#[test]
fn twenty_duplicate_entries_fetch_each_piece_once() {
    let body = content(3 * PIECE + 7, 4242);
    let root = common::temp_dir("dfget-www-");
    fs::write(root.path().join("dup.bin"), &body).expect("write dup");
    let nginx = Nginx::start(root.path());
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let url = nginx.url("/dup.bin");
    let list: String = (0..20).map(|i| format!("{url}\n  out=copy{i}.bin\n")).collect();
    fs::write(dir.path().join("list"), list).expect("write list");
    let out = daemon.dfget(&[
        "-i",
        &dir.path().join("list").display().to_string(),
        "-O",
        &dir.path().display().to_string(),
        "-j",
        "20",
    ]);
    assert_eq!(exit_code(&out), 0, "{}", stderr_of(&out));
    for i in 0..20 {
        assert_file_is(&dir.path().join(format!("copy{i}.bin")), &body);
    }
    let entries: Vec<_> = nginx.access_log_entries().into_iter().filter(|e| e.uri == "/dup.bin").collect();
    let mut ranges: Vec<String> = entries.iter().map(|e| e.range.clone().unwrap_or_default()).collect();
    ranges.sort();
    let n_before = ranges.len();
    ranges.dedup();
    assert_eq!(n_before, ranges.len(), "a range was fetched twice: {entries:#?}");
    assert_eq!(ranges.len(), 4, "one request per piece: {entries:#?}");
    let served: u64 = entries.iter().map(|e| e.body_bytes_sent).sum();
    assert_eq!(served, body.len() as u64, "the origin sent the file exactly once");
}

#[test]
fn oras_and_http_entries_mix_and_oras_gets_the_apptainer_name() {
    support_registry::ensure_tools();
    let registry = support_registry::Registry::start(support_registry::RegistryAuth::None);
    let sif = content(5 * MIB + 3, 31);
    support_registry::push(
        &registry.host(),
        support_registry::PushAuth::Anonymous,
        &[support_registry::PushSpec::sif("lab/tools:v2", &sif)],
    );
    let (root, bodies) = site(1, 20 * KIB);
    let nginx = Nginx::start(root.path());
    let daemon = support_registry::OrasDaemon::start(support_registry::DaemonOpts::default());
    let dir = out_dir();
    let list = format!("{}\n{}\n", registry.oras_url("lab/tools:v2"), nginx.url("/f0.bin"));
    let out = dfget_stdin(&daemon, &["-i", "-", "-O", &dir.path().display().to_string()], &list);
    assert_eq!(exit_code(&out), 0, "{}", stderr_of(&out));
    assert_file_is(&dir.path().join("tools_v2.sif"), &sif);
    assert_file_is(&dir.path().join("f0.bin"), &bodies[0]);
}

#[test]
fn unreadable_list_exits_2_and_bad_flags_are_refused_before_any_daemon() {
    let dir = out_dir();
    let sock = dir.path().join("none.sock");
    let bin = env!("CARGO_BIN_EXE_dfget");
    let run = |args: &[&str]| {
        let mut cmd = Command::new(bin);
        cmd.args(args).arg("--daemon-sock").arg(&sock);
        common::run_with_limit(&mut cmd, Duration::from_secs(30))
    };
    let missing = run(&["-i", "/nonexistent/list.txt"]);
    assert_eq!(exit_code(&missing), 2, "{}", stderr_of(&missing));
    assert!(stderr_of(&missing).contains("cannot read the list"), "{}", stderr_of(&missing));
    // Without --no-spawn: a daemon would be spawned on `sock` if the check came after the spawn.
    for args in [
        &["-u", "ftp://x/y", "-O", "y"][..],
        &["-u", "http://h/x", "-O", "y", "--digest", "md5:1"],
        &["-u", "http://h/x", "-O", "y", "-H", "NoColon"],
        &["-i", "list", "--digest", &format!("sha256:{}", "0".repeat(64))],
        &["prefetch", "-i", "list", "-j", "0"],
    ] {
        let out = run(args);
        assert_eq!(exit_code(&out), 2, "{args:?}: {}", stderr_of(&out));
        assert!(!sock.exists(), "{args:?} started a daemon before refusing");
    }
}

/// Runs `cmd` under a pseudo-terminal of 120 columns (python3's pty module) and returns what
/// the terminal showed.
fn under_pty(cmd: &[String]) -> String {
    let script = r#"
import fcntl, os, pty, struct, sys, termios
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], sys.argv[1:])
fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
out = b""
while True:
    try:
        data = os.read(fd, 65536)
    except OSError:
        break
    if not data:
        break
    out += data
_, status = os.waitpid(pid, 0)
sys.stdout.buffer.write(out)
sys.exit(os.waitstatus_to_exitcode(status))
"#;
    let mut c = Command::new("python3");
    c.arg("-c").arg(script).args(cmd);
    let out = common::run_with_limit(&mut c, Duration::from_secs(120));
    assert!(out.status.success(), "under a pty: {}\n{}", String::from_utf8_lossy(&out.stdout), stderr_of(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn progress_bar_shows_on_a_terminal_and_not_in_a_pipe_unless_forced() {
    let root = common::temp_dir("dfget-www-");
    fs::create_dir(root.path().join("slow")).expect("mkdir slow");
    // nginx serves /slow/ at 40 MB/s per request: long enough for the bar to be drawn.
    for i in 0..3 {
        fs::write(root.path().join(format!("slow/s{i}.bin")), content(8 * MIB, 900 + i)).expect("write slow file");
    }
    let nginx = Nginx::start(root.path());
    let daemon = Daemon::start_default();
    let dir = out_dir();
    let list_for = |tag: &str| -> String {
        let list: String =
            (0..3).map(|i| format!("{}\n  tag={tag}\n", nginx.url(&format!("/slow/s{i}.bin")))).collect();
        let path = dir.path().join(format!("list-{tag}"));
        fs::write(&path, list).expect("write list");
        path.display().to_string()
    };
    let args = |tag: &str, extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> =
            vec![env!("CARGO_BIN_EXE_dfget").into(), "prefetch".into(), "-i".into(), list_for(tag)];
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(["--daemon-sock".into(), daemon.socket().display().to_string(), "--no-spawn".into()]);
        v
    };
    let shown = under_pty(&args("pty", &[]));
    assert!(shown.contains("entries ["), "no bar on a terminal: {shown:?}");

    let mut piped = Command::new(&args("pipe", &[])[0]);
    piped.args(&args("pipe", &[])[1..]);
    let piped = common::run_with_limit(&mut piped, Duration::from_secs(120));
    assert!(piped.status.success(), "{}", stderr_of(&piped));
    assert!(!stderr_of(&piped).contains("entries ["), "a bar in a pipe: {}", stderr_of(&piped));
    assert!(!stderr_of(&piped).contains('\u{1b}'), "escape codes in a pipe: {:?}", stderr_of(&piped));

    let forced_args = args("forced", &["-b"]);
    let mut forced = Command::new(&forced_args[0]);
    forced.args(&forced_args[1..]);
    let forced = common::run_with_limit(&mut forced, Duration::from_secs(120));
    assert!(stderr_of(&forced).contains("entries ["), "-b shows the bar in a pipe too: {}", stderr_of(&forced));

    let off = under_pty(&args("off", &["--no-progress"]));
    assert!(!off.contains("entries ["), "--no-progress still drew a bar: {off:?}");

    // The single-download bar follows the same rule.
    let single = under_pty(&[
        env!("CARGO_BIN_EXE_dfget").into(),
        "-u".into(),
        nginx.url("/slow/s0.bin"),
        "-O".into(),
        dir.path().join("single").display().to_string(),
        "--tag".into(),
        "single".into(),
        "--daemon-sock".into(),
        daemon.socket().display().to_string(),
        "--no-spawn".into(),
    ]);
    assert!(single.contains("MiB/"), "no bar for a single download on a terminal: {single:?}");
}
