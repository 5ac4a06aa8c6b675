//! The download engine: `drive` (home core: first request, layout, the connection ramp, finalize),
//! `piece_worker` (any core: fetch ranged pieces until the cursor runs out or the ramp retires it),
//! `write_body`, which streams a response into the task file, cutting it into crc'd pieces, and
//! the digest check that hashes the file while it downloads.
//!
//! Invariant: exactly one `drive` runs per task (the request that created the task's index entry
//! spawns it); piece workers never finalize, they only fill pieces and report failures.

use std::sync::Arc;
use std::time::Duration;

use compio::buf::BufResult;
use compio::fs::OpenOptions;
use compio::io::AsyncWriteAtExt;

use crate::daemon::first_response::{self, FirstResponse};
use crate::daemon::judge::{self, PieceAsked};
use crate::daemon::ramp::{Ramp, Step};
use crate::daemon::serving::blocking;
use crate::daemon::shared::Shared;
use crate::daemon::task::{Geometry, State, Task};
use crate::daemon::{cache, counters, rate};
use crate::error::{Error, Result};
use crate::http::client;
use crate::limits;
use crate::piece::cutter::Cutter;
use crate::piece::{Layout, DEFAULT_PIECE_LEN_BYTES};

/// Runs a task to completion on the home core. Never panics on bad input: every failure ends in
/// `task.fail` plus cleanup, and the index entry is dropped so the next request starts afresh.
pub async fn drive(shared: Arc<Shared>, task: Arc<Task>) {
    let result = until_failed(&task, async {
        let hashing = download(&shared, &task).await?;
        finalize(&shared, &task, hashing).await
    })
    .await;
    // Logged before `mark_done`: a subscriber can tell its client "done" only after that, so the
    // line is in core.log when `dfget` returns. `mark_done` loses only to a failure recorded in
    // that instant (an operator's `rm --force`): then a "failed" line follows and it is a failed
    // task like any other.
    if let Some(peer) = task.peer.get() {
        let report = match &result {
            Ok(()) => crate::p2p::peer::Report::Finished,
            Err(e) => crate::p2p::peer::Report::Failed(e.message.clone()),
        };
        peer.report(report);
    }
    let done = match result {
        Ok(()) => {
            tracing::info!(
                target: "PeerTask",
                peer = %task.peer_id,
                task = %task.id,
                component = "PeerTask",
                "peer task done, cost: {}ms",
                task.started.elapsed().as_millis()
            );
            task.mark_done()
        }
        Err(e) => !task.fail(e),
    };
    if done {
        counters::bump(&counters::DOWNLOADS_DONE, 1);
        return;
    }
    counters::bump(&counters::DOWNLOADS_FAILED, 1);
    // The first failure wins (an operator's `rm --force` rather than its echo here).
    let e = task.failure().cloned().unwrap_or_else(|| Error::internal("task failed"));
    tracing::error!(
        target: "PeerTask",
        peer = %task.peer_id,
        task = %task.id,
        component = "PeerTask",
        source = e.source.as_str(),
        "peer task failed: {e}"
    );
    // Only `drive` removes a failed task, and it keeps the index entry until its files are gone: a
    // request that finds the failed entry waits for it to disappear, so a new task for the same id
    // never has its files deleted by this cleanup.
    if let Some(node) = &shared.p2p {
        node.forget(&task);
    }
    let (sh, t) = (shared.clone(), task.clone());
    let _ = blocking(move || {
        let _files = t.files.lock().map_err(|_| Error::internal("task files lock poisoned"))?;
        sh.store.remove_task(&t.id)
    })
    .await;
    shared.index.remove_if_same(&task.id, &task);
    cache::unaccount(&shared, &task);
    task.event.notify();
}

