//! Every size and count limit of the project, in one place, each with the reason it has that value.
//!
//! Invariant: no other module hard-codes a bound on what a peer (origin, registry, proxy, local
//! client) can make us buffer or repeat; it names a constant here instead, so the whole set can be
//! reviewed together. Relations between limits are checked at compile time below.

// ---- HTTP client (src/http) -------------------------------------------------------------------

/// Bytes of response head (status line + headers, including any skipped 1xx interim heads) we
/// buffer before giving up. Real response heads (registries, object stores, CDNs) are a few KiB;
/// 64 KiB leaves room for long `Link`/`Set-Cookie` fields and bounds the memory a hostile origin
/// can pin per connection.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Header fields in one response head. httparse needs a fixed slot array; 100 is hyper's default
/// and far above the ~30 a registry or CDN sends.
pub const MAX_HEADERS: usize = 100;

/// 1xx interim responses (100 Continue, 103 Early Hints) skipped before the final head. The byte
/// budget already bounds them; the count makes a "103 flood" a clear error instead of a long loop.
pub const MAX_INTERIM_RESPONSES: usize = 16;

/// Bytes of one chunk-size line (hex size + chunk extensions, without the line ending). A size
/// needs at most 16 hex digits; the rest is for extensions, which nobody we talk to sends.
pub const MAX_CHUNK_LINE_BYTES: usize = 1024;

/// Bytes of the trailer section after the last chunk (we skip trailers; this only bounds the
/// skipping so a peer cannot keep a body "open" forever with an endless trailer).
pub const MAX_TRAILER_BYTES: usize = 16 * 1024;

/// Redirects followed for one request. Go's net/http (so Dragonfly's dfget) stops after 10;
/// registries need one hop (blob 307 to storage).
pub const MAX_REDIRECTS: usize = 10;

/// Bytes of one user-supplied request header line (`name: value`). nginx rejects a request line
/// or header longer than its default `large_client_header_buffers` buffer of 8 KiB with 400/494,
/// so a longer header could never work anyway: reject it at input with a clear message.
pub const MAX_REQUEST_HEADER_BYTES: usize = 8 * 1024;

/// User-supplied request headers (`-H`) per request. A handful is normal (auth, cookies, a
/// custom token); 64 leaves room for scripts while bounding the request head we build.
pub const MAX_REQUEST_HEADERS: usize = 64;

// A chunk-size line must at least hold the 16 hex digits of a u64 size.
const _: () = assert!(MAX_CHUNK_LINE_BYTES >= 16);
// A chunk line or the trailer section is never a bigger buffer than the head we already accept.
const _: () = assert!(MAX_CHUNK_LINE_BYTES <= MAX_HEAD_BYTES);
const _: () = assert!(MAX_TRAILER_BYTES <= MAX_HEAD_BYTES);
// The smallest header line is "a:\r\n" (4 bytes): the count limit must be the one that bites
// before the byte limit for a flood of tiny headers, else MAX_HEADERS would be dead code.
const _: () = assert!(MAX_HEADERS * 4 < MAX_HEAD_BYTES);
// RFC 2068 §10.3 told clients to allow 5 redirects before calling it a loop; fewer would break
// real registry → storage → CDN chains.
const _: () = assert!(MAX_REDIRECTS >= 5);

// ---- Daemon (src/daemon, src/client) -------------------------------------------------------------

/// Socket read buffer per HTTP connection. 256 KiB lets one io_uring read drain a fast loopback or
/// LAN socket's receive queue in a few calls without pinning much memory per pooled connection.
pub const READ_BUF_BYTES: usize = 256 * 1024;

