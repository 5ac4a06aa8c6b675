//! Dragonfly's real manager (Go, `d7y.io/dragonfly/v2/cmd/manager` v2.5.1, built by
//! `scripts/test.sh` into `${DFGET_TOOLS:-$HOME/.cache/dfget-tools}/manager-v2.5.1/`) with the two
//! servers it cannot start without: PostgreSQL (Debian's, a cluster made by `initdb` in a temp dir,
//! trust authentication, on 127.0.0.1 only) and Redis (its cache and job queue). PostgreSQL refuses
//! to run as root, so a test running as root runs it as the `postgres` user the Debian package
//! creates, in a directory given to that user.
//!
//! Invariant: a `Manager` exists only once its gRPC port accepts connections (its migrations and
//! seed, which create the default scheduler cluster 1, have run); dropping it stops the manager,
//! then Redis, then PostgreSQL, even when the test failed half-way through starting them.

use std::fs;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::scheduler::tools_cache;
use super::{ensure_tool, free_port, poll_until, terminate, wait_child_ready, wait_or_kill, NotReady};

/// The manager release `scripts/test.sh` builds: the scheduler's.
pub const MANAGER_VERSION: &str = "v2.5.1";
/// Migrations on a fresh database take a few seconds; a loaded CI machine may need many more.
const START_LIMIT: Duration = Duration::from_secs(90);

pub struct Manager {
    dir: TempDir,
    grpc_port: u16,
    manager: Option<Child>,
    redis: Option<Child>,
    postgres: Option<Child>,
}

impl Manager {
    pub fn start() -> Manager {
        let bin = tools_cache().join(format!("manager-{MANAGER_VERSION}")).join("manager");
        assert!(bin.is_file(), "Dragonfly's manager is not built at {}: run scripts/test.sh", bin.display());
        let dir = super::temp_dir("dfget-manager-");
        let mut m = Manager { dir, grpc_port: free_port(), manager: None, redis: None, postgres: None };
        let pg_port = m.start_postgres();
        let redis_port = m.start_redis();
        let config = m.dir.path().join("manager.yaml");
        fs::write(&config, manager_config(m.dir.path(), m.grpc_port, pg_port, redis_port)).expect("manager config");
        let child = spawn_logged(Command::new(&bin).arg("--config").arg(&config), &m.dir.path().join("manager.out"));
        let child = m.manager.insert(child);
        let port = m.grpc_port;
        let ready = wait_child_ready(child, START_LIMIT, || TcpStream::connect(("127.0.0.1", port)).is_ok());
        if let Err(e) = ready {
            panic!("the manager did not start ({e:?}):\n{}", m.log());
        }
        m
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.grpc_port)
    }

    /// Everything the manager logged (stdout and its log dir).
    pub fn log(&self) -> String {
        let mut out = fs::read_to_string(self.dir.path().join("manager.out")).unwrap_or_default();
        for f in super::regular_files_under(&self.dir.path().join("logs")) {
            out.push_str(&fs::read_to_string(f).unwrap_or_default());
        }
        out
    }

    /// Waits until a scheduler's UpdateScheduler (its registration) succeeded.
    pub fn wait_scheduler_registered(&self) -> bool {
        poll_until(Duration::from_secs(30), || {
            self.log().lines().any(|l| l.contains("\"grpc.method\":\"UpdateScheduler\"") && l.contains("code OK"))
        })
    }

    /// `initdb` and `postgres` on a free port; returns the port.
    fn start_postgres(&mut self) -> u16 {
        let bin = postgres_bin_dir();
        let data = self.dir.path().join("pg");
        fs::create_dir(&data).expect("postgres dir");
        let owner = postgres_owner(self.dir.path(), &data);
        let as_owner = |cmd: &mut Command| {
            if let Some((uid, gid)) = owner {
                cmd.uid(uid).gid(gid);
            }
            cmd.current_dir(&data);
        };
        let mut initdb = Command::new(bin.join("initdb"));
        initdb.arg("-D").arg(&data).args(["-U", "dragonfly", "--auth=trust", "-E", "UTF8", "--no-sync"]);
        as_owner(&mut initdb);
        let out = initdb.stdin(Stdio::null()).output().expect("run initdb");
        assert!(out.status.success(), "initdb failed: {}", String::from_utf8_lossy(&out.stderr));
        let port = free_port();
        let mut postgres = Command::new(bin.join("postgres"));
        postgres.arg("-D").arg(&data).args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"]).arg(&data);
        // A throwaway cluster: nothing needs to survive a crash.
        postgres.args(["-c", "fsync=off", "-c", "full_page_writes=off"]);
        as_owner(&mut postgres);
        let log = self.dir.path().join("postgres.log");
        let child = self.postgres.insert(spawn_logged(&mut postgres, &log));
        let ready = || fs::read_to_string(&log).unwrap_or_default().contains("ready to accept connections");
        if let Err(e) = wait_child_ready(child, START_LIMIT, ready) {
            panic!("postgres did not start ({e:?}): {}", fs::read_to_string(&log).unwrap_or_default());
        }
        port
    }

    fn start_redis(&mut self) -> u16 {
        let bin = ensure_tool("redis-server", &["redis-server"]);
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path());
        let child = self.redis.insert(spawn_logged(&mut cmd, &self.dir.path().join("redis.log")));
        if let Err(e) = wait_child_ready(child, START_LIMIT, || TcpStream::connect(("127.0.0.1", port)).is_ok()) {
            panic!("redis did not start ({e:?})");
        }
        port
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        if let Some(mut c) = self.manager.take() {
            terminate(&mut c, Duration::from_secs(5));
        }
        if let Some(mut c) = self.redis.take() {
            terminate(&mut c, Duration::from_secs(3));
        }
        if let Some(mut c) = self.postgres.take() {
            // SIGINT is postgres' fast shutdown; SIGTERM would wait for clients to leave.
            if let Ok(pid) = i32::try_from(c.id()) {
                // SAFETY: kill(2) on our own unreaped child.
                unsafe { libc::kill(pid, libc::SIGINT) };
            }
            let _ = wait_or_kill(&mut c, Duration::from_secs(5));
        }
    }
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> Child {
    let out = fs::File::create(log).expect("log file");
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()))
}

