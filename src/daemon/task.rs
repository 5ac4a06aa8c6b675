//! One task's shared state, read and written by every core: what it downloads (`Spec`), its piece
//! geometry, bitmap and crcs, its state machine (`Running` → `Done` | `Failed`), its readers' pins
//! and the event that wakes whoever waits on it. How a task is filled lives elsewhere: the first
//! response in `first_response`, piece workers and finalizing in `engine`.
//!
//! Invariant: a piece's bit is set only after its bytes are written and its crc is stored; the task is
//! `Done` only when every bit is set (and the digest, if any, matched). Failure is terminal and first
//! one wins. "Pin unless evicted" and "evict unless pinned" are each one atomic step.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use crate::clock::now_unix_ms;
use crate::daemon::counters;
use crate::error::Error;
use crate::piece::bitmap::AtomicBitmap;
use crate::piece::{Layout, DEFAULT_PIECE_LEN_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Running = 0,
    Done = 1,
    Failed = 2,
}

/// What a task downloads and what the result must match.
#[derive(Clone)]
pub struct Spec {
    /// The URL the user asked for (`http(s)://` or `oras://`), for logs and metadata.
    pub display_url: String,
    pub fetch: crate::source::Fetch,
    /// Verified before the task is done.
    pub digest: Option<crate::digest::Digest>,
    /// Known in advance (an OCI descriptor's size): the origin's length must match.
    pub expected_len: Option<u64>,
    /// Fetched with credentials: another request gets it only after showing its own
    /// (`daemon::access`). Kept in `meta.json`.
    pub private: bool,
    /// Building this spec already proved, with the requester's own credentials, that it may read
    /// the content (ORAS: the manifest request), so a private task needs no further check.
    pub access_shown: bool,
    /// The id Dragonfly's Rust dfdaemon gives this download (`p2p::task_id`), for the cluster;
    /// None where peers cannot share it (ORAS blobs, tasks restored from disk).
    pub cluster_id: Option<String>,
}

/// Piece geometry plus how the origin is read. Set once, when the first response arrives.
#[derive(Debug, Clone, Copy)]
pub struct Geometry {
    pub layout: Layout,
    /// false = one stream from the home core (no Range support, or unknown length).
    pub ranged: bool,
}

pub struct Task {
    pub id: String,
    pub peer_id: String,
    pub spec: Spec,
    pub data_path: PathBuf,
    pub started: Instant,
    state: AtomicU8,
    geometry: OnceLock<Geometry>,
    bitmap: OnceLock<AtomicBitmap>,
    crcs: OnceLock<Box<[AtomicU32]>>,
    /// Per piece not yet done: how far its fetch got, `len << 32 | crc32 of that prefix` (0 =
    /// nothing), updated after each write; persisted so a resume asks only for the rest.
    partial: OnceLock<Box<[AtomicU64]>>,
    /// Bytes written into the task file by any fetch, so the progress saver knows something moved.
    written_bytes: AtomicU64,
    /// Next piece index a worker should take (pieces below it are taken, not necessarily done).
    next_piece: AtomicU64,
    completed_bytes: AtomicU64,
    failure: OnceLock<Error>,
    /// Wakes subscribers (progress streams, the home core's finalizer) after any piece or state
    /// change. A `wake::Signal`, not an `event_listener::Event`: waiters on other cores are woken
    /// through one relay per core, so no core ever spins on another's full wake queue.
    pub event: crate::wake::Signal,
    /// The same wake-ups for the tokio control-plane thread (SyncPieces streams to child peers),
    /// which cannot listen on `event`.
    pub watchers: crate::wake::Watchers,
    pub last_access_unix_ms: AtomicU64,
    /// Readers (cache-hit checks, exports) in the low bits, plus `EVICTED` once the GC or an
    /// operator claimed the task: one word, so "pin unless evicted" and "evict unless pinned" are
    /// each a single atomic step and can never both succeed.
    readers: AtomicUsize,
    /// Held while metadata is written and while a failed task's files are removed, so a late
    /// progress write can never land after (or in the middle of) the cleanup.
    pub files: std::sync::Mutex<()>,
    /// Strong validator of the content (ETag, else Last-Modified) from the first response, sent as
    /// `If-Range` with every piece so a file replaced mid-download is detected, not mixed.
    pub validator: OnceLock<String>,
    /// Who asked for this task since the daemon started (lock-free: noted on every download).
    requesters: crate::daemon::requesters::Requesters,
    /// Every validator of the first response (weak ETags included): each piece response must show
    /// the same, since an origin may ignore `If-Range` (or have only weak validators).
    pub validators: OnceLock<Validators>,
    /// The task's place in a Dragonfly cluster, once the scheduler was asked (`p2p`).
    pub peer: OnceLock<std::sync::Arc<crate::p2p::peer::PeerTask>>,
    /// The piece workers of every core and how many may run (`daemon::ramp`).
    pub workers: crate::daemon::ramp::Workers,
    /// The finished task file's identity, known only to this run of the daemon: set when the task
    /// finishes here, or after a restored task's first full check. None = check fully.
    identity: std::sync::Mutex<Option<crate::storage::FileIdentity>>,
    /// Held by blocking jobs (never a core) while they change the task file's links (an export:
    /// link to a temp name, then rename) or compare its state with `identity` (a cache hit), so a
    /// check never sees an export half done: after the link and before the rename the ctime moves
    /// again with the link count unchanged, which is what an edit in place looks like.
    pub links: std::sync::Mutex<()>,
    /// What this task adds to `Shared::cache_bytes` (0 until laid out and admitted): swapped,
    /// so accounting a task twice or removing it twice never moves the total twice.
    pub(crate) accounted_bytes: AtomicU64,
}