/// Body bytes gathered before one positional write into the task file: big enough that a 4 MiB
/// piece is four writes, small enough that every worker's buffer together stays in the tens of MiB.
pub const WRITE_CHUNK_BYTES: usize = 1024 * 1024;
/// From a slow origin, a write happens once about this much time's bytes arrived (never less than
/// `MIN_WRITE_CHUNK_BYTES`): bytes held in a buffer are lost at a crash and not yet resumable, and
/// a capped origin gets up to `MAX_PIECE_WORKERS_PER_TASK` such buffers at once (32 connections at
/// 4 MB/s hold ~3 MB in all at 25 ms, 13 MB at 100 ms). A fast origin still fills whole chunks.
pub const WRITE_CHUNK_MAX_AGE: std::time::Duration = std::time::Duration::from_millis(25);
pub const MIN_WRITE_CHUNK_BYTES: usize = 64 * 1024;
const _: () = assert!(MIN_WRITE_CHUNK_BYTES <= WRITE_CHUNK_BYTES);

/// Concurrent piece workers per core per task, the bound of the connection ramp (`daemon::ramp`).
/// Each owns one connection; the ramp only gets there while every doubling raised the measured
/// throughput by `RAMP_GAIN` (an origin capping each connection), so an uncapped origin still keeps
/// one or two. 16 per core (32 on 2 cores) lets a 25 MiB/s-per-flow origin fill 800 MiB/s, past the
/// page-cache write rate of a small host, i.e. twice what an 8-connection client can get.
pub const PIECE_WORKERS_PER_CORE: usize = 16;
/// The most piece workers (origin connections) of one task whatever the core count: past 64 one
/// task's connections look like abuse to an origin, and every worker holds up to
/// `WRITE_CHUNK_BYTES` + `READ_BUF_BYTES` of buffers (64 × 1.25 MiB = 80 MiB at worst).
pub const MAX_PIECE_WORKERS_PER_TASK: usize = 64;
/// A piece worker asks for up to this many consecutive pieces in one ranged GET (64 MiB of 4 MiB
/// pieces): every request costs the origin a lookup and often a fresh read buffer
/// (docker-registry 2.8 spent ~1.1 CPU-s more per GiB serving 256 one-piece requests than one
/// stream, on a 2-core host where that CPU is the download's), and costs us a head to parse.
pub const MAX_SPAN_PIECES: u64 = 16;
/// A worker's run of pieces is sized to about this long at its last measured rate, so a slow or
/// capped connection asks for one piece at a time (its pieces land, and are resumable, promptly)
/// while a fast one streams 64 MiB per request.
pub const SPAN_TARGET: std::time::Duration = std::time::Duration::from_millis(250);

/// Piece workers per core of a task trading with cluster parents, all started at once (the ramp
/// measures an origin's per-connection cap, which parents do not have): enough requests in flight
/// to spread a child over its parents, the count the swarm benchmark measured.
pub const TRADING_WORKERS_PER_CORE: usize = 4;

/// Throughput a doubling of a task's ranged connections must add (×) to be kept
/// (`daemon::ramp`). Below 1.25 the measurement noise of a busy host decides; above it, an origin
/// that caps each connection (where a doubling gives ×2) still passes every step.
pub const RAMP_GAIN: f64 = 1.25;

/// Two ramp steps in a row whose gain was at least this share of their factor (×2 gave ≥ 1.6×:
/// each new connection brought nearly a whole connection's rate, as under a per-connection cap)
/// make the next steps ×`RAMP_MAX_FACTOR`. Loopback and LAN origins do not scale like that twice.
pub const RAMP_LINEAR: f64 = 0.8;
pub const RAMP_MAX_FACTOR: usize = 4;

/// Length of one throughput measurement of the ramp. 200 ms is ~200 MB on loopback and 5 MiB per
/// connection at a 25 MiB/s cap: long enough that a busy 2-core host's scheduling noise does not
/// decide, short enough that a capped download reaches 32 connections (1 → 2 → 4 → 16 → 32)
/// within about 0.8 s.
pub const RAMP_WINDOW: std::time::Duration = std::time::Duration::from_millis(200);

