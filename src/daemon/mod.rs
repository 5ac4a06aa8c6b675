//! The daemon: one compio runtime per core, a Unix-socket API, the task index and the GC loop.
//!
//! What crosses cores, and why: `shared::Shared` (read-only config, the lock-free task index, the
//! store's paths) and one inbox per core (a flume channel) through which cores hand each other
//! accepted client connections and "work on this task" jobs. Everything else — HTTP connection
//! pools, open task-file handles, in-flight requests — is owned by the core that created it.
//!
//! Rooms, leaves first (each imports only rooms above it in this list, none imports this file):
//! `counters`, `rate`, `log`, `serving`, `judge`, `caller`, `requesters` → `task` → `shared` → `first_response` →
//! `access`, `cache` → `engine` → `batch` → `api`, `metrics` → `core`.

pub(crate) mod access;
pub(crate) mod api;
pub(crate) mod batch;
pub(crate) mod cache;
pub(crate) mod caller;
pub(crate) mod core;
pub(crate) mod counters;
pub(crate) mod engine;
pub(crate) mod first_response;
pub(crate) mod front;
pub(crate) mod judge;
pub(crate) mod log;
pub(crate) mod metrics;
pub(crate) mod ramp;
pub(crate) mod rate;
pub(crate) mod requesters;
pub mod serving;
pub(crate) mod shared;
pub(crate) mod slots;
pub(crate) mod task;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

use crate::config::Config;
use crate::http::client::Options;
use crate::storage::index::Index;
use crate::storage::Store;
use shared::Shared;

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Config file (default: /etc/dragonfly/dfget.yaml for root, $XDG_CONFIG_HOME/dragonfly/dfget.yaml otherwise).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of cores (one io_uring runtime each); default: all.
    #[arg(long)]
    pub cores: Option<usize>,
    /// Also log to stderr.
    #[arg(long)]
    pub console: bool,
    /// Log level: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// Shortcut for --log-level debug.
    #[arg(short, long)]
    pub verbose: bool,
    /// Override the socket path of the config.
    #[arg(long)]
    pub daemon_sock: Option<PathBuf>,
}

/// `dfget daemon`: loads the config, applies the flags, and runs until stopped.
pub fn run_with_args(args: DaemonArgs) -> anyhow::Result<()> {
    let (path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (Config::default_path(), false),
    };
    let loaded = Config::load_path(&path, required).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut config = loaded.config;
    if let Some(sock) = args.daemon_sock {
        config.socket_path = sock;
    }
    let n_cores = args
        .cores
        .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
        .clamp(1, crate::limits::MAX_CORES);
    let level = if args.verbose || config.verbose { "debug".to_string() } else { args.log_level };
    run(config, n_cores, loaded.warnings, args.console, &level)
}

/// Starts the daemon and blocks until it is asked to stop.
pub fn run(
    config: Config,
    n_cores: usize,
    warnings: Vec<String>,
    log_to_stderr: bool,
    log_level: &str,
) -> anyhow::Result<()> {
    // Before any thread exists (the log writer, the cores), so all of them inherit the mask.
    core::block_stop_signals();
    log::init(&config.log_dir, log_to_stderr || config.console, log_level)?;
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let conn_slots = slots::ConnSlots::for_open_files(raise_nofile_limit());
    let store = Store::new(&config.data_dir);
    // A new data dir is made 0700; an existing one keeps its mode (it may be shared, say /var/tmp),
    // but `tasks/` is ours alone and is made 0700 whatever an older build left.
    crate::storage::private_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data dir {}", config.data_dir.display()))?;
    crate::storage::make_private(store.root())
        .with_context(|| format!("cannot create data dir {} (mode 0700)", store.root().display()))?;
    let listener = bind_socket(&config.socket_path)?;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n_cores).map(|_| flume::unbounded()).unzip();
    let driver = core::probe_driver();
    let ip = local_ip();
    let p2p = match config.p2p.clone() {
        Some(c) => Some(crate::p2p::Node::start(c, ip.parse().unwrap_or(std::net::Ipv4Addr::LOCALHOST.into()))?),
        None => None,
    };
    let shared = Arc::new(Shared {
        http_opts: Options::from_transport(&config.http).map_err(|e| anyhow::anyhow!("http transport: {e}"))?,
        oras_opts: Options::from_transport(&config.oras).map_err(|e| anyhow::anyhow!("oras transport: {e}"))?,
        store,
        index: Index::default(),
        rested: crossbeam_skiplist::SkipMap::new(),
        rest_locks: (0..crate::limits::REST_LOCK_STRIPES).map(|_| std::sync::Mutex::new(())).collect(),
        partial: crossbeam_skiplist::SkipMap::new(),
        last_request_unix_ms: std::sync::atomic::AtomicU64::new(crate::clock::now_unix_ms()),
        cores: senders,
        peer_prefix: format!("{}-{}", p2p.as_ref().map(|n| n.ip.to_string()).unwrap_or(ip), std::process::id()),
        driver,
        shutting_down: AtomicBool::new(false),
        conn_slots,
        p2p,
        next_core: AtomicUsize::new(0),
        cache_bytes: std::sync::atomic::AtomicU64::new(0),
        config,
    });
    log_started(&shared, n_cores);
    rate::install(shared.config.total_rate_limit_bytes_per_sec);
    cache::restore(&shared);
    core::run_cores(shared.clone(), receivers, listener)?;
    // Cores have stopped: nothing writes any more. Park what was running, then honour keepStorage.
    let _ = std::fs::remove_file(&shared.config.socket_path);
    if let Some(node) = &shared.p2p {
        node.stop();
    }
    cache::park_all(&shared);
    if !shared.config.keep_storage {
        tracing::info!("keepStorage is false: removing the task cache");
        let _ = std::fs::remove_dir_all(shared.store.root());
    }
    tracing::info!("dfget daemon stopped");
    Ok(())
}