/// Fills the task file. Returns the digest check running alongside, if any (see `Hashing`).
async fn download(shared: &Arc<Shared>, task: &Arc<Task>) -> Result<Option<Hashing>> {
    if resume(shared, task).await? {
        cache::account(shared, task);
        let hashing = Hashing::start(task);
        wait_all_pieces(shared, task).await?;
        return Ok(hashing);
    }
    let first = with_retries(|| first_response::first_request(task)).await?;
    cache::admit(shared, task).await?;
    let mut hashing = None;
    match first {
        FirstResponse::Empty => {
            shared.store.create_task_file(&task.id, Some(0))?;
        }
        FirstResponse::Ranged { mut resp, piece0 } => {
            let g = task.geometry().ok_or_else(|| Error::internal("ranged response without geometry"))?;
            shared.store.create_task_file(&task.id, Some(g.layout.content_len_bytes))?;
            let trading = join_cluster(shared, task, g.layout).await;
            hashing = Hashing::start(task);
            if g.layout.n_pieces() > 1 || !piece0 {
                // Trading: `trading_workers` from the start (the ramp stays settled), since requests in
                // flight are what spreads a child over its parents, and the ramp measures an
                // origin's per-connection cap, which parents do not have.
                shared.grow_workers(task, if trading { shared.trading_workers() } else { 1 });
            }
            if piece0 {
                let file = open_task_file(task).await?;
                let len = g.layout.piece_range(0).map(|(s, e)| e - s).unwrap_or(0);
                let t0 = std::time::Instant::now();
                let got = write_body(task, &mut resp, &file, 0, g.layout.piece_len_bytes, Some(len), (0, 0)).await;
                if got.is_ok() {
                    report_origin_piece(task, g.layout, 0, t0);
                }
                if let Err(e) = got {
                    if !e.retryable {
                        return Err(e);
                    }
                    // The first response broke mid-body: fetch piece 0 again like any other piece.
                    tracing::warn!(task = %task.id, "first response broke mid-body, fetching piece 0 again: {e}");
                    drop(resp);
                    fetch_piece_with_retries(task, &file, g.layout, 0).await?;
                }
            }
        }
        FirstResponse::Stream { mut resp, len_bytes } => {
            shared.store.create_task_file(&task.id, len_bytes)?;
            // Known length: the geometry is set and pieces are recorded as the stream is cut.
            hashing = Hashing::start(task);
            stream_whole(task, &mut resp, len_bytes).await?;
            // An unknown length is known now: the task joins the total (a known one already did).
            cache::account(shared, task);
        }
    }
    wait_all_pieces(shared, task).await?;
    Ok(hashing)
}

/// With a cluster configured, registers the laid-out task with the scheduler before the piece
/// workers start, so they know whether to ask parents first. Given parents, the task trades:
/// its workers pick pieces by `p2p::pick` instead of the cursor (returns true). Back-to-source,
/// or no cluster, keeps the cursor. Never fails the download.
async fn join_cluster(shared: &Arc<Shared>, task: &Arc<Task>, layout: Layout) -> bool {
    let Some(node) = &shared.p2p else { return false };
    let Some(peer) = node.register(task, layout).await else { return false };
    let trading = peer.mode() == crate::p2p::peer::Mode::Parents;
    if trading {
        peer.start_trading(task.cursor(), shared.trading_workers());
    }
    let _ = task.peer.set(peer);
    trading
}

fn report_origin_piece(task: &Task, layout: Layout, piece_idx: u64, t0: std::time::Instant) {
    if let Some(peer) = task.peer.get() {
        let crc = task.crcs().get(piece_idx as usize).copied();
        crate::p2p::fetch::report_origin_piece(peer, layout, piece_idx, crc, t0);
    }
}

