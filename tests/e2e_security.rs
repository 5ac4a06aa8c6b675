//! Many users on one host: the daemon runs as root (as on CI runners and HPC nodes), and a
//! non-root user in the socket's group drives it through the real `dfget` binary. Each test
//! creates its own user and groups (`useradd`/`groupadd`, removed by a Drop guard) and runs
//! `dfget` as that user with `setpriv`.
//!
//! What is proved: a caller acts with its own rights (OUT only where the caller could write it,
//! symlinks resolved as the caller, cache management for root only), private content is
//! revalidated with each requester's credentials, whether the task is finished or still running
//! (nginx `auth_basic`, its access log shows the revalidation), registry credentials are the caller's, the cache is not readable by other
//! users, no password of a URL shows anywhere, and errors point at the right cause (OUT's
//! filesystem full, no access to the socket).
//!
//! Invariant: nothing is left behind, even when a test fails: users and groups are deleted on
//! drop, paths in `/root` and `/etc` are unique names asserted absent afterwards, and everything
//! else lives in temp dirs. The tests need root (CI runs as root); as another user they fail
//! loudly instead of skipping, since skipping would prove nothing.

mod common;
#[path = "support_registry/mod.rs"]
mod support_registry;
#[path = "support_storage/tmpfs.rs"]
mod tmpfs;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use common::{content, run_with_limit, stderr_of, temp_dir, Daemon, DaemonOpts, Nginx, TestOrigin, MIB};
use tempfile::TempDir;

const CLIENT_LIMIT: Duration = Duration::from_secs(120);
/// `useradd`/`userdel` take a lock on /etc/passwd and fail (not wait) when it is held: tests of
/// this binary run in parallel, so their account changes go one at a time.
static ACCOUNTS: Mutex<()> = Mutex::new(());
static NEXT_USER: AtomicUsize = AtomicUsize::new(0);

fn run_root(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("run {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?} failed: {}", stderr_of(&out));
    out
}

fn assert_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "these tests create users and run a root daemon: run them as root (CI does)");
}

/// A local user with its own group, a home in a temp dir, and optionally membership of a group
/// (`socket_group`) the test gives the daemon's socket. Drop deletes all of it.
struct TestUser {
    name: String,
    socket_group: String,
    uid: u32,
    gid: u32,
    home: TempDir,
}

impl TestUser {
    fn create(in_socket_group: bool) -> TestUser {
        assert_root();
        let n = NEXT_USER.fetch_add(1, Ordering::SeqCst);
        let name = format!("dfsec{}x{n}", std::process::id());
        let socket_group = format!("{name}s");
        let home = temp_dir("dfget-sec-home-");
        let _accounts = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        run_root("groupadd", &[&socket_group]);
        let home_arg = home.path().to_str().expect("utf-8 temp path");
        run_root(
            "useradd",
            &["--no-create-home", "--home-dir", home_arg, "--shell", "/usr/sbin/nologin", "--user-group", &name],
        );
        if in_socket_group {
            run_root("usermod", &["-a", "-G", &socket_group, &name]);
        }
        let id = |flag: &str| -> u32 {
            let out = run_root("id", &[flag, &name]);
            String::from_utf8_lossy(&out.stdout).trim().parse().expect("numeric id")
        };
        let (uid, gid) = (id("-u"), id("-g"));
        std::os::unix::fs::chown(home.path(), Some(uid), Some(gid)).expect("chown home");
        fs::set_permissions(home.path(), fs::Permissions::from_mode(0o700)).expect("chmod home");
        TestUser { name, socket_group, uid, gid, home }
    }

    fn home(&self) -> &Path {
        self.home.path()
    }

    /// `program args` as this user (its uid, gid and groups), with a clean environment.
    fn command<S: AsRef<OsStr>>(&self, program: &Path, args: &[S]) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid)).arg(format!("--regid={}", self.gid)).arg("--init-groups");
        cmd.arg("--").arg(program).args(args);
        cmd.env_clear().env("HOME", self.home()).env("PATH", "/usr/local/bin:/usr/bin:/bin").env("LANG", "C");
        cmd
    }

    fn run<S: AsRef<OsStr>>(&self, program: &Path, args: &[S]) -> Output {
        run_with_limit(&mut self.command(program, args), CLIENT_LIMIT)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _accounts = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.name).output();
        let _ = Command::new("groupdel").arg(&self.socket_group).output();
    }
}