/// The start-up lines: cores, driver, socket and data dir, and what `advance` means here.
fn log_started(shared: &Shared, n_cores: usize) {
    tracing::info!(
        cores = n_cores,
        driver = %shared.driver,
        socket = %shared.config.socket_path.display(),
        data_dir = %shared.config.data_dir.display(),
        "dfget daemon started"
    );
    if shared.config.storage.strategy == crate::config::Strategy::Advance {
        tracing::info!(
            "storage.strategy io.d7y.storage.v2.advance runs as simple: the task file lives in dataDir and OUT is \
             hard-linked from it (reflink or copy across filesystems); see ARCHITECTURE.md"
        );
    }
}

/// Raises the soft open-file limit to the hard one (as Go programs do since Go 1.19): every
/// waiting client holds a socket, and a shell's `ulimit -n 1024` would otherwise cap the daemon at
/// about a thousand clients. Logs how many clients that leaves room for; returns the limit.
fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let lim = getrlimit(Resource::Nofile);
    let before = lim.current;
    if lim.maximum.is_some() && lim.current != lim.maximum {
        if let Err(e) =
            setrlimit(Resource::Nofile, rustix::process::Rlimit { current: lim.maximum, maximum: lim.maximum })
        {
            tracing::warn!("cannot raise the open-file limit to the hard limit: {e}");
        }
    }
    let nofile = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let max_clients = nofile.saturating_sub(crate::limits::RESERVED_FDS);
    tracing::info!(
        nofile,
        nofile_before = before.unwrap_or(u64::MAX),
        max_clients,
        "open files limit {nofile} (was {}): room for about {max_clients} concurrent clients",
        before.map(|b| b.to_string()).unwrap_or_else(|| "unlimited".into())
    );
    nofile
}

/// Binds the API socket with mode 0660. A stale socket file (no daemon answering behind it) is
/// replaced; a live one is an error, so two daemons never share a socket.
fn bind_socket(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create socket dir {}", dir.display()))?;
    }
    if path.exists() {
        // A daemon that answers `/healthy` is alive (a bare connect is not proof: see `healthy`).
        if crate::proto::healthy(path) {
            anyhow::bail!("another daemon is already listening on {}", path.display());
        }
        std::fs::remove_file(path).with_context(|| format!("cannot remove stale socket {}", path.display()))?;
    }
    let listener = std::os::unix::net::UnixListener::bind(path)
        .with_context(|| format!("cannot bind socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot chmod socket {}", path.display()))?;
    Ok(listener)
}

/// The address part of Dragonfly's peer id. The outbound interface's address would need a route
/// lookup; the hostname's first resolved address is what Dragonfly's `iputils` falls back to.
fn local_ip() -> String {
    use std::net::ToSocketAddrs;
    let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
    (host.as_str(), 0)
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.find(|a| a.is_ipv4()))
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".to_string())
}