/// Picks up a task a previous run left unfinished: same URL, same layout, file still there. The
/// recorded pieces are re-checked against their crcs (a piece that fails is fetched again), then
/// every core fetches only what is missing. Returns false when there is nothing to resume.
async fn resume(shared: &Arc<Shared>, task: &Arc<Task>) -> Result<bool> {
    let Some(meta) = cache::unpark(shared, &task.id) else { return Ok(false) };
    let Some(len) = meta.content_len else { return Ok(false) };
    let layout = Layout::for_len(len);
    let len_ok = task.spec.expected_len.is_none_or(|want| want == len);
    if meta.url != task.spec.display_url || meta.piece_len != layout.piece_len_bytes || !len_ok {
        return Ok(false);
    }
    let path = task.data_path.clone();
    let (crcs, done, partial) = (meta.piece_crcs.clone(), meta.pieces_done.clone(), meta.partial.clone());
    let (still_good, partial) = blocking(move || {
        let good = crate::storage::recheck_pieces(&path, layout, &done, &crcs);
        Ok((good, crate::storage::recheck_partial(&path, layout, &partial)))
    })
    .await?;
    let n_good = still_good.iter().filter(|d| **d).count();
    tracing::info!(task = %task.id, pieces_on_disk = n_good, n_pieces = layout.n_pieces(), "resuming unfinished task");
    if let Some(v) = meta.validator.clone() {
        let _ = task.validator.set(v);
    }
    // A meta.json written before every validator was kept has only the If-Range one.
    if let (None, Some(v)) = (&task.spec.digest, meta.validators.clone()) {
        let _ = task.validators.set(v);
    }
    task.resume_from(layout, &still_good, &meta.piece_crcs, &partial);
    if !task.all_pieces_done() {
        shared.grow_workers(task, 1);
    }
    Ok(true)
}

/// Single-stream mode: the home core reads the whole body and cuts it into pieces.
async fn stream_whole(task: &Arc<Task>, resp: &mut client::Response, len_bytes: Option<u64>) -> Result<()> {
    // Admission already ran in `download` when the length is known (the geometry was set), and
    // the task file exists.
    let file = open_task_file(task).await?;
    let piece_len = task.geometry().map(|g| g.layout.piece_len_bytes).unwrap_or(DEFAULT_PIECE_LEN_BYTES);
    let (written, unrecorded) = write_body(task, resp, &file, 0, piece_len, len_bytes, (0, 0)).await?;
    if task.geometry().is_none() {
        // Unknown length: now it is known. Bigger files get Dragonfly's larger pieces only when the
        // length is known up front; a streamed one keeps 4 MiB pieces (the crcs were cut that way).
        task.set_streamed_geometry(Layout { content_len_bytes: written, piece_len_bytes: piece_len }, &unrecorded);
    }
    Ok(())
}

/// Waits for every piece, checkpointing progress (finished pieces and how far the ones in flight
/// got) on the `META_FLUSH_*` schedule, so a crash or kill loses at most that many bytes (nothing
/// is synced: see `storage::persist_meta`), and meanwhile ramps the task's connection count from
/// the throughput it measures (`daemon::ramp`). Deadlines, not delays from the last wake-up:
/// waking on a piece must not push the next save further out.
async fn wait_all_pieces(shared: &Arc<Shared>, task: &Arc<Task>) -> Result<()> {
    use std::time::Instant;
    let mut flushed_bytes = 0u64;
    let mut last_flush = Instant::now();
    let mut ramp = Ramp::new(task.workers.limit(), shared.max_workers());
    let trading = task.peer.get().is_some_and(|p| p.trading());
    if trading || !task.geometry().is_some_and(|g| g.ranged) {
        ramp.settle();
    }
    let mut window = (Instant::now(), task.written_bytes());
    loop {
        let listener = task.event.listen();
        if let Some(e) = task.failure() {
            return Err(e.clone());
        }
        if task.all_pieces_done() {
            return Ok(());
        }
        // Writes do not notify: look at the byte count every `META_FLUSH_MIN_INTERVAL`.
        let deadline = (last_flush + limits::META_FLUSH_INTERVAL).saturating_duration_since(Instant::now());
        let _ = compio::time::timeout(deadline.min(limits::META_FLUSH_MIN_INTERVAL), listener).await;
        if !ramp.settled() && window.0.elapsed() >= limits::RAMP_WINDOW {
            window = ramp_step(shared, task, &mut ramp, window);
        }
        let written = task.written_bytes();
        let due = last_flush.elapsed() >= limits::META_FLUSH_INTERVAL
            || (last_flush.elapsed() >= limits::META_FLUSH_MIN_INTERVAL
                && written - flushed_bytes >= limits::META_FLUSH_BYTES);
        if due {
            if written != flushed_bytes && task.geometry().is_some_and(|g| g.ranged) {
                persist(shared, task).await?;
                flushed_bytes = written;
            }
            last_flush = Instant::now();
        }
    }
}