/// A test user that can reach a daemon's socket (or, without the group, cannot), and a copy of
/// `dfget` the user can execute (the build tree may sit under a directory others cannot enter).
struct Access {
    user: TestUser,
    bin: TempDir,
    socket: PathBuf,
}

impl Access {
    fn grant(daemon: &Daemon, in_socket_group: bool) -> Access {
        let user = TestUser::create(in_socket_group);
        // The socket lives in the daemon's temp dir (0700): let others through to it, as
        // /var/run is. The socket itself stays 0660, its group the user's socket group.
        fs::set_permissions(daemon.dir(), fs::Permissions::from_mode(0o711)).expect("chmod daemon dir");
        run_root("chgrp", &[&user.socket_group, daemon.socket().to_str().expect("utf-8 socket path")]);
        let bin = temp_dir("dfget-sec-bin-");
        fs::set_permissions(bin.path(), fs::Permissions::from_mode(0o755)).expect("chmod bin dir");
        fs::copy(env!("CARGO_BIN_EXE_dfget"), bin.path().join("dfget")).expect("copy dfget");
        Access { user, bin, socket: daemon.socket().to_path_buf() }
    }

    /// `dfget ARGS --daemon-sock SOCK` as the test user.
    fn user_dfget(&self, args: &[&str]) -> Output {
        let mut all: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        all.push(OsStr::new("--daemon-sock"));
        all.push(self.socket.as_os_str());
        self.user.run(&self.bin.path().join("dfget"), &all)
    }

    fn user_download(&self, url: &str, out: &Path) -> Output {
        self.user_download_with(url, out, &[])
    }

    fn user_download_with(&self, url: &str, out: &Path, extra: &[&str]) -> Output {
        let out = out.to_str().expect("utf-8 path");
        let mut args = vec!["-u", url, "-O", out, "--no-spawn"];
        args.extend_from_slice(extra);
        self.user_dfget(&args)
    }

    fn user_tasks(&self, args: &[&str]) -> Output {
        let mut all = vec!["tasks"];
        all.extend_from_slice(args);
        self.user_dfget(&all)
    }
}

/// A root daemon and a user with (or without) access to it.
struct Host {
    // Declared first: the daemon stops before the user is deleted.
    daemon: Daemon,
    access: Access,
}

impl Host {
    fn start(in_socket_group: bool) -> Host {
        let daemon = Daemon::start(DaemonOpts::default());
        let access = Access::grant(&daemon, in_socket_group);
        Host { daemon, access }
    }
}

impl std::ops::Deref for Host {
    type Target = Access;

    fn deref(&self) -> &Access {
        &self.access
    }
}

fn assert_ok(out: &Output, what: &str) {
    common::assert_success(out, what);
}

/// A failed run whose stderr mentions every needle (case-insensitive).
fn assert_refused(out: &Output, what: &str, needles: &[&str]) -> String {
    let stderr = stderr_of(out);
    // Shown with --nocapture: the exact reasons users read.
    eprintln!("{what}: refused as expected: {}", stderr.trim());
    assert!(!out.status.success(), "{what}: should be refused, but dfget exited 0\nstderr: {stderr}");
    let lower = stderr.to_lowercase();
    for n in needles {
        assert!(lower.contains(&n.to_lowercase()), "{what}: error should mention {n:?}: {stderr}");
    }
    stderr
}

/// A name no test run used before, for paths in shared directories (`/root`, `/etc`).
fn unique(tag: &str) -> String {
    format!("dfget-sec-{tag}-{}-{}", std::process::id(), uuid::Uuid::new_v4().simple())
}

/// Entries of `dir` whose name contains `needle` (a leftover OUT or temp file).
fn entries_containing(dir: &Path, needle: &str) -> Vec<String> {
    fs::read_dir(dir)
        .map(|rd| {
            rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.contains(needle)).collect()
        })
        .unwrap_or_default()
}

fn root_owned_dir(mode: u32) -> TempDir {
    let d = temp_dir("dfget-sec-rootdir-");
    fs::set_permissions(d.path(), fs::Permissions::from_mode(mode)).expect("chmod");
    d
}

fn task_ids(daemon: &Daemon) -> Vec<(String, String)> {
    let out = daemon.tasks(&["ls", "--json"]);
    assert_ok(&out, "tasks ls --json");
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("tasks ls --json is JSON");
    tasks
        .iter()
        .map(|t| (t["id"].as_str().unwrap_or("").to_string(), t["url"].as_str().unwrap_or("").to_string()))
        .collect()
}