/// Debian keeps the server programs out of `PATH`, in `/usr/lib/postgresql/MAJOR/bin`; the newest
/// installed major wins.
fn postgres_bin_dir() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("postgres").is_file() && bin.join("initdb").is_file())
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!("PostgreSQL is not installed: run scripts/test.sh (or apt-get install postgresql)"),
    }
}

/// When the test is root: the `postgres` user's (uid, gid), given `data` (and the way to it).
fn postgres_owner(dir: &Path, data: &Path) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    // SAFETY: a NUL-terminated name; the returned record is read at once, before any other
    // getpw* call could reuse it.
    let (uid, gid) = unsafe {
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(!pw.is_null(), "running as root, and there is no `postgres` user to run PostgreSQL as");
        ((*pw).pw_uid, (*pw).pw_gid)
    };
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("open the temp dir to postgres");
    std::os::unix::fs::chown(data, Some(uid), Some(gid)).expect("give the data dir to postgres");
    Some((uid, gid))
}

fn manager_config(dir: &Path, grpc_port: u16, pg_port: u16, redis_port: u16) -> String {
    format!(
        "server:\n  name: dfget-test-manager\n  logDir: {logs}\n  cacheDir: {cache}\n  pluginDir: {plugins}\n  \
         grpc:\n    advertiseIP: 127.0.0.1\n    listenIP: 127.0.0.1\n    port:\n      start: {grpc_port}\n      \
         end: {grpc_port}\n  rest:\n    addr: 127.0.0.1:{rest_port}\n\
         auth:\n  jwt:\n    realm: dragonfly\n    key: throwaway-test-key\n    timeout: 2h\n    maxRefresh: 2h\n\
         database:\n  type: postgres\n  postgres:\n    user: dragonfly\n    password: unused-with-trust-auth\n    \
         host: 127.0.0.1\n    port: {pg_port}\n    dbname: postgres\n    sslMode: disable\n    timezone: UTC\n    \
         migrate: true\n  redis:\n    addrs: [127.0.0.1:{redis_port}]\n\
         cache:\n  redis:\n    ttl: 1s\n  local:\n    size: 1000\n    ttl: 1s\n\
         metrics:\n  enable: false\n",
        logs = dir.join("logs").display(),
        cache = dir.join("cache").display(),
        plugins = dir.join("plugins").display(),
        rest_port = free_port(),
    )
}