/// One ramp decision from the bytes written since `window` began; returns the next window.
fn ramp_step(
    shared: &Arc<Shared>,
    task: &Arc<Task>,
    ramp: &mut Ramp,
    window: (std::time::Instant, u64),
) -> (std::time::Instant, u64) {
    let written = task.written_bytes();
    let rate = written.saturating_sub(window.1) as f64 / window.0.elapsed().as_secs_f64().max(1e-3);
    // Workers added now would find nothing to take: the count is what it will be.
    if task.pieces_untaken() <= task.workers.limit() as u64 {
        ramp.settle();
    }
    match ramp.observe(rate) {
        Step::Grow(n) => shared.grow_workers(task, n),
        Step::Settle(n) => task.workers.set_limit(n),
        Step::Hold => {}
    }
    tracing::debug!(task = %task.id, rate_mib_s = rate / 1048576.0, workers = ramp.limit(), "ramp");
    (std::time::Instant::now(), written)
}

/// Writes the metadata that records the task's pieces (a checkpoint: nothing is synced, see
/// `storage::persist_meta`).
pub async fn persist(shared: &Arc<Shared>, task: &Arc<Task>) -> Result<()> {
    let (meta_path, task) = (shared.store.meta_path(&task.id), task.clone());
    blocking(move || save_meta(&task, &meta_path)).await
}

/// Writes the task's metadata (blocking). Skipped once the task failed: its files may be gone.
fn save_meta(task: &Task, meta_path: &std::path::Path) -> Result<()> {
    let meta = task.to_meta();
    let _files = task.files.lock().map_err(|_| Error::internal("task files lock poisoned"))?;
    // The task may have failed (and its files been removed) while this job waited.
    if task.state() == State::Failed {
        return Ok(());
    }
    let t = std::time::Instant::now();
    let saved = crate::storage::persist_meta(meta_path, &meta);
    tracing::debug!(task = %task.id, cost_ms = t.elapsed().as_millis() as u64, "progress saved");
    saved
}

/// The digest check of a task with a known digest, running beside the download on a thread of
/// its own: it hashes the longest prefix of finished pieces as they land (`storage::hash`), so
/// when the last piece is written only the pieces after that prefix are left. A thread, not the
/// blocking pool: it waits on pieces for as long as the download runs, and file IO of the
/// polling driver must never queue behind it.
struct Hashing {
    result: flume::Receiver<Result<crate::digest::Digest>>,
}

impl Hashing {
    fn start(task: &Arc<Task>) -> Option<Hashing> {
        let layout = task.geometry()?.layout;
        task.spec.digest.as_ref()?;
        let (tx, rx) = flume::bounded(1);
        let t = task.clone();
        let spawned = std::thread::Builder::new().name("dfget-hash".into()).spawn(move || {
            let _ = tx.send(hash_along(&t, layout));
        });
        // No thread (resource limits): finalize hashes the whole file instead.
        spawned.ok().map(|_| Hashing { result: rx })
    }
}