fn state_of(daemon: &Daemon, path: &str) -> Option<String> {
    let out = daemon.tasks(&["ls", "--json"]);
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    let t = tasks.iter().find(|t| t["url"].as_str().is_some_and(|u| u.ends_with(path)))?;
    t["state"].as_str().map(String::from)
}

fn task_id_for(daemon: &Daemon, path: &str) -> String {
    task_ids(daemon)
        .into_iter()
        .find(|(_, url)| url.ends_with(path))
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("no task for {path}: {:?}", task_ids(daemon)))
}

// ---------------------------------------------------------------- finding 2: the caller's rights

#[test]
fn a_user_cannot_make_the_root_daemon_write_where_the_user_could_not() {
    let host = Host::start(true);
    let origin = TestOrigin::start();
    let body = content(MIB + 17, 1);
    origin.add("/f", body.clone());
    let url = origin.url("/f");

    // /root and /etc: unique names, asserted absent afterwards (nothing may be left there).
    for dir in [Path::new("/root"), Path::new("/etc")] {
        let name = unique("out");
        let out = dir.join(&name);
        let result = host.user_download(&url, &out);
        assert_refused(&result, &format!("OUT in {}", dir.display()), &["permission denied"]);
        assert!(
            entries_containing(dir, &name).is_empty(),
            "left {:?} in {}",
            entries_containing(dir, &name),
            dir.display()
        );
    }

    // A root-owned directory everyone may read but only root may write.
    let rootdir = root_owned_dir(0o755);
    let result = host.user_download(&url, &rootdir.path().join("x"));
    assert_refused(&result, "OUT in a root-owned directory", &["permission denied"]);
    assert!(common::dir_entries(rootdir.path()).is_empty(), "left {:?}", common::dir_entries(rootdir.path()));

    // Over a root-owned file in a sticky world-writable directory (like /tmp): the user may
    // create files there but not replace root's.
    let sticky = root_owned_dir(0o1777);
    let victim = sticky.path().join("victim");
    fs::write(&victim, b"root's file").expect("write victim");
    let ino = fs::metadata(&victim).expect("stat victim").ino();
    let result = host.user_download(&url, &victim);
    assert_refused(&result, "OUT over a root-owned file", &["permission denied"]);
    assert_eq!(fs::read(&victim).expect("read victim"), b"root's file", "root's file was changed");
    assert_eq!(fs::metadata(&victim).expect("stat victim").ino(), ino, "root's file was replaced");
    assert_eq!(common::dir_entries(sticky.path()), vec!["victim".to_string()], "temp files left");

    // Through a symlink the user planted in its own home, pointing at the root-owned directory.
    let link = host.user.home().join("link");
    std::os::unix::fs::symlink(rootdir.path(), &link).expect("plant symlink");
    std::os::unix::fs::lchown(&link, Some(host.user.uid), Some(host.user.gid)).expect("chown symlink");
    let result = host.user_download(&url, &link.join("y"));
    assert_refused(&result, "OUT through a planted symlink", &["permission denied"]);
    assert!(
        common::dir_entries(rootdir.path()).is_empty(),
        "wrote through the symlink: {:?}",
        common::dir_entries(rootdir.path())
    );

    // The user's own download still works, and is the user's file (a copy: the user could not
    // have hard-linked root's cache file, fs.protected_hardlinks).
    let own = host.user.home().join("own");
    let result = host.user_download(&url, &own);
    assert_ok(&result, "the user's own download");
    common::assert_file_is(&own, &body);
    let meta = fs::metadata(&own).expect("stat own");
    assert_eq!((meta.uid(), meta.gid()), (host.user.uid, host.user.gid), "OUT must belong to the caller");

    // Root's own download of the same content is a hard link into the cache, as before.
    let root_out_dir = temp_dir("dfget-sec-rootout-");
    let root_out = root_out_dir.path().join("f");
    assert_ok(&host.daemon.download(&url, &root_out), "root's download");
    common::assert_file_is(&root_out, &body);
    assert!(fs::metadata(&root_out).expect("stat").nlink() >= 2, "root's OUT should be a hard link into the cache");
}