/// Windows the ramp rests at a count after a doubling did not pay, before it probes again: one
/// extra connection for one window in six on an uncapped origin, and a wrong verdict (noise, or a
/// cap that starts later) is undone within ~1 s.
pub const RAMP_REST_WINDOWS: u32 = 5;

/// How often the digest thread looks for the next finished piece (`engine::hash_along`): task
/// signals wake runtime threads only. 2 ms is ~2 MB at loopback speed, noise next to a piece.
pub const HASH_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// Attempts per request (first try + retries) for retryable failures (reset, timeout, 5xx).
pub const MAX_ATTEMPTS: u32 = 3;

/// Linear backoff step between attempts, in milliseconds.
pub const RETRY_BACKOFF_MS: u64 = 100;

/// Longest `Retry-After` (429/503) honoured with a wait. An origin asking for more gets an error
/// now instead: a user waiting on `dfget` learns the reason at once rather than after minutes of
/// silent backoff, and `MAX_ATTEMPTS` such waits stay under half a minute.
pub const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(10);

/// Error bodies (a 401's or 404's page) read and dropped so the connection can be reused; a
/// longer one closes the connection instead.
pub const MAX_ERROR_BODY_BYTES: usize = 64 * 1024;

/// A running task's progress (finished pieces, and how far the ones in flight got) is checkpointed
/// (metadata rewritten on a blocking thread, nothing synced) at least this often, and sooner once
/// `META_FLUSH_BYTES` were written since the last save, but never more often than
/// `META_FLUSH_MIN_INTERVAL`. A SIGKILL loses what was written since the last save: at most ~2 MiB
/// or 500 ms of bytes, whichever is less (above 80 MiB/s: 25 ms of bytes). A save is one small
/// file write and a rename (~0.1 ms), so 40 a second cost a fast download nothing measurable, and
/// a capped origin's 32 connections lose ~3 MB per kill instead of ~13 MB.
pub const META_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(500);
pub const META_FLUSH_BYTES: u64 = 2 << 20;
pub const META_FLUSH_MIN_INTERVAL: std::time::Duration = std::time::Duration::from_millis(25);
const _: () = assert!(META_FLUSH_MIN_INTERVAL.as_millis() < META_FLUSH_INTERVAL.as_millis());

/// How long a request waits for a failed task's cleanup before looking again (the cleanup is a
/// directory removal; this only bounds a wait that should end in milliseconds).
pub const FAILED_TASK_CLEANUP_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Time a client has to send one complete API (or metrics) request after connecting.
pub const API_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The front door (`daemon/front.rs`): how long it waits for a new connection's first bytes (or
/// the rest of a health request's head) before handing it to a core undecided. Clients write
/// their request right after connecting; this only bounds what a silent one costs the front.
pub const FRONT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);
/// Connections the front waits on at once; past it the oldest goes to a core undecided.
pub const FRONT_PENDING: usize = 512;
/// Connections accepted per turn before the waiting ones get a look.
pub const FRONT_ACCEPT_BATCH: usize = 256;
/// The longest the front sleeps in `poll` before looking at the shutdown flag.
pub const FRONT_TICK: std::time::Duration = std::time::Duration::from_millis(100);
/// Pause after a failed accept (out of fds): the listener stays readable, so no spinning.
pub const FRONT_ACCEPT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);
/// Bytes the front peeks at: a health request's head is ~50; a longer head is a core's.
pub const FRONT_PEEK_BYTES: usize = 512;
const _: () = assert!(FRONT_WAIT.as_millis() < API_REQUEST_TIMEOUT.as_millis());
const _: () = assert!(FRONT_PEEK_BYTES <= MAX_HEAD_BYTES);

/// Body of one socket API request (a download request is a URL, a path and a few headers).
pub const MAX_API_BODY_BYTES: usize = 1024 * 1024;