pub use crate::storage::meta::Validators;

impl Task {
    pub fn new(id: String, peer_id: String, spec: Spec, data_path: PathBuf) -> Task {
        Task {
            id,
            peer_id,
            spec,
            data_path,
            started: Instant::now(),
            state: AtomicU8::new(State::Running as u8),
            geometry: OnceLock::new(),
            bitmap: OnceLock::new(),
            crcs: OnceLock::new(),
            partial: OnceLock::new(),
            written_bytes: AtomicU64::new(0),
            next_piece: AtomicU64::new(0),
            completed_bytes: AtomicU64::new(0),
            failure: OnceLock::new(),
            event: crate::wake::Signal::new(),
            watchers: crate::wake::Watchers::default(),
            last_access_unix_ms: AtomicU64::new(now_unix_ms()),
            readers: AtomicUsize::new(0),
            files: std::sync::Mutex::new(()),
            validator: OnceLock::new(),
            requesters: Default::default(),
            validators: OnceLock::new(),
            peer: OnceLock::new(),
            workers: crate::daemon::ramp::Workers::default(),
            identity: std::sync::Mutex::new(None),
            links: std::sync::Mutex::new(()),
            accounted_bytes: AtomicU64::new(0),
        }
    }

    /// Records that `uid` asked for this task.
    pub fn note_requester(&self, uid: u32) {
        self.requesters.note(uid);
    }

    /// Who asked for this task since the daemon started.
    pub fn requesters(&self) -> crate::daemon::requesters::Noted {
        self.requesters.snapshot()
    }

    /// The finished file's identity as last checked by this run (None: never, or invalidated).
    pub fn identity(&self) -> Option<crate::storage::FileIdentity> {
        self.identity.lock().ok().and_then(|g| *g)
    }

    pub fn set_identity(&self, id: Option<crate::storage::FileIdentity>) {
        if let Ok(mut g) = self.identity.lock() {
            *g = id;
        }
    }

    /// Whether piece `idx`'s bytes are written and recorded.
    pub fn piece_done(&self, idx: u64) -> bool {
        self.bitmap.get().is_some_and(|b| b.get(idx))
    }