#[test]
fn a_user_may_remove_only_tasks_nobody_else_uses_and_gc_is_for_root() {
    let host = Host::start(true);
    let origin = TestOrigin::start();
    origin.add("/roots", content(MIB, 2));
    origin.add("/users", content(MIB, 3));
    let root_dir = temp_dir("dfget-sec-rootout-");
    assert_ok(&host.daemon.download(&origin.url("/roots"), &root_dir.path().join("a")), "root's download");
    let roots_task = task_id_for(&host.daemon, "/roots");

    // A task the user never asked for is no task at all to it: a refusal would tell it that
    // someone downloaded that URL.
    let result = host.user_tasks(&["rm", "--force", &roots_task]);
    assert_refused(&result, "user removes root's task", &[&format!("no task {roots_task}")]);
    assert!(task_ids(&host.daemon).iter().any(|(id, _)| *id == roots_task), "root's task was removed by a user");
    let result = host.user_tasks(&["gc"]);
    assert_refused(&result, "user runs gc", &["permission denied"]);

    // A task only this user ever asked for is the user's to remove.
    assert_ok(&host.user_download(&origin.url("/users"), &host.user.home().join("b")), "user's download");
    let users_task = task_id_for(&host.daemon, "/users");
    assert_ok(&host.user_tasks(&["rm", &users_task]), "user removes its own task");
    assert!(!task_ids(&host.daemon).iter().any(|(id, _)| *id == users_task), "user's task still listed");
    // Root may remove anything.
    assert_ok(&host.daemon.tasks(&["rm", &roots_task]), "root removes its task");
}

/// The URLs a caller's `tasks ls --json` shows.
fn listed_urls(out: &Output, what: &str) -> Vec<String> {
    assert_ok(out, what);
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("tasks ls --json is JSON");
    tasks.iter().map(|t| t["url"].as_str().unwrap_or("").to_string()).collect()
}

fn lists(urls: &[String], path: &str) -> bool {
    urls.iter().any(|u| u.ends_with(path))
}

/// Regression: `tasks ls` showed every user's tasks (URLs redacted, but still what they were) to
/// any caller. A user now sees, stats and removes only what it asked for itself; root sees all.
#[test]
fn a_user_lists_only_its_own_tasks_and_root_lists_every_users() {
    let host = Host::start(true);
    let origin = TestOrigin::start();
    for (i, path) in ["/roots-secret", "/users", "/shared", "/others"].iter().enumerate() {
        origin.add(path, content(MIB, 20 + i as u64));
    }
    let root_dir = temp_dir("dfget-sec-rootout-");
    assert_ok(&host.daemon.download(&origin.url("/roots-secret"), &root_dir.path().join("r")), "root's download");
    assert_ok(&host.daemon.download(&origin.url("/shared"), &root_dir.path().join("s")), "root's shared download");
    assert_ok(&host.user_download(&origin.url("/users"), &host.user.home().join("u")), "user's download");
    assert_ok(&host.user_download(&origin.url("/shared"), &host.user.home().join("s")), "user's shared download");
    let roots_task = task_id_for(&host.daemon, "/roots-secret");

    let urls = listed_urls(&host.user_tasks(&["ls", "--json"]), "user's tasks ls --json");
    assert!(lists(&urls, "/users") && lists(&urls, "/shared"), "the user's own tasks are missing: {urls:?}");
    assert!(!lists(&urls, "/roots-secret"), "the user sees root's task: {urls:?}");
    let table = host.user_tasks(&["ls"]);
    assert_ok(&table, "user's tasks ls");
    let table = String::from_utf8_lossy(&table.stdout).into_owned();
    assert!(!table.contains("roots-secret") && !table.contains(&roots_task), "tasks ls shows root's task:\n{table}");
    assert!(table.contains("/users"), "tasks ls lost the user's task:\n{table}");
    let stat = host.user_tasks(&["stat", &roots_task]);
    assert_refused(&stat, "user stats root's task", &[&format!("no task {roots_task}")]);
    assert_ok(&host.user_tasks(&["stat", &task_id_for(&host.daemon, "/users")]), "user stats its own task");
    // Asked for by root too: the user sees it, but it is not the user's alone to remove.
    let shared = task_id_for(&host.daemon, "/shared");
    assert_refused(&host.user_tasks(&["rm", &shared]), "user removes a shared task", &["permission denied"]);

    // Another user sees neither root's tasks nor the first user's.
    let other = Access::grant(&host.daemon, true);
    assert_ok(&other.user_download(&origin.url("/others"), &other.user.home().join("o")), "other user's download");
    let urls = listed_urls(&other.user_tasks(&["ls", "--json"]), "other user's tasks ls --json");
    assert!(lists(&urls, "/others"), "the other user's own task is missing: {urls:?}");
    for path in ["/roots-secret", "/users", "/shared"] {
        assert!(!lists(&urls, path), "the other user sees {path}: {urls:?}");
    }
    let all: Vec<String> = task_ids(&host.daemon).into_iter().map(|(_, url)| url).collect();
    for path in ["/roots-secret", "/users", "/shared", "/others"] {
        assert!(lists(&all, path), "root does not see {path}: {all:?}");
    }
}