/// Follows `task`'s pieces with a prefix hasher until the last one is hashed or the task failed.
/// It polls (every `HASH_POLL`) rather than listen: task signals wake runtime threads only.
fn hash_along(task: &Task, layout: Layout) -> Result<crate::digest::Digest> {
    let mut hasher = crate::storage::hash::PrefixHasher::open(&task.data_path, layout)?;
    loop {
        hasher.advance(|idx| task.piece_done(idx))?;
        if hasher.is_complete() {
            return Ok(hasher.finish());
        }
        if task.state() == State::Failed {
            return Err(Error::internal("task failed while hashing"));
        }
        std::thread::sleep(limits::HASH_POLL);
    }
}

/// Digest check (when asked for), metadata, and the file identity later cache hits compare with.
async fn finalize(shared: &Arc<Shared>, task: &Arc<Task>, hashing: Option<Hashing>) -> Result<()> {
    let g = task.geometry().ok_or_else(|| Error::internal("finalize without geometry"))?;
    if let Some(want) = task.spec.digest.clone() {
        let path = task.data_path.clone();
        let len = g.layout.content_len_bytes;
        let got = match hashing {
            Some(h) => h.result.recv_async().await.map_err(|_| Error::internal("hashing thread ended"))?,
            None => blocking(move || crate::storage::sha256_of(&path, len)).await,
        }?;
        want.check(&got).map_err(|m| Error::from(m).context(&task.spec.display_url))?;
    }
    // Metadata and the file's identity in one trip to the blocking pool: for a small file each
    // trip is a sizeable part of what the whole task costs.
    let (meta_path, t) = (shared.store.meta_path(&task.id), task.clone());
    let identity = blocking(move || {
        save_meta(&t, &meta_path)?;
        Ok(crate::storage::FileIdentity::of(&t.data_path).ok())
    })
    .await?;
    task.set_identity(identity);
    Ok(())
}

/// Piece worker: one of several per core per task. Takes piece indexes from the task's shared
/// cursor (or, trading with parents, as `p2p::fetch::next_pick` chooses) until none remain, or
/// the task failed.
pub async fn piece_worker(task: Arc<Task>) {
    let Some(Geometry { layout, .. }) = task.geometry() else {
        return;
    };
    let file = match open_task_file(&task).await {
        Ok(f) => f,
        Err(e) => {
            task.fail(e);
            return;
        }
    };
    task.workers.enter();
    // This worker's last measured bytes/s: how many pieces it asks for at once.
    let mut rate = None;
    loop {
        // Over the ramp's limit: this worker retires between pieces (never inside one).
        if task.workers.retire_if_over() {
            return;
        }
        let more = match task.peer.get() {
            Some(peer) if peer.trading() => trade_one(&task, peer, &file, layout).await,
            Some(peer) if peer.mode() != crate::p2p::peer::Mode::BackToSource => match task.take_piece() {
                Some(piece_idx) => fetch_piece_with_retries(&task, &file, layout, piece_idx).await.map(|()| true),
                None => Ok(false),
            },
            _ => origin_run_taken(&task, &file, layout, &mut rate).await,
        };
        match more {
            Ok(true) => {}
            Ok(false) => break,
            Err(e) => {
                let _ = task.fail(e);
                break;
            }
        }
    }
    task.workers.leave();
}

/// One piece of a task trading with parents: from its holders (given back for another try when
/// they all fail), or from the origin. Ok(false) = nothing left for this worker.
async fn trade_one(
    task: &Task,
    peer: &crate::p2p::peer::PeerTask,
    file: &compio::fs::File,
    layout: Layout,
) -> Result<bool> {
    use crate::p2p::fetch::{self, Pick};
    match fetch::next_pick(task, peer).await {
        None => Ok(false),
        Some(Pick::Parents(piece_idx)) => {
            if !fetch::from_holders(task, peer, file, layout, piece_idx).await {
                peer.release(piece_idx);
            }
            Ok(true)
        }
        Some(Pick::Origin(piece_idx)) => with_retries(|| origin_piece(task, file, layout, piece_idx))
            .await
            .map(|()| true)
            .map_err(|e| e.context(format_args!("piece {piece_idx}"))),
    }
}