/// How long one request may wait for its task to become usable (a failed task's cleanup, other
/// clients' exports of a task being retired) before giving up with an error.
pub const TASK_RESOLVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Longest a client may leave one progress line unread before the daemon drops it.
pub const CLIENT_WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// Least time between two progress events on one client stream.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// Upper bound of `--cores`: one runtime and ring per core; beyond this the rings' memory and the
/// origin's connection count grow with no gain for one host's downloads.
pub const MAX_CORES: usize = 256;

/// Idle time after which a daemon that `dfget` spawned (not one an operator started) exits, as
/// Dragonfly's does, so a one-off download does not leave a daemon behind forever.
pub const SPAWNED_ALIVE_TIME: std::time::Duration = std::time::Duration::from_secs(300);

/// How long `dfget` waits for a daemon it spawned to answer, and how often it asks.
pub const SPAWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
pub const SPAWN_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// How long `dfget tasks`/`gc` waits for the daemon's answer to one control request: a listing
/// or a gc pass over a large cache takes seconds, a daemon that says nothing for a minute is hung.
pub const CONTROL_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How often the client's progress bar redraws while no event arrives (rate and eta keep moving);
/// the daemon's `PROGRESS_INTERVAL`, so a redraw rarely goes without news.
pub const PROGRESS_BAR_TICK: std::time::Duration = PROGRESS_INTERVAL;

// ---- Callers (src/daemon/caller.rs) -----------------------------------------------------------

/// Supplementary groups kept for one caller. Linux allows 65536 (NGROUPS_MAX); real users have a
/// few dozen. Dropping the rest only ever takes rights away from the job, never adds any.
pub const MAX_CALLER_GROUPS: usize = 1024;

/// Distinct users a task remembers as its requesters (who may see it in `tasks ls`, and remove
/// it when alone): eight words per task. A ninth user still downloads it but is not remembered:
/// the task is not listed for it and not its to remove (fewer rights, never more).
pub const MAX_TASK_REQUESTERS: usize = 8;

/// Threads acting as callers (exports) at once. Each is a short file operation (a link, or a
/// copy bounded by the disk); beyond this, a burst of finishing clients waits its turn rather
/// than spawning thousands of threads.
pub const MAX_CALLER_THREADS: usize = 64;

/// How often a request waiting for a free caller thread looks again. A local timer, never a
/// wake-up from another core.
pub const CALLER_THREAD_POLL: std::time::Duration = std::time::Duration::from_millis(2);

// ---- Lists (`dfget -i`, `dfget prefetch`, `POST /batch`) ----------------------------------------

/// Bytes of one line of a list. A URL with its query is at most a few KiB (browsers and nginx
/// stop at 8 KiB for the request line); 64 KiB leaves room for long `header=` lines while
/// bounding what one line can make the client buffer.
pub const MAX_LIST_LINE_BYTES: usize = 64 * 1024;

/// Stripes of the locks that serialise one id's move between the live index and the resting
/// map (`Shared::rest_locks`): moves of different ids rarely share a stripe, and each holds it for
/// a few map operations only.
pub const REST_LOCK_STRIPES: usize = 64;

/// Upper bound of `-j`: entries in flight hold a task, a pin and a file each; beyond a few
/// hundred the origin, not the daemon, is the limit.
pub const MAX_BATCH_JOBS: usize = 1024;

/// Entries a batch keeps in flight per daemon core when the client does not choose (`-j`): small
/// files are bound by round trips, file creation and the finish's syncs, so several per core
/// overlap those waits. PERF.md ("Lists"): -j 4, 16 and 64 on 2 cores all beat aria2c -j16 by
/// 1.9–2.9×, with no difference between them beyond the run-to-run spread.
pub const BATCH_JOBS_PER_CORE: usize = 8;

/// Bytes read from a batch connection at once: dozens of entries per read, one buffer per list.
pub const BATCH_READ_BYTES: usize = 64 * 1024;