/// core.log names every download's uid and URL: with a world-readable log (0644, as it was
/// created) any user could read what the others download. It is owner-only (0600) now, like
/// Dragonfly's own logs; an existing 0644 one is made private at start.
#[test]
fn a_user_cannot_read_core_log() {
    let host = Host::start(true);
    let origin = TestOrigin::start();
    origin.add("/roots-secret", content(MIB, 30));
    let root_dir = temp_dir("dfget-sec-rootout-");
    assert_ok(&host.daemon.download(&origin.url("/roots-secret"), &root_dir.path().join("r")), "root's download");
    let log = host.daemon.core_log_path();
    assert!(host.daemon.core_log().contains("/roots-secret"), "core.log should name the URL");
    let read = host.user.run(Path::new("/bin/cat"), &[log.as_os_str()]);
    assert!(!read.status.success(), "a user read core.log:\n{}", String::from_utf8_lossy(&read.stdout));
    assert!(stderr_of(&read).contains("Permission denied"), "{}", stderr_of(&read));
    let mode = fs::metadata(&log).expect("stat core.log").permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "core.log's mode");
}

#[test]
fn each_download_logs_the_callers_uid() {
    let host = Host::start(true);
    let origin = TestOrigin::start();
    origin.add("/f", content(MIB, 4));
    let out = host.user.home().join("f");
    assert_ok(&host.user_download(&origin.url("/f"), &out), "user's download");
    // A cache hit is a download too.
    assert_ok(&host.user_download(&origin.url("/f"), &out), "user's second download");
    let uid = u64::from(host.user.uid);
    let lines: Vec<_> = host.daemon.core_log_json().into_iter().filter(|l| l["uid"].as_u64() == Some(uid)).collect();
    assert!(lines.len() >= 2, "core.log should name uid {uid} for both downloads:\n{}", host.daemon.core_log());
    assert!(
        lines.iter().any(|l| l["msg"].as_str().is_some_and(|m| m.contains("reuse file peer task done"))),
        "the cache hit's line should carry the uid:\n{}",
        host.daemon.core_log()
    );
}

// ------------------------------------------------------- finding 3: private content, registries

/// nginx serving `root`, with `/private/` behind `auth_basic` (user `USER`, password `PASSWORD`),
/// and `/slow/` likewise but at 512 KiB/s per request (a download that is still running).
fn nginx_with_private(root: &Path) -> Nginx {
    common::ensure_tool("htpasswd", &["apache2-utils"]);
    let htpasswd = root.join(".htpasswd");
    let out = Command::new("htpasswd").args(["-bc"]).arg(&htpasswd).args([USER, PASSWORD]).output().expect("htpasswd");
    assert!(out.status.success(), "htpasswd: {}", stderr_of(&out));
    let root = root.to_path_buf();
    let tail = move |ports: &[u16]| {
        format!(
            "    server {{\n        listen 127.0.0.1:{port};\n        root {root};\n        location /private/ {{\n            \
             auth_basic \"private\";\n            auth_basic_user_file {root}/.htpasswd;\n        }}\n        \
             location /slow/ {{\n            auth_basic \"private\";\n            auth_basic_user_file \
             {root}/.htpasswd;\n            limit_rate 512k;\n        }}\n    }}\n",
            port = ports[0],
            root = root.display()
        )
    };
    Nginx::start_site(&common::nginx::NginxSite {
        log_format: r#"$connection $request_method $uri "$http_range" $status $body_bytes_sent"#,
        n_ports: 1,
        http_tail: &tail,
    })
}

const USER: &str = "alice";
const PASSWORD: &str = "Pr1vate-pa55-e2e";

fn basic(user: &str, password: &str) -> String {
    format!("Authorization: Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}")))
}

