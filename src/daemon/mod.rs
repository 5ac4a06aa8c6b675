//! The daemon: one compio runtime per core, a Unix-socket API, the task index and the GC loop.
//!
//! What crosses cores, and why: `Shared` (read-only config, the lock-free task index, the store's
//! paths) and one inbox per core (a flume channel) through which cores hand each other accepted
//! client connections and "work on this task" jobs. Everything else — HTTP connection pools, open
//! task-file handles, in-flight requests — is owned by the core that created it.

pub mod api;
pub mod core;
pub mod engine;
pub mod gc;
pub mod log;
pub mod metrics;
pub mod rate;
pub mod task;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::Context;

use crate::config::Config;
use crate::http::client::Options;
use crate::storage::index::Index;
use crate::storage::Store;
use task::Task;

pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub index: Index<Task>,
    /// Unfinished tasks found at start, waiting for a request to resume them (id → metadata).
    pub partial: crossbeam_skiplist::SkipMap<String, crate::storage::meta::TaskMeta>,
    /// Last time a client request arrived (unix ms): the idle clock of `aliveTime`.
    pub last_request_unix_ms: std::sync::atomic::AtomicU64,
    pub cores: Vec<flume::Sender<core::CoreMsg>>,
    pub http_opts: Options,
    /// The seed's `oras:` block (or `download.resourceClients.oras`): registries' transport.
    pub oras_opts: Options,
    /// `<ip>-<pid>` prefix of Dragonfly peer ids.
    pub peer_prefix: String,
    pub driver: String,
    pub shutting_down: AtomicBool,
    next_core: AtomicUsize,
}

impl Shared {
    /// Asks every core to start piece workers for `task`.
    pub fn broadcast_work(&self, task: &Arc<Task>, n_pieces: u64) {
        let n_workers = engine::workers_per_core(n_pieces, self.cores.len());
        for core in &self.cores {
            let _ = core.send(core::CoreMsg::Work { task: task.clone(), n_workers });
        }
    }

    /// Round-robin choice of the core that serves the next client connection.
    pub fn pick_core(&self) -> &flume::Sender<core::CoreMsg> {
        let i = self.next_core.fetch_add(1, Ordering::Relaxed) % self.cores.len();
        &self.cores[i]
    }

    pub fn new_peer_id(&self) -> String {
        format!("{}-{}", self.peer_prefix, uuid::Uuid::new_v4())
    }
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
    let store = Store::new(&config.data_dir);
    std::fs::create_dir_all(store.root())
        .with_context(|| format!("cannot create data dir {}", store.root().display()))?;
    let listener = bind_socket(&config.socket_path)?;
    let (senders, receivers): (Vec<_>, Vec<_>) = (0..n_cores).map(|_| flume::unbounded()).unzip();
    let driver = core::probe_driver();
    let shared = Arc::new(Shared {
        http_opts: Options::from_transport(&config.http).map_err(|e| anyhow::anyhow!("http transport: {e}"))?,
        oras_opts: Options::from_transport(&config.oras).map_err(|e| anyhow::anyhow!("oras transport: {e}"))?,
        store,
        index: Index::default(),
        partial: crossbeam_skiplist::SkipMap::new(),
        last_request_unix_ms: std::sync::atomic::AtomicU64::new(task::now_unix_ms()),
        cores: senders,
        peer_prefix: format!("{}-{}", local_ip(), std::process::id()),
        driver: driver.clone(),
        shutting_down: AtomicBool::new(false),
        next_core: AtomicUsize::new(0),
        config,
    });
    tracing::info!(
        cores = n_cores,
        driver = %driver,
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
    rate::install(shared.config.total_rate_limit_bytes_per_sec);
    crate::daemon::gc::restore(&shared);
    core::run_cores(shared.clone(), receivers, listener)?;
    // Cores have stopped: nothing writes any more. Park what was running, then honour keepStorage.
    let _ = std::fs::remove_file(&shared.config.socket_path);
    gc::park_all(&shared);
    if !shared.config.keep_storage {
        tracing::info!("keepStorage is false: removing the task cache");
        let _ = std::fs::remove_dir_all(shared.store.root());
    }
    tracing::info!("dfget daemon stopped");
    Ok(())
}

/// Binds the API socket with mode 0660. A stale socket file (no daemon answering behind it) is
/// replaced; a live one is an error, so two daemons never share a socket.
fn bind_socket(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create socket dir {}", dir.display()))?;
    }
    if path.exists() {
        // A daemon that answers `/healthy` is alive. A bare successful connect is not proof: after
        // a SIGKILL, the dead daemon's io_uring teardown can keep its listener accepting briefly.
        if crate::client::socket::healthy(path) {
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