/// How long a batch connection may send nothing while the daemon waits for its next entry. A
/// list piped from a slow generator is legitimate; a client that hangs holds one fd and no task.
pub const BATCH_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

const _: () = assert!(MAX_LIST_LINE_BYTES >= MAX_REQUEST_HEADER_BYTES);
const _: () = assert!(BATCH_JOBS_PER_CORE * MAX_CORES >= MAX_BATCH_JOBS);

const _: () = assert!(WRITE_CHUNK_BYTES as u64 <= crate::piece::DEFAULT_PIECE_LEN_BYTES);

/// Largest piece: Dragonfly's cap in its piece-size rule (`piece::piece_len_for`), so one piece's
/// retry cost and write buffer stay bounded. Also the most a `meta.json` may record and a parent
/// may announce (a longer one is not from a Dragonfly peer).
pub const MAX_PIECE_LEN_BYTES: u64 = 64 << 20;
const _: () = assert!(MAX_ATTEMPTS >= 1);

/// Runtime threads that can listen to a cross-core `wake::Signal` at once (one relay slot each):
/// every core plus the few other runtimes a process may run (the client's direct download).
pub const MAX_RELAY_SLOTS: usize = 512;
/// A listener on a thread that found no free relay slot looks at its signal this often instead.
pub const WAKE_FALLBACK_POLL: std::time::Duration = std::time::Duration::from_millis(10);
const _: () = assert!(MAX_RELAY_SLOTS > MAX_CORES);

/// From SIGTERM to exit, whatever is running: cores get this long to stop and park their tasks;
/// after it the process exits anyway (the last saved progress, ≤ `META_FLUSH_INTERVAL` old, is
/// what a restart resumes from). Under the 5 s an init system or test gives before SIGKILL.
pub const STOP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(4);

/// File descriptors kept back from clients when the daemon says how many it can hold: task files
/// and origin connections per core, the log, the listener, blocking-pool work. The accept loop
/// holds at most `RLIMIT_NOFILE - RESERVED_FDS` client connections (`daemon::slots`) and answers
/// the next one 503, so clients alone can never exhaust the descriptors.
pub const RESERVED_FDS: u64 = 256;

/// Client connections allowed however low the open-file limit: a daemon under `ulimit -n 256`
/// still serves a few clients (there `accept` failing with EMFILE, which pauses the loop, is the
/// backstop).
pub const MIN_CLIENT_SLOTS: usize = 16;

// ---- ORAS registries (src/source/oras) ------------------------------------------------------------

/// 429 answers a registry request waits out (each at most `MAX_RETRY_AFTER`) before giving up: a
/// registry that keeps refusing is not going to let this pull through soon, and every core's
/// piece workers would otherwise queue up behind it.
pub const MAX_RATE_LIMIT_WAITS: usize = 5;

/// The first wait after a 429 without a usable `Retry-After`; it doubles on each further 429.
pub const RATE_LIMIT_DEFAULT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

// One registry request never sits out 429s for more than a minute in all.
const _: () = assert!(MAX_RETRY_AFTER.as_secs() * MAX_RATE_LIMIT_WAITS as u64 <= 60);
const _: () = assert!(RATE_LIMIT_DEFAULT_WAIT.as_secs() <= MAX_RETRY_AFTER.as_secs());

// ---- peer-to-peer (src/p2p/) ----

/// Largest Vortex packet value read into memory (piece metadata or an error message; piece bytes
/// are streamed, never buffered whole): metadata is ~100 bytes plus a digest and a peer id.
pub const MAX_VORTEX_VALUE_BYTES: usize = 64 * 1024;

/// Uploads served at once by this daemon (Dragonfly's default `upload.server` concurrency is of
/// this order); more connections wait in the listen backlog instead of each costing a buffer.
pub const MAX_CONCURRENT_UPLOADS: usize = 64;