#[test]
fn private_content_is_revalidated_with_each_requesters_credentials_and_public_is_not() {
    let host = Host::start(true);
    let site = temp_dir("dfget-sec-site-");
    fs::set_permissions(site.path(), fs::Permissions::from_mode(0o755)).expect("chmod site");
    fs::create_dir_all(site.path().join("private")).expect("mkdir private");
    let secret = content(2 * MIB + 3, 5);
    let public = content(MIB, 6);
    fs::write(site.path().join("private/f"), &secret).expect("write private");
    fs::write(site.path().join("public"), &public).expect("write public");
    let nginx = nginx_with_private(site.path());
    let url = nginx.url("/private/f");
    let token = basic(USER, PASSWORD);
    let entries = |status: u16| {
        nginx.access_log_entries().into_iter().filter(|e| e.uri == "/private/f" && e.status == status).count()
    };

    let dir = temp_dir("dfget-sec-out-");
    let first = dir.path().join("first");
    assert_ok(
        &host.daemon.dfget(&["-u", &url, "-O", first.to_str().unwrap(), "-H", &token]),
        "download with the token",
    );
    common::assert_file_is(&first, &secret);
    let n_401 = entries(401);

    // Without the token, with a wrong one, and as another user without one: all refused, each
    // after asking the origin (the access log shows a 401 for each).
    let no_token = dir.path().join("no-token");
    assert_refused(&host.daemon.download(&url, &no_token), "root without the token", &["401"]);
    assert!(!no_token.exists());
    let wrong = dir.path().join("wrong");
    let result = host.daemon.dfget(&["-u", &url, "-O", wrong.to_str().unwrap(), "-H", &basic(USER, "wrong")]);
    assert_refused(&result, "root with a wrong token", &["401"]);
    assert!(!wrong.exists());
    let users = host.user.home().join("f");
    assert_refused(&host.user_download(&url, &users), "another user without the token", &["401"]);
    assert!(!users.exists());
    assert_eq!(entries(401), n_401 + 3, "each refused reuse must have asked the origin:\n{}", nginx.access_log());

    // The other user with the token: revalidated (one small ranged request), then served from
    // the cache, not downloaded again.
    let n_ok_before = entries(206) + entries(200);
    let before_bytes: u64 = nginx.access_log_entries().iter().map(|e| e.body_bytes_sent).sum();
    assert_ok(&host.user_download_with(&url, &users, &["-H", &token]), "another user with the token");
    common::assert_file_is(&users, &secret);
    assert_eq!(entries(206) + entries(200), n_ok_before + 1, "one revalidation request:\n{}", nginx.access_log());
    let after_bytes: u64 = nginx.access_log_entries().iter().map(|e| e.body_bytes_sent).sum();
    assert!(after_bytes - before_bytes <= 1, "revalidation fetched {} bytes", after_bytes - before_bytes);

    // Public content keeps its cache hit with no origin request at all.
    let pub_url = nginx.url("/public");
    assert_ok(&host.daemon.download(&pub_url, &dir.path().join("p1")), "public download");
    let n_requests = nginx.access_log_entries().len();
    assert_ok(&host.user_download(&pub_url, &host.user.home().join("p2")), "public reuse by the user");
    common::assert_file_is(&host.user.home().join("p2"), &public);
    assert_eq!(
        nginx.access_log_entries().len(),
        n_requests,
        "a public cache hit asked the origin:\n{}",
        nginx.access_log()
    );
}

#[test]
fn a_running_private_download_is_joined_only_with_accepted_credentials() {
    let host = Host::start(true);
    let site = temp_dir("dfget-sec-site-");
    fs::set_permissions(site.path(), fs::Permissions::from_mode(0o755)).expect("chmod site");
    fs::create_dir_all(site.path().join("slow")).expect("mkdir slow");
    let secret = content(12 * MIB, 12);
    fs::write(site.path().join("slow/f"), &secret).expect("write");
    let nginx = nginx_with_private(site.path());
    let url = nginx.url("/slow/f");
    let token = basic(USER, PASSWORD);
    let dir = temp_dir("dfget-sec-out-");
    let first = dir.path().join("first");
    let mut cmd = host.daemon.download_command(&url, &first);
    cmd.args(["-H", &token]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped());
    let mut root_client = cmd.spawn().expect("spawn root's download");
    let is_running = || state_of(&host.daemon, "/slow/f").as_deref() == Some("running");
    assert!(common::poll_until(Duration::from_secs(20), is_running), "never running\n{}", host.daemon.diagnostics());
    let n_401 = || nginx.access_log_entries().iter().filter(|e| e.uri == "/slow/f" && e.status == 401).count();
    let before = n_401();

    // While it runs: another user without the token is refused after asking the origin...
    let users = host.user.home().join("f");
    assert_refused(&host.user_download(&url, &users), "joining a running private download without the token", &["401"]);
    assert!(!users.exists());
    assert_eq!(n_401(), before + 1, "the refusal must come from the origin:\n{}", nginx.access_log());
    assert!(is_running(), "the download finished too early: this test is about joining it while it runs");
    // ...and with it, joins the same download (one task) and gets the bytes.
    assert_ok(&host.user_download_with(&url, &users, &["-H", &token]), "joining with the token");
    common::assert_file_is(&users, &secret);
    let status = common::wait_or_kill(&mut root_client, CLIENT_LIMIT).expect("root's download finished");
    assert!(status.success(), "root's download failed\n{}", host.daemon.diagnostics());
    common::assert_file_is(&first, &secret);
    let n_tasks = task_ids(&host.daemon).iter().filter(|(_, u)| u.ends_with("/slow/f")).count();
    assert_eq!(n_tasks, 1, "one task for both downloads");
}

