//! What every core of the daemon shares: read-only config, the lock-free task index, the store's
//! paths, and one inbox per core (a flume channel) through which cores hand each other accepted
//! client connections and "work on this task" jobs.
//!
//! Invariant: everything here is either immutable after start, atomic, or lock-free; per-core state
//! (connection pools, open task files, futures) never enters it.

use std::os::unix::net::UnixStream as StdStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crate::config::Config;
use crate::daemon::task::Task;
use crate::http::client::Options;
use crate::storage::index::Index;
use crate::storage::Store;

/// One message in a core's inbox.
pub enum CoreMsg {
    /// A client connection accepted by core 0.
    Conn(StdStream),
    /// Start `n_workers` piece workers for this task.
    Work {
        task: Arc<Task>,
        n_workers: usize,
    },
    /// Run one entry of a batch (`POST /batch`) on this core.
    Entry(Box<BatchJob>),
    Shutdown,
}

/// One entry of a batch on its way to a core, with the channel its answer goes back on (to the
/// core that serves the batch's connection).
pub struct BatchJob {
    pub entry: crate::proto::BatchEntry,
    /// Who sent the list: every entry acts with its rights.
    pub caller: crate::daemon::caller::Caller,
    pub reply: flume::Sender<crate::proto::BatchEvent>,
}

pub struct Shared {
    pub config: Config,
    pub store: Store,
    pub index: Index<Task>,
    /// Unfinished tasks found at start, waiting for a request to resume them (id → metadata).
    pub partial: crossbeam_skiplist::SkipMap<String, crate::storage::meta::TaskMeta>,
    /// Last time a client request arrived (unix ms): the idle clock of `aliveTime`.
    pub last_request_unix_ms: std::sync::atomic::AtomicU64,
    pub cores: Vec<flume::Sender<CoreMsg>>,
    pub http_opts: Options,
    /// The seed's `oras:` block (or `download.resourceClients.oras`): registries' transport.
    pub oras_opts: Options,
    /// `<ip>-<pid>` prefix of Dragonfly peer ids.
    pub peer_prefix: String,
    pub driver: String,
    pub shutting_down: AtomicBool,
    /// Membership of a Dragonfly cluster; None = standalone (no scheduler configured).
    pub p2p: Option<Arc<crate::p2p::Node>>,
    pub(crate) next_core: AtomicUsize,
}

impl Shared {
    /// Asks every core to start piece workers for `task`.
    pub fn broadcast_work(&self, task: &Arc<Task>, n_pieces: u64) {
        let n_workers = workers_per_core(n_pieces, self.cores.len());
        for core in &self.cores {
            let _ = core.send(CoreMsg::Work { task: task.clone(), n_workers });
        }
    }

    /// Round-robin choice of the core that serves the next client connection.
    pub fn pick_core(&self) -> &flume::Sender<CoreMsg> {
        let i = self.next_core.fetch_add(1, Ordering::Relaxed) % self.cores.len();
        &self.cores[i]
    }

    pub fn new_peer_id(&self) -> String {
        format!("{}-{}", self.peer_prefix, uuid::Uuid::new_v4())
    }
}

/// How many piece workers a core should start for a task with `n_pieces` pieces on `n_cores` cores.
fn workers_per_core(n_pieces: u64, n_cores: usize) -> usize {
    let per_core = crate::limits::PIECE_WORKERS_PER_CORE as u64;
    let want = n_pieces.div_ceil(n_cores.max(1) as u64).min(per_core);
    want.max(1) as usize
}