/// How long one Vortex exchange (request read, piece written) may take before the server drops
/// it: a child that stops reading must not hold an upload slot forever.
pub const UPLOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// How long a new Vortex connection may take to send its whole request (one small packet, sent
/// right after the connect by any real child) before the server closes it. It holds no upload
/// slot meanwhile, so connections that never send theirs cannot lock real peers out; this bounds
/// the socket each one costs.
pub const UPLOAD_REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Vortex connections per core still waiting for their request. One more closes the oldest of
/// them: a real child's request arrives a round trip after its connect, so idle connections
/// opened in a flood push out each other long before they could push out a real one, and a
/// flood costs at most this many sockets per core.
pub const MAX_WAITING_UPLOAD_REQUESTS_PER_CORE: usize = 64;

/// SyncPieces streams open at once on one task of this parent: a child keeps one per parent, and
/// every upload of a task wakes each of its streams on the control-plane thread, so a peer opening
/// streams without end would starve the scheduler conversation of the others.
pub const MAX_SYNC_STREAMS_PER_TASK: usize = 128;

/// How long a child waits for one piece from a parent before trying elsewhere.
pub const PARENT_PIECE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Reschedules per task before the daemon gives up on peers and takes the rest from the origin
/// (Dragonfly's scheduler `retryLimit` default is of this order; the issue says at most 5).
pub const MAX_RESCHEDULES: u32 = 5;

/// Time to connect to the scheduler or to a parent's gRPC port before treating it as unreachable.
pub const SCHEDULER_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Longest wait for the scheduler's first answer to a peer registration.
pub const SCHEDULER_REGISTER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Interval of the host announcement refresh (Dragonfly's dfdaemon default announce interval is 5m;
/// shorter keeps a restarted scheduler's view of this host fresh).
pub const HOST_ANNOUNCE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

/// Messages queued between the compio cores and the control-plane thread; a full queue drops
/// piece reports (the scheduler treats them as hints) rather than block a core.
pub const CONTROL_QUEUE_DEPTH: usize = 4096;

/// Longest wait for one manager's ListSchedulers answer before the next manager is asked.
pub const MANAGER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// While the manager has given no scheduler (unreachable, or none registered yet) it is asked again
/// this often rather than after the whole `scheduler.manager.refreshInterval` (Dragonfly's default
/// 10m), so a daemon started before its cluster joins it soon after a scheduler registers.
pub const MANAGER_RETRY_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);

/// The shortest `scheduler.manager.refreshInterval` honoured: every refresh is a database query on
/// the manager (its cache aside), multiplied by every host of the cluster.
pub const MIN_MANAGER_REFRESH: std::time::Duration = std::time::Duration::from_secs(1);

/// A piece worker waiting for a parent to announce its piece gives up after this long without any
/// announcement from any parent: the swarm is stuck, and the origin is faster than waiting.
pub const PARENT_STALL: std::time::Duration = std::time::Duration::from_secs(5);

/// A child with other parents waits this long for a piece only the source parent (the one that
/// went back to source) holds before asking that parent (`p2p::pick::usable`): long enough for the
/// children that have no other parent to fetch it (a 4 MiB piece takes 40 ms at 100 MiB/s) and for
/// a sibling to announce it, short enough that a piece nobody else gets costs a second, not the
/// download.
pub const SOURCE_PARENT_HOLD: std::time::Duration = std::time::Duration::from_millis(1000);

const _: () = assert!(MAX_PIECE_LEN_BYTES <= u32::MAX as u64);
const _: () = assert!(PARENT_PIECE_TIMEOUT.as_secs() < UPLOAD_TIMEOUT.as_secs());
const _: () = assert!(UPLOAD_REQUEST_TIMEOUT.as_secs() < PARENT_PIECE_TIMEOUT.as_secs());
const _: () = assert!(SOURCE_PARENT_HOLD.as_millis() < PARENT_STALL.as_millis());