#[test]
fn registry_credentials_are_the_callers_not_the_daemons() {
    use support_registry::{push, PushAuth, PushSpec, Registry, RegistryAuth};
    let registry = Registry::start(RegistryAuth::htpasswd(USER, PASSWORD));
    let body = content(MIB + 9, 7);
    push(&registry.host(), PushAuth::Basic(USER, PASSWORD), &[PushSpec::sif("priv/img:v1", &body)]);
    // Root's daemon has credentials for the registry in its own docker config.
    let daemon = support_registry::OrasDaemon::start(support_registry::DaemonOpts {
        credentials: vec![(registry.host(), USER.into(), PASSWORD.into())],
        ..Default::default()
    });
    let url = registry.oras_url("priv/img:v1");
    let host_dir = temp_dir("dfget-sec-out-");
    assert_ok(&daemon.download(&url, &host_dir.path().join("root.sif")), "root pulls with root's credentials");
    let access = Access::grant(&daemon, true);
    let user = &access.user;
    let pull = |out: &Path| access.user_download(&url, out);

    // No docker config of its own: root's credentials must not be used for this user.
    let out = user.home().join("img.sif");
    assert_refused(&pull(&out), "pull without credentials", &["unauthorized"]);
    assert!(!out.exists());

    // With its own (correct) docker config, the user's pull works.
    let docker = user.home().join(".docker");
    fs::create_dir_all(&docker).expect("mkdir .docker");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
    let config = serde_json::json!({"auths": {registry.host(): {"auth": auth}}}).to_string();
    fs::write(docker.join("config.json"), config).expect("write docker config");
    run_root("chown", &["-R", &format!("{}:{}", user.uid, user.gid), docker.to_str().unwrap()]);
    assert_ok(&pull(&out), "pull with the user's own credentials");
    common::assert_file_is(&out, &body);
}

// -------------------------------------------------------------- finding 4: cache permissions

#[test]
fn a_user_cannot_read_cached_files_through_the_data_dir() {
    let host = Host::start(true);
    let origin = TestOrigin::start();
    origin.add("/secret", content(MIB, 8));
    let private_dir = temp_dir("dfget-sec-rootout-"); // 0700, root's
    assert_ok(&host.daemon.download(&origin.url("/secret"), &private_dir.path().join("s")), "root's download");
    let data = host.daemon.data_dir();
    let files = common::regular_files_under(&data);
    let task_file = files.iter().find(|p| p.ends_with("data")).expect("a task file in the data dir").clone();
    let meta = files.iter().find(|p| p.ends_with("meta.json")).expect("a meta.json").clone();

    let cat = host.user.run(Path::new("/bin/cat"), &[task_file.as_os_str()]);
    assert!(!cat.status.success(), "the user read {} through the data dir", task_file.display());
    let cat = host.user.run(Path::new("/bin/cat"), &[meta.as_os_str()]);
    assert!(!cat.status.success(), "the user read {}", meta.display());

    let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o7777;
    assert_eq!(mode(&data), 0o700, "dataDir {}", data.display());
    let mut dir = task_file.parent().expect("task dir").to_path_buf();
    while dir != data {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
        dir = dir.parent().expect("parent").to_path_buf();
    }
    assert_eq!(mode(&meta), 0o600, "{}", meta.display());
}

// ------------------------------------------------------------- finding 6: passwords in URLs