    /// A task restored from a finished task file on disk (crcs already verified by the caller).
    pub fn finished(id: String, peer_id: String, spec: Spec, data_path: PathBuf, layout: Layout, crcs: &[u32]) -> Task {
        let t = Task::new(id, peer_id, spec, data_path);
        t.set_geometry(Geometry { layout, ranged: true });
        // Set directly, not through `record_piece`: these pieces were fetched before (or by an
        // earlier run), and the fetch counters must not count them again on every revival.
        if let (Some(slots), Some(bitmap)) = (t.crcs.get(), t.bitmap.get()) {
            for (i, c) in crcs.iter().enumerate().take(slots.len()) {
                slots[i].store(*c, Ordering::Release);
                bitmap.set(i as u64);
            }
        }
        t.completed_bytes.store(layout.content_len_bytes, Ordering::Release);
        t.state.store(State::Done as u8, Ordering::Release);
        t
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Acquire) {
            0 => State::Running,
            1 => State::Done,
            _ => State::Failed,
        }
    }

    /// The error that failed the task; `None` unless the task is `Failed`.
    pub fn failure(&self) -> Option<&Error> {
        if self.state() == State::Failed {
            self.failure.get()
        } else {
            None
        }
    }

    /// Pins the task's file against eviction (a cache-hit check, an export). Fails once evicted.
    pub fn pin(self: &std::sync::Arc<Self>) -> Option<ReaderPin> {
        self.readers
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |r| (r & EVICTED == 0).then_some(r + 1))
            .ok()
            .map(|_| ReaderPin(self.clone()))
    }

    pub fn n_readers(&self) -> usize {
        self.readers.load(Ordering::Acquire) & !EVICTED
    }

    /// Claims the task for eviction; fails while anyone has it pinned (or it was claimed already).
    pub fn claim_eviction(&self) -> bool {
        self.readers.compare_exchange(0, EVICTED, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub fn geometry(&self) -> Option<Geometry> {
        self.geometry.get().copied()
    }

    pub fn completed_bytes(&self) -> u64 {
        self.completed_bytes.load(Ordering::Acquire)
    }

    pub fn crcs(&self) -> Vec<u32> {
        self.crcs.get().map(|c| c.iter().map(|a| a.load(Ordering::Acquire)).collect()).unwrap_or_default()
    }

    pub fn pieces_done(&self) -> Vec<bool> {
        self.bitmap.get().map(|b| b.to_vec()).unwrap_or_default()
    }

    pub fn touch(&self) {
        self.last_access_unix_ms.store(now_unix_ms(), Ordering::Release);
    }

    /// A stream of unknown length ended: lay the task out and record the pieces cut on the way.
    pub fn set_streamed_geometry(&self, layout: Layout, crcs: &[u32]) {
        self.set_geometry(Geometry { layout, ranged: false });
        for (i, c) in crcs.iter().enumerate() {
            let (s, e) = layout.piece_range(i as u64).unwrap_or((0, 0));
            self.record_piece(i as u64, *c, e - s);
        }
    }

    pub fn to_meta(&self) -> crate::storage::meta::TaskMeta {
        let g = self.geometry();
        let now = now_unix_ms();
        // One snapshot of the bitmap decides both the pieces and "finished", so they agree.
        let pieces_done = self.pieces_done();
        crate::storage::meta::TaskMeta {
            task_id: self.id.clone(),
            url: self.spec.display_url.clone(),
            content_len: g.map(|g| g.layout.content_len_bytes),
            piece_len: g.map(|g| g.layout.piece_len_bytes).unwrap_or(DEFAULT_PIECE_LEN_BYTES),
            finished_unix_ms: (g.is_some() && pieces_done.iter().all(|d| *d)).then_some(now),
            piece_crcs: self.crcs(),
            digest: self.spec.digest.clone(),
            created_unix_ms: now.saturating_sub(self.started.elapsed().as_millis() as u64),
            last_access_unix_ms: self.last_access_unix_ms.load(Ordering::Acquire),
            validator: self.validator.get().cloned(),
            private: self.spec.private,
            validators: self.validators.get().cloned(),
            partial: if g.is_some_and(|g| g.ranged) { self.partial_pieces(&pieces_done) } else { Vec::new() },
            pieces_done,
        }
    }

    /// Lays the task out, once: a second call is ignored (the first response decides the geometry).
    pub(crate) fn set_geometry(&self, g: Geometry) {
        let n = g.layout.n_pieces();
        let _ = self.geometry.set(g);
        let _ = self.bitmap.set(AtomicBitmap::new(n));
        let _ = self.crcs.set((0..n).map(|_| AtomicU32::new(0)).collect());
        let _ = self.partial.set((0..n).map(|_| AtomicU64::new(0)).collect());
    }

    /// A fetch of piece `piece_idx` has its first `len_bytes` on disk, with crc32 `crc`.
    pub fn note_partial(&self, piece_idx: u64, len_bytes: u64, crc: u32) {
        debug_assert!(len_bytes <= crate::limits::MAX_PIECE_LEN_BYTES);
        if let Some(p) = self.partial.get().and_then(|p| p.get(piece_idx as usize)) {
            p.store(len_bytes << 32 | crc as u64, Ordering::Release);
        }
    }

    /// How far piece `piece_idx`'s fetch got: (bytes on disk, their crc32); (0, 0) for none.
    pub fn partial_of(&self, piece_idx: u64) -> (u64, u32) {
        let v = self.partial.get().and_then(|p| p.get(piece_idx as usize)).map(|a| a.load(Ordering::Acquire));
        v.map(|v| (v >> 32, v as u32)).unwrap_or((0, 0))
    }

    pub fn add_written(&self, n_bytes: u64) {
        self.written_bytes.fetch_add(n_bytes, Ordering::Relaxed);
    }

    pub fn written_bytes(&self) -> u64 {
        self.written_bytes.load(Ordering::Relaxed)
    }

    /// The pieces in flight (not done, something on disk), for the metadata.
    fn partial_pieces(&self, pieces_done: &[bool]) -> Vec<crate::storage::meta::PartialPiece> {
        let g = self.geometry();
        (0..pieces_done.len() as u64)
            .filter(|&i| !pieces_done[i as usize])
            .filter_map(|idx| {
                let (len_bytes, crc) = self.partial_of(idx);
                let piece_len = g.and_then(|g| g.layout.piece_range(idx)).map(|(s, e)| e - s).unwrap_or(0);
                (len_bytes > 0 && len_bytes < piece_len).then_some(crate::storage::meta::PartialPiece {
                    idx,
                    len_bytes,
                    crc,
                })
            })
            .collect()
    }

    /// Records a piece whose bytes are written: crc first, then its bit, then a wake-up.
    pub(crate) fn record_piece(&self, piece_idx: u64, crc: u32, len_bytes: u64) {
        if let (Some(crcs), Some(bitmap)) = (self.crcs.get(), self.bitmap.get()) {
            crcs[piece_idx as usize].store(crc, Ordering::Release);
            if bitmap.set(piece_idx) {
                self.completed_bytes.fetch_add(len_bytes, Ordering::AcqRel);
                counters::bump(&counters::PIECES_FETCHED, 1);
                counters::bump(&counters::BYTES_FETCHED, len_bytes);
            }
        }
        self.event.notify();
        self.watchers.notify();
    }

    /// Records a piece whose bytes another peer sent and whose crc was checked (`p2p::fetch`).
    pub fn record_fetched_piece(&self, piece_idx: u64, crc: u32, len_bytes: u64) {
        self.record_piece(piece_idx, crc, len_bytes);
    }

    pub fn all_pieces_done(&self) -> bool {
        self.bitmap.get().is_some_and(|b| b.is_full())
    }

    /// Running → Failed. First failure wins; later ones are consequences and are dropped. A task
    /// already Done stays Done (returns false).
    pub fn fail(&self, e: Error) -> bool {
        let _ = self.failure.set(e);
        let won = self.transition(State::Failed);
        self.event.notify();
        self.watchers.notify();
        won || self.state() == State::Failed
    }

    /// Running → Done; false when the task failed meanwhile (an operator's removal, say).
    pub fn mark_done(&self) -> bool {
        let won = self.transition(State::Done);
        self.event.notify();
        self.watchers.notify();
        won
    }

    fn transition(&self, to: State) -> bool {
        self.state.compare_exchange(State::Running as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    /// Points the piece cursor at `piece_idx` (1 when the first response carries piece 0).
    pub(crate) fn start_cursor_at(&self, piece_idx: u64) {
        self.next_piece.store(piece_idx, Ordering::Release);
    }

    /// Where the cursor stands: pieces below it are taken (a trading task starts above them).
    pub(crate) fn cursor(&self) -> u64 {
        self.next_piece.load(Ordering::Acquire)
    }

    /// The next piece no worker took yet that is not already on disk: one-piece runs (`take_run`).
    pub fn take_piece(&self) -> Option<u64> {
        // Pieces restored from a previous run are already on disk.
        std::iter::from_fn(|| self.take_run(1)).map(|(idx, _)| idx).find(|&idx| !self.piece_done(idx))
    }

    /// Takes up to `max` consecutive pieces no worker took yet, in one step: (first, count). Some
    /// may have been restored from a previous run (`piece_done`); the caller skips those.
    pub fn take_run(&self, max: u64) -> Option<(u64, u64)> {
        let g = self.geometry()?;
        if !g.ranged || self.state() != State::Running {
            return None;
        }
        let max = max.max(1);
        let first = self.next_piece.fetch_add(max, Ordering::AcqRel);
        let n = g.layout.n_pieces();
        (first < n).then(|| (first, max.min(n - first)))
    }

    /// Lays out a task resumed from a previous run's metadata and records the pieces it had (and
    /// how far the pieces then in flight got).
    pub fn resume_from(
        &self,
        layout: Layout,
        done: &[bool],
        crcs: &[u32],
        partial: &[crate::storage::meta::PartialPiece],
    ) {
        self.set_geometry(Geometry { layout, ranged: true });
        for p in partial {
            self.note_partial(p.idx, p.len_bytes, p.crc);
        }
        for (idx, (ok, crc)) in done.iter().zip(crcs).enumerate() {
            if *ok {
                let (s, e) = layout.piece_range(idx as u64).unwrap_or((0, 0));
                self.record_piece(idx as u64, *crc, e - s);
            }
        }
        self.next_piece.store(0, Ordering::Release);
    }

    /// Pieces no worker has taken yet (an upper bound: some below the cursor may be restored).
    pub fn pieces_untaken(&self) -> u64 {
        let n = self.geometry().map(|g| g.layout.n_pieces()).unwrap_or(0);
        n.saturating_sub(self.next_piece.load(Ordering::Acquire))
    }

    pub fn n_pieces_done(&self) -> u64 {
        self.bitmap.get().map(|b| b.count()).unwrap_or(0)
    }
}

/// A finished task at rest: what a cache hit, a listing, the GC and `tasks rm` need of it, and
/// nothing of its download (transport options, headers, bitmap, partial prefixes, wake state,
/// worker counters). The index keeps only live tasks; a finished one nobody reads moves here
/// (`cache::rest`) and a request for it rebuilds the full `Task` (`Task::revived`), so a cache of
/// 100,000 small files costs a few hundred bytes each instead of ~1.8 KiB.
pub struct Resting {
    pub url: Box<str>,
    pub digest: Option<crate::digest::Digest>,
    pub layout: Layout,
    pub crcs: Box<[u32]>,
    /// The file's identity as this run last checked it (None: check fully on the next hit).
    pub identity: Option<crate::storage::FileIdentity>,
    pub last_access_unix_ms: u64,
    /// `Task::requesters`, carried over so `tasks ls` and `tasks rm` keep their rules.
    pub requesters: crate::daemon::requesters::Noted,
}

impl Task {
    /// The resting state of a finished task, or None when it must stay live: not done, private
    /// (its validator and revalidation stay with it) or known to a cluster (peers read it).
    pub fn to_resting(&self) -> Option<Resting> {
        let g = self.geometry()?;
        if self.state() != State::Done || self.spec.private || self.peer.get().is_some() {
            return None;
        }
        Some(Resting {
            url: self.spec.display_url.as_str().into(),
            digest: self.spec.digest.clone(),
            layout: g.layout,
            crcs: self.crcs().into_boxed_slice(),
            identity: self.identity(),
            last_access_unix_ms: self.last_access_unix_ms.load(Ordering::Acquire),
            requesters: self.requesters.snapshot(),
        })
    }

    /// The full task again, from its resting state: finished, with the crcs, identity, access
    /// time and requesters it rested with. `spec` is the request that revives it (its transport);
    /// what the task is (URL shown, digest, length, public) comes from the resting state.
    pub fn revived(id: String, peer_id: String, mut spec: Spec, data_path: PathBuf, rest: &Resting) -> Task {
        spec.display_url = rest.url.to_string();
        spec.digest = rest.digest.clone();
        spec.expected_len = Some(rest.layout.content_len_bytes);
        spec.private = false;
        spec.cluster_id = None;
        let mut t = Task::finished(id, peer_id, spec, data_path, rest.layout, &rest.crcs);
        t.set_identity(rest.identity);
        t.last_access_unix_ms.store(rest.last_access_unix_ms, Ordering::Release);
        t.requesters = crate::daemon::requesters::Requesters::restored(&rest.requesters);
        t
    }
}

const EVICTED: usize = 1 << (usize::BITS - 1);

/// A reader's hold on a task's file; released on drop.
pub struct ReaderPin(std::sync::Arc<Task>);

impl Drop for ReaderPin {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::AcqRel);
        self.0.event.notify();
    }
}