async fn fetch_piece_with_retries(task: &Task, file: &compio::fs::File, layout: Layout, piece_idx: u64) -> Result<()> {
    with_retries(|| fetch_piece(task, file, layout, piece_idx))
        .await
        .map_err(|e| e.context(format_args!("piece {piece_idx}")))
}

async fn fetch_piece(task: &Task, file: &compio::fs::File, layout: Layout, piece_idx: u64) -> Result<()> {
    if task.state() != State::Running {
        return Ok(());
    }
    // Parents only for a piece with nothing on disk: a parent's bytes that failed their crc may
    // have overwritten part of it, and a resumed origin range would trust that part.
    if let (Some(peer), (0, _)) = (task.peer.get(), task.partial_of(piece_idx)) {
        if crate::p2p::fetch::from_parents(task, peer, file, layout, piece_idx).await? {
            return Ok(());
        }
    }
    origin_piece(task, file, layout, piece_idx).await
}

/// Takes this worker's next run of consecutive pieces (`ramp::span_pieces`, sized by `rate`, the
/// bytes/s its last run came at) and fetches it from the origin. Ok(false) = nothing left.
async fn origin_run_taken(
    task: &Task,
    file: &compio::fs::File,
    layout: Layout,
    rate: &mut Option<f64>,
) -> Result<bool> {
    let want =
        crate::daemon::ramp::span_pieces(*rate, layout.piece_len_bytes, task.pieces_untaken(), task.workers.active());
    let Some((first, count)) = task.take_run(want) else { return Ok(false) };
    let t0 = std::time::Instant::now();
    let bytes =
        with_retries(|| origin_run(task, file, layout, first, first + count)).await.map_err(|e| match count {
            1 => e.context(format_args!("piece {first}")),
            _ => e.context(format_args!("pieces {first}-{}", first + count - 1)),
        })?;
    if bytes > 0 {
        *rate = Some(bytes as f64 / t0.elapsed().as_secs_f64().max(1e-6));
    }
    Ok(true)
}

