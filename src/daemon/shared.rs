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
    /// A client connection accepted by the front thread (`daemon/front.rs`), not read yet, with
    /// the slot it holds until it ends.
    Conn(StdStream, crate::daemon::slots::ConnSlot),
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
    /// Live tasks: running, failed until cleaned up, or finished and still read.
    pub index: Index<Task>,
    /// Finished tasks nobody reads, in their compact resting state (`cache::rest`): the bulk of
    /// a large cache. An id is in at most one of `index` and `rested`.
    pub rested: crossbeam_skiplist::SkipMap<String, crate::daemon::task::Resting>,
    /// Striped locks that make an id's move between `index` and `rested` (rest, revive, evict
    /// at rest) one step, so a lookup that misses both can never race a move. Held for a few map
    /// operations only, never across IO or an await.
    pub rest_locks: Box<[std::sync::Mutex<()>]>,
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
    /// The cap on client connections held at once (taken by the front thread at accept).
    pub conn_slots: crate::daemon::slots::ConnSlots,
    /// Membership of a Dragonfly cluster; None = standalone (no scheduler configured).
    pub p2p: Option<Arc<crate::p2p::Node>>,
    pub(crate) next_core: AtomicUsize,
    /// Bytes of every laid-out task the cache holds (in the index or parked), kept by
    /// `cache::account`/`unaccount` so admission against `diskGCThreshold` is O(1), not a sum
    /// over the index per entry.
    pub cache_bytes: std::sync::atomic::AtomicU64,
}

impl Shared {
    /// Raises `task`'s worker limit to `limit` and starts the missing workers, one per message,
    /// round-robin over the cores (a worker stays on the core that starts it).
    pub fn grow_workers(&self, task: &Arc<Task>, limit: usize) {
        let before = task.workers.limit();
        task.workers.set_limit(limit);
        for _ in before..limit {
            let core = task.workers.next_core(self.cores.len());
            let _ = self.cores[core].send(CoreMsg::Work { task: task.clone(), n_workers: 1 });
        }
    }

    /// The piece workers a task trading with cluster parents starts with: `TRADING_WORKERS_PER_CORE`
    /// per core, within `max_workers`.
    pub fn trading_workers(&self) -> usize {
        (self.cores.len().max(1) * crate::limits::TRADING_WORKERS_PER_CORE).min(self.max_workers())
    }

    /// The most piece workers one task may have: `PIECE_WORKERS_PER_CORE` per core, at most
    /// `MAX_PIECE_WORKERS_PER_TASK`.
    pub fn max_workers(&self) -> usize {
        (self.cores.len().max(1) * crate::limits::PIECE_WORKERS_PER_CORE).min(crate::limits::MAX_PIECE_WORKERS_PER_TASK)
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