#[test]
fn no_url_password_appears_in_any_of_the_seven_places() {
    let host = Host::start(true);
    let site = temp_dir("dfget-sec-site-");
    fs::set_permissions(site.path(), fs::Permissions::from_mode(0o755)).expect("chmod site");
    fs::create_dir_all(site.path().join("private")).expect("mkdir private");
    let body = content(MIB, 9);
    fs::write(site.path().join("private/f"), &body).expect("write");
    let nginx = nginx_with_private(site.path());
    let with_password = |path: &str| nginx.url(path).replacen("http://", &format!("http://{USER}:{PASSWORD}@"), 1);
    let dir = temp_dir("dfget-sec-out-");
    let out = dir.path().join("f");
    // The password is what fetches it (auth_basic), so it must still be used where it is needed.
    assert_ok(&host.daemon.download(&with_password("/private/f"), &out), "download with userinfo");
    common::assert_file_is(&out, &body);

    // dfget's error output: a 404 and an unreachable port, both with a password in the URL.
    let failed = host.daemon.download(&with_password("/private/missing"), &dir.path().join("m"));
    assert!(!failed.status.success());
    let dead = format!("http://{USER}:{PASSWORD}@127.0.0.1:{}/x", common::free_port());
    let failed_dead = host.daemon.download(&dead, &dir.path().join("d"));
    assert!(!failed_dead.status.success());
    let id = task_id_for(&host.daemon, "/private/f");
    let places = [
        ("dfget error output (404)", stderr_of(&failed)),
        ("dfget error output (connect)", stderr_of(&failed_dead)),
        ("core.log", host.daemon.core_log()),
        ("tasks ls", String::from_utf8_lossy(&host.daemon.tasks(&["ls"]).stdout).into_owned()),
        ("tasks ls --json", String::from_utf8_lossy(&host.daemon.tasks(&["ls", "--json"]).stdout).into_owned()),
        ("tasks stat", String::from_utf8_lossy(&host.daemon.tasks(&["stat", &id]).stdout).into_owned()),
        ("GET /tasks", raw_get(host.daemon.socket(), "/tasks")),
        ("meta.json", meta_files(&host.daemon.data_dir())),
    ];
    for (place, text) in &places {
        assert!(!text.is_empty(), "{place}: nothing to check");
        assert!(!text.contains(PASSWORD), "{place} shows the password:\n{text}");
    }
    // Redacted, not dropped: the listing still says which URL it is.
    assert!(places[3].1.contains("/private/f"), "tasks ls lost the URL:\n{}", places[3].1);
}

fn raw_get(socket: &Path, path: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: d\r\nContent-Length: 0\r\n\r\n").expect("send");
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}

fn meta_files(data: &Path) -> String {
    common::regular_files_under(data)
        .into_iter()
        .filter(|p| p.ends_with("meta.json"))
        .map(|p| fs::read_to_string(p).unwrap_or_default())
        .collect()
}

// -------------------------------------------------------- finding 8: errors that point the right way

#[test]
fn a_full_output_filesystem_is_named_as_the_outputs_not_the_data_dirs() {
    let daemon = Daemon::start(DaemonOpts::default());
    let origin = TestOrigin::start();
    origin.add("/big", content(3 * MIB, 10));
    let mount_dir = temp_dir("dfget-sec-tmpfs-");
    let fs_dir = mount_dir.path().join("small");
    let small = match tmpfs::Tmpfs::mount(&fs_dir, 1) {
        Ok(t) => t,
        // Mounting needs CAP_SYS_ADMIN; CI (root on a fresh machine) has it.
        Err(e) => panic!("cannot mount a 1 MiB tmpfs for OUT: {e}"),
    };
    let out = small.path().join("big");
    let result = daemon.download(&origin.url("/big"), &out);
    let stderr = assert_refused(&result, "OUT on a full filesystem", &["no space left", "output"]);
    assert!(!stderr.contains("data dir"), "blames the data dir for OUT's full filesystem: {stderr}");
    assert!(common::dir_entries(small.path()).is_empty(), "left {:?}", common::dir_entries(small.path()));
}

#[test]
fn permission_denied_on_the_socket_says_it_is_a_permission_problem_and_how_to_get_access() {
    let host = Host::start(false); // the user is NOT in the socket's group
    let origin = TestOrigin::start();
    origin.add("/f", content(1024, 11));
    let out = host.user.home().join("f");
    let result = host.user_download(&origin.url("/f"), &out);
    let stderr = assert_refused(&result, "download without access to the socket", &["permission denied"]);
    assert!(stderr.contains(&host.user.socket_group), "should name the socket's group to join: {stderr}");
    assert!(!stderr.contains("no daemon is listening"), "misleading: {stderr}");
    let result = host.user_tasks(&["ls"]);
    let stderr = assert_refused(&result, "tasks ls without access to the socket", &["permission denied"]);
    assert!(stderr.contains(&host.user.socket_group), "should name the socket's group: {stderr}");
}