/// Fetches what is missing of pieces `first..end` from the origin: one ranged GET per stretch of
/// pieces with nothing on disk (a stretch may begin inside a piece an earlier attempt got partway
/// through, and ends before the next such piece); pieces already done are skipped. Returns the
/// bytes fetched. Run again after a failure, it asks only for what is still missing.
async fn origin_run(task: &Task, file: &compio::fs::File, layout: Layout, first: u64, end: u64) -> Result<u64> {
    let mut bytes = 0;
    let mut i = first;
    while i < end && task.state() == State::Running {
        if task.piece_done(i) {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < end && !task.piece_done(j) && task.partial_of(j).0 == 0 {
            j += 1;
        }
        bytes += origin_range(task, file, layout, i, j).await?;
        i = j;
    }
    Ok(bytes)
}

/// Fetches piece `piece_idx` (or what of it is not on disk yet) from the origin.
async fn origin_piece(task: &Task, file: &compio::fs::File, layout: Layout, piece_idx: u64) -> Result<()> {
    origin_range(task, file, layout, piece_idx, piece_idx + 1).await.map(|_| ())
}

/// Fetches pieces `first..end` (from where `first` got to on disk) in one ranged GET, each piece
/// recorded as its last byte is written. Returns the bytes fetched.
async fn origin_range(task: &Task, file: &compio::fs::File, layout: Layout, first: u64, end_piece: u64) -> Result<u64> {
    if task.state() != State::Running {
        return Ok(0);
    }
    let range = |idx| layout.piece_range(idx).ok_or_else(|| Error::internal("piece index past the end"));
    let (piece_start, _) = range(first)?;
    let (_, end) = range(end_piece - 1)?;
    // What an earlier attempt (or a previous run) already put on disk is not asked for again.
    let already = task.partial_of(first);
    let start = piece_start + already.0;
    let t0 = std::time::Instant::now();
    let if_range = task.validator.get().map(String::as_str);
    let mut resp = task.spec.fetch.get(Some((start, end - 1)), if_range).await?;
    let asked = PieceAsked {
        url: &task.spec.display_url,
        first: start,
        last: end - 1,
        content_len_bytes: layout.content_len_bytes,
        if_range,
        validators: task.validators.get(),
    };
    judge::piece(&resp.head, &asked)?;
    write_body(task, &mut resp, file, first, layout.piece_len_bytes, Some(end - start), already).await?;
    for idx in first..end_piece {
        report_origin_piece(task, layout, idx, t0);
    }
    Ok(end - start)
}

/// Streams `resp`'s body into the task file as pieces `first_piece..`, each crc'd. A piece is recorded
/// (bit set) only after the write holding its last byte completed. With `expect_bytes` (a ranged
/// piece) the body must be exactly that long. Pieces of a stream of unknown length are returned
/// instead of recorded, because the bitmap does not exist until the length is known.
/// `already` = (bytes of `first_piece` already on disk, their crc32): the body continues there. A
/// ranged piece's progress is noted after every write, so a resume can continue it too.
pub async fn write_body(
    task: &Task,
    resp: &mut client::Response,
    file: &compio::fs::File,
    first_piece: u64,
    piece_len_bytes: u64,
    expect_bytes: Option<u64>,
    already: (u64, u32),
) -> Result<(u64, Vec<u32>)> {
    let record_now = task.geometry().is_some();
    let note_progress = record_now && expect_bytes.is_some();
    let base = first_piece * piece_len_bytes + already.0;
    let mut cutter = Cutter::resume(first_piece, piece_len_bytes, already);
    let mut unrecorded = Vec::new();
    let mut written = 0u64;
    let mut buf = body_buffer(expect_bytes);
    // The first write of every piece is small: until this response's rate is measured, a slow
    // origin's 1 MiB would sit in the buffer for a quarter second (at 4 MB/s), times every worker,
    // all of it lost to a SIGKILL. From the second write on the measured rate decides.
    let mut want_bytes = crate::limits::MIN_WRITE_CHUNK_BYTES;
    loop {
        if task.state() == State::Failed {
            return Err(Error::internal("task failed elsewhere"));
        }
        let read_started = std::time::Instant::now();
        let more = until_failed(task, resp.read_into(&mut buf, want_bytes)).await?;
        want_bytes = chunk_for_rate(buf.len(), read_started.elapsed());
        if expect_bytes.is_some_and(|limit| written + buf.len() as u64 > limit) {
            return Err(Error::origin(
                false,
                format!("{}: body longer than the range asked for", crate::http::redact::Shown(&resp.url)),
            ));
        }
        rate::take(buf.len()).await;
        let finished = cutter.feed(&buf);
        if !buf.is_empty() {
            let n = buf.len() as u64;
            let mut f = file;
            let BufResult(res, b) = f.write_all_at(buf, base + written).await;
            res.map_err(|e| crate::storage::disk_err(e, &task.data_path, "write task file"))?;
            buf = b;
            buf.clear();
            written += n;
            task.add_written(n);
            if let (true, (fill @ 1.., crc)) = (note_progress, cutter.progress()) {
                task.note_partial(cutter.piece(), fill, crc);
            }
        }
        for (idx, crc, len) in finished {
            settle(task, record_now, &mut unrecorded, idx, crc, len);
        }
        if !more {
            break;
        }
    }
    if let Some(limit) = expect_bytes {
        if written != limit {
            return Err(Error::origin(
                true,
                format!("{}: body of {written} bytes, expected {limit}", crate::http::redact::Shown(&resp.url)),
            ));
        }
    }
    if let Some((idx, crc, len)) = cutter.finish() {
        settle(task, record_now, &mut unrecorded, idx, crc, len);
    }
    Ok((written, unrecorded))
}

/// A small body gets a buffer of its size, not `WRITE_CHUNK_BYTES`: a list of small files has
/// `jobs` of them in flight at once (it grows if the origin sends more).
fn body_buffer(expect_bytes: Option<u64>) -> Vec<u8> {
    let cap = expect_bytes.map_or(crate::limits::WRITE_CHUNK_BYTES, |n| {
        usize::try_from(n).unwrap_or(usize::MAX).clamp(1, crate::limits::WRITE_CHUNK_BYTES)
    });
    Vec::with_capacity(cap)
}

/// How many bytes the next write should gather: what `WRITE_CHUNK_MAX_AGE` brings at the rate
/// the last `n_bytes` came in `took`, within [`MIN_WRITE_CHUNK_BYTES`, `WRITE_CHUNK_BYTES`]. A fast
/// origin keeps large writes; a slow one gets its bytes on disk (and resumable) promptly.
fn chunk_for_rate(n_bytes: usize, took: Duration) -> usize {
    use crate::limits::{MIN_WRITE_CHUNK_BYTES, WRITE_CHUNK_BYTES, WRITE_CHUNK_MAX_AGE};
    let per_age = (n_bytes as u128 * WRITE_CHUNK_MAX_AGE.as_nanos()) / took.as_nanos().max(1);
    (per_age.min(WRITE_CHUNK_BYTES as u128) as usize).max(MIN_WRITE_CHUNK_BYTES)
}

/// Runs `fut` unless the task fails first (another core's fatal error, an operator's removal): a
/// slow origin must not keep a failed task's worker — and its cleanup — waiting.
pub async fn until_failed<T>(task: &Task, fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    use futures_util::future::{select, Either};
    let mut fut = std::pin::pin!(fut);
    loop {
        let listener = task.event.listen();
        if let Some(e) = task.failure() {
            return Err(e.clone());
        }
        match select(fut.as_mut(), listener).await {
            Either::Left((out, _)) => return out,
            Either::Right(((), _)) => {}
        }
    }
}

fn settle(task: &Task, record_now: bool, unrecorded: &mut Vec<u32>, idx: u64, crc: u32, len: u64) {
    if record_now {
        task.record_piece(idx, crc, len);
    } else {
        unrecorded.push(crc);
    }
}

/// Retries retryable failures with a short linear backoff (or the origin's `Retry-After`); a
/// non-retryable error returns at once.
async fn with_retries<T, F, Fut>(mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let mut attempt = 0u32;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) if e.retryable && attempt + 1 < limits::MAX_ATTEMPTS => {
                attempt += 1;
                // The origin's Retry-After (already capped by `http::status`) when it asked for more.
                let backoff = Duration::from_millis(limits::RETRY_BACKOFF_MS * attempt as u64);
                let wait = e.retry_after.map_or(backoff, |w| w.max(backoff));
                tracing::debug!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "retrying");
                compio::time::sleep(wait).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn open_task_file(task: &Task) -> Result<compio::fs::File> {
    OpenOptions::new()
        .write(true)
        .open(&task.data_path)
        .await
        .map_err(|e| crate::storage::disk_err(e, &task.data_path, "open task file"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_chunk_follows_the_origins_rate() {
        let ms = Duration::from_millis;
        assert_eq!(chunk_for_rate(1 << 20, ms(1)), limits::WRITE_CHUNK_BYTES, "fast origin: whole chunks");
        assert_eq!(chunk_for_rate(1 << 20, ms(250)), 104_857, "4 MiB/s: 25 ms worth");
        assert_eq!(chunk_for_rate(1 << 20, ms(10_000)), limits::MIN_WRITE_CHUNK_BYTES, "trickle: the floor");
        assert_eq!(chunk_for_rate(0, ms(0)), limits::MIN_WRITE_CHUNK_BYTES);
    }
}
