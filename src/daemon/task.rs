//! One task: its shared state (read by every core) and the download engine that fills it.
//!
//! The home core runs `drive`: it sends the first ranged GET, learns the length, preallocates the task
//! file, asks every core to run piece workers, and finalizes (digest, metadata, log line). Piece workers
//! take indexes from an atomic cursor, fetch `Range: bytes=a-b` on their core's keep-alive connections,
//! and write at the piece's offset. Origins without Range support or without a length are read as one
//! stream by the home core, cut into pieces as the bytes arrive.
//!
//! Invariant: a piece's bit is set only after its bytes are written and its crc is stored; the task is
//! `Done` only when every bit is set (and the digest, if any, matched). Failure is terminal and first
//! one wins.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use compio::buf::BufResult;
use compio::io::AsyncWriteAtExt;

use crate::error::Kind;
use crate::error::{Error, Result};
use crate::http::client;
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
    /// `sha256:<hex>`, lowercase: verified before the task is done.
    pub digest: Option<String>,
    /// Known in advance (an OCI descriptor's size): the origin's length must match.
    pub expected_len: Option<u64>,
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
    /// Next piece index a worker should take (pieces below it are taken, not necessarily done).
    next_piece: AtomicU64,
    completed_bytes: AtomicU64,
    failure: OnceLock<Error>,
    /// Wakes subscribers (progress streams, the home core's finalizer) after any piece or state change.
    pub event: event_listener::Event,
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
}

pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

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
            next_piece: AtomicU64::new(0),
            completed_bytes: AtomicU64::new(0),
            failure: OnceLock::new(),
            event: event_listener::Event::new(),
            last_access_unix_ms: AtomicU64::new(now_unix_ms()),
            readers: AtomicUsize::new(0),
            files: std::sync::Mutex::new(()),
            validator: OnceLock::new(),
        }
    }

    /// A task restored from a finished task file on disk (crcs already verified by the caller).
    pub fn finished(id: String, peer_id: String, spec: Spec, data_path: PathBuf, layout: Layout, crcs: &[u32]) -> Task {
        let t = Task::new(id, peer_id, spec, data_path);
        t.set_geometry(Geometry { layout, ranged: true });
        for (i, c) in crcs.iter().enumerate() {
            t.record_piece(i as u64, *c, 0);
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
            pieces_done,
            piece_crcs: self.crcs(),
            digest: self.spec.digest.clone(),
            created_unix_ms: now.saturating_sub(self.started.elapsed().as_millis() as u64),
            last_access_unix_ms: self.last_access_unix_ms.load(Ordering::Acquire),
            validator: self.validator.get().cloned(),
        }
    }

    fn set_geometry(&self, g: Geometry) {
        let n = g.layout.n_pieces();
        let _ = self.geometry.set(g);
        let _ = self.bitmap.set(AtomicBitmap::new(n));
        let _ = self.crcs.set((0..n).map(|_| AtomicU32::new(0)).collect());
    }

    fn record_piece(&self, piece_idx: u64, crc: u32, len_bytes: u64) {
        if let (Some(crcs), Some(bitmap)) = (self.crcs.get(), self.bitmap.get()) {
            crcs[piece_idx as usize].store(crc, Ordering::Release);
            if bitmap.set(piece_idx) {
                self.completed_bytes.fetch_add(len_bytes, Ordering::AcqRel);
                crate::daemon::metrics::bump(&crate::daemon::metrics::PIECES_FETCHED, 1);
                crate::daemon::metrics::bump(&crate::daemon::metrics::BYTES_FETCHED, len_bytes);
            }
        }
        self.event.notify(usize::MAX);
    }

    pub fn all_pieces_done(&self) -> bool {
        self.bitmap.get().is_some_and(|b| b.is_full())
    }

    /// Running → Failed. First failure wins; later ones are consequences and are dropped. A task
    /// already Done stays Done (returns false).
    pub fn fail(&self, e: Error) -> bool {
        let _ = self.failure.set(e);
        let won = self.transition(State::Failed);
        self.event.notify(usize::MAX);
        won || self.state() == State::Failed
    }

    /// Running → Done; false when the task failed meanwhile (an operator's removal, say).
    pub fn mark_done(&self) -> bool {
        let won = self.transition(State::Done);
        self.event.notify(usize::MAX);
        won
    }

    fn transition(&self, to: State) -> bool {
        self.state.compare_exchange(State::Running as u8, to as u8, Ordering::AcqRel, Ordering::Acquire).is_ok()
    }

    pub fn take_piece(&self) -> Option<u64> {
        let g = self.geometry()?;
        if !g.ranged || self.state() != State::Running {
            return None;
        }
        let bitmap = self.bitmap.get()?;
        loop {
            let idx = self.next_piece.fetch_add(1, Ordering::AcqRel);
            if idx >= g.layout.n_pieces() {
                return None;
            }
            // Pieces restored from a previous run are already on disk.
            if !bitmap.get(idx) {
                return Some(idx);
            }
        }
    }

    /// Lays out a task resumed from a previous run's metadata and records the pieces it had.
    pub fn resume_from(&self, layout: Layout, done: &[bool], crcs: &[u32]) {
        self.set_geometry(Geometry { layout, ranged: true });
        for (idx, (ok, crc)) in done.iter().zip(crcs).enumerate() {
            if *ok {
                let (s, e) = layout.piece_range(idx as u64).unwrap_or((0, 0));
                self.record_piece(idx as u64, *crc, e - s);
            }
        }
        self.next_piece.store(0, Ordering::Release);
    }

    pub fn n_pieces_done(&self) -> u64 {
        self.bitmap.get().map(|b| b.count()).unwrap_or(0)
    }
}

const EVICTED: usize = 1 << (usize::BITS - 1);

/// A reader's hold on a task's file; released on drop.
pub struct ReaderPin(std::sync::Arc<Task>);

impl Drop for ReaderPin {
    fn drop(&mut self) {
        self.0.readers.fetch_sub(1, Ordering::AcqRel);
        self.0.event.notify(usize::MAX);
    }
}

/// The outcome of the first request: either the task is now laid out and (maybe) ranged, or it is
/// being read as a single stream.
pub enum FirstResponse {
    /// Piece 0's body follows on this response when `piece0` is true.
    Ranged {
        resp: client::Response,
        piece0: bool,
    },
    Stream {
        resp: client::Response,
        len_bytes: Option<u64>,
    },
    Empty,
}

/// Sends the first GET (piece 0's range) and classifies the answer.
pub async fn first_request(task: &Task) -> Result<FirstResponse> {
    let resp = task.spec.fetch.get(Some((0, DEFAULT_PIECE_LEN_BYTES - 1))).await?;
    match resp.status() {
        206 => {
            let cr = resp.head.header("content-range").unwrap_or(b"");
            let cr = crate::http::range::parse_content_range(cr)
                .map_err(|e| Error::origin(false, format!("{}: {e}", task.spec.display_url)))?;
            let Some(total) = cr.complete_len else {
                drop(resp);
                let resp = task.spec.fetch.get(None).await?;
                return stream_or_error(task, resp);
            };
            check_len(task, total)?;
            let layout = Layout::for_len(total);
            let expected_last = layout.piece_range(0).map(|(_, e)| e - 1);
            if cr.first != 0 || Some(cr.last) > expected_last {
                return Err(Error::origin(
                    false,
                    format!(
                        "{}: 206 with Content-Range {}-{}/{total} for a request of bytes=0-{}",
                        task.spec.display_url,
                        cr.first,
                        cr.last,
                        DEFAULT_PIECE_LEN_BYTES - 1
                    ),
                ));
            }
            task.set_geometry(Geometry { layout, ranged: true });
            // With a digest the content is checked end to end anyway; If-Range would only add
            // failures (per-backend ETags behind a load balancer), so it is used without one.
            if task.spec.digest.is_none() {
                if let Some(v) = strong_validator(&resp.head) {
                    let _ = task.validator.set(v);
                }
            }
            // Piece 0 is on this response unless piece length is larger than the probe (files > 1 GiB).
            let piece0 = Some(cr.last) == expected_last;
            task.next_piece.store(if piece0 { 1 } else { 0 }, Ordering::Release);
            Ok(FirstResponse::Ranged { resp, piece0 })
        }
        416 => {
            let total = resp.head.header("content-range").and_then(crate::http::range::parse_unsatisfied_range);
            if total == Some(0) {
                check_len(task, 0)?;
                task.set_geometry(Geometry { layout: Layout::for_len(0), ranged: true });
                return Ok(FirstResponse::Empty);
            }
            Err(Error::origin(false, format!("{}: 416 Range Not Satisfiable for bytes=0-", task.spec.display_url)))
        }
        _ => stream_or_error(task, resp),
    }
}

/// A validator usable with `If-Range` (RFC 9110 §13.1.5): a strong ETag, else Last-Modified.
/// Only when there is no ETag at all may a date be used (a weak ETag means "no strong validator").
/// Anything oversized or with control characters is treated as absent: it goes into a request
/// header and into meta.json.
pub fn strong_validator(head: &crate::http::codec::ResponseHead) -> Option<String> {
    let v = match head.header_str("etag").map(str::trim) {
        Some(etag) if etag.starts_with('"') => etag,
        Some(_) => return None,
        None => head.header_str("last-modified")?.trim(),
    };
    let sane = !v.is_empty()
        && v.len() <= crate::storage::meta::MAX_VALIDATOR_BYTES
        && v.bytes().all(|b| (0x20..0x7f).contains(&b));
    sane.then(|| v.to_string())
}

/// The origin's length must match a length known in advance (an OCI descriptor's size).
fn check_len(task: &Task, len_bytes: u64) -> Result<()> {
    // Bounds the piece table before it is allocated: an origin claiming 2^64 bytes must get an
    // error, not make the daemon try to allocate terabytes of bitmap.
    if Layout::for_len(len_bytes).n_pieces() > crate::storage::meta::MAX_PIECES as u64 {
        return Err(Error::origin(
            false,
            format!("{}: content length {len_bytes} is larger than this daemon can store", task.spec.display_url),
        ));
    }
    match task.spec.expected_len {
        Some(want) if want != len_bytes => Err(Error::origin(
            false,
            format!("{}: origin has {len_bytes} bytes, the descriptor says {want}", task.spec.display_url),
        )
        .with_kind(Kind::Integrity)),
        _ => Ok(()),
    }
}

fn stream_or_error(task: &Task, resp: client::Response) -> Result<FirstResponse> {
    let status = resp.status();
    if status != 200 {
        let retryable = status >= 500 || status == 429;
        return Err(Error::origin(
            retryable,
            format!("{} returned {status} {}", task.spec.display_url, resp.head.reason),
        )
        .with_kind(Kind::Status(status)));
    }
    let len_bytes = match crate::http::codec::framing(&resp.head, false) {
        Ok(crate::http::codec::Framing::Length(n)) => Some(n),
        Ok(crate::http::codec::Framing::Empty) => Some(0),
        _ => None,
    };
    if let Some(len) = len_bytes {
        check_len(task, len)?;
        task.set_geometry(Geometry { layout: Layout::for_len(len), ranged: false });
    }
    Ok(FirstResponse::Stream { resp, len_bytes })
}

/// Streams `resp`'s body into the task file as pieces `first_piece..`, each crc'd. A piece is recorded
/// (bit set) only after the write holding its last byte completed. With `expect_bytes` (a ranged
/// piece) the body must be exactly that long. Pieces of a stream of unknown length are returned
/// instead of recorded, because the bitmap does not exist until the length is known.
pub async fn write_body(
    task: &Task,
    resp: &mut client::Response,
    file: &compio::fs::File,
    first_piece: u64,
    piece_len_bytes: u64,
    expect_bytes: Option<u64>,
) -> Result<(u64, Vec<u32>)> {
    let record_now = task.geometry().is_some();
    let base = first_piece * piece_len_bytes;
    let mut cutter = Cutter::new(first_piece, piece_len_bytes);
    let mut unrecorded = Vec::new();
    let mut written = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(crate::limits::WRITE_CHUNK_BYTES);
    loop {
        if task.state() == State::Failed {
            return Err(Error::internal("task failed elsewhere"));
        }
        let more = until_failed(task, resp.read_into(&mut buf, crate::limits::WRITE_CHUNK_BYTES)).await?;
        if expect_bytes.is_some_and(|limit| written + buf.len() as u64 > limit) {
            return Err(Error::origin(false, format!("{}: body longer than the range asked for", resp.url)));
        }
        crate::daemon::rate::take(buf.len()).await;
        let finished = cutter.feed(&buf);
        if !buf.is_empty() {
            let n = buf.len() as u64;
            let mut f = file;
            let BufResult(res, b) = f.write_all_at(buf, base + written).await;
            res.map_err(|e| crate::storage::disk_err(e, &task.data_path, "write task file"))?;
            buf = b;
            buf.clear();
            written += n;
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
            return Err(Error::origin(true, format!("{}: body of {written} bytes, expected {limit}", resp.url)));
        }
    }
    if let Some((idx, crc, len)) = cutter.finish() {
        settle(task, record_now, &mut unrecorded, idx, crc, len);
    }
    Ok((written, unrecorded))
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

/// Cuts a byte stream at piece boundaries, computing each piece's crc32.
struct Cutter {
    piece_idx: u64,
    piece_len_bytes: u64,
    fill_bytes: u64,
    crc: crc32fast::Hasher,
}

impl Cutter {
    fn new(first_piece: u64, piece_len_bytes: u64) -> Cutter {
        Cutter { piece_idx: first_piece, piece_len_bytes, fill_bytes: 0, crc: crc32fast::Hasher::new() }
    }

    /// Returns the pieces completed by `bytes`: (index, crc, length).
    fn feed(&mut self, mut bytes: &[u8]) -> Vec<(u64, u32, u64)> {
        let mut done = Vec::new();
        while !bytes.is_empty() {
            let room = (self.piece_len_bytes - self.fill_bytes) as usize;
            let take = room.min(bytes.len());
            self.crc.update(&bytes[..take]);
            self.fill_bytes += take as u64;
            bytes = &bytes[take..];
            if self.fill_bytes == self.piece_len_bytes {
                let crc = std::mem::replace(&mut self.crc, crc32fast::Hasher::new()).finalize();
                done.push((self.piece_idx, crc, self.fill_bytes));
                self.piece_idx += 1;
                self.fill_bytes = 0;
            }
        }
        done
    }

    /// The trailing short piece, if any.
    fn finish(self) -> Option<(u64, u32, u64)> {
        (self.fill_bytes > 0).then(|| (self.piece_idx, self.crc.finalize(), self.fill_bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_validator(headers: &[(&str, &str)], expected: Option<&str>) {
        let head = crate::http::codec::ResponseHead {
            status: 206,
            reason: "Partial Content".into(),
            version_minor: 1,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
        };
        assert_eq!(strong_validator(&head).as_deref(), expected, "{headers:?}");
    }

    #[test]
    fn validators_follow_rfc_9110_if_range_rules() {
        let date = "Sun, 29 Nov 2026 16:21:40 GMT";
        check_validator(&[("ETag", "\"abc\"")], Some("\"abc\""));
        check_validator(&[("ETag", "\"abc\""), ("Last-Modified", date)], Some("\"abc\""));
        // A weak ETag means there is no strong validator: the date may not be used either.
        check_validator(&[("ETag", "W/\"abc\""), ("Last-Modified", date)], None);
        check_validator(&[("Last-Modified", date)], Some(date));
        check_validator(&[], None);
        check_validator(&[("ETag", "\"a\tb\"")], None);
        let huge = format!("\"{}\"", "x".repeat(2000));
        check_validator(&[("ETag", huge.as_str())], None);
    }

    #[test]
    fn cutter_splits_at_piece_boundaries_for_any_chunking() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let want: Vec<u32> = data.chunks(64).map(crc32fast::hash).collect();
        for chunk in [1usize, 7, 63, 64, 65, 1000] {
            let mut c = Cutter::new(0, 64);
            let mut got: Vec<(u64, u32, u64)> = Vec::new();
            for part in data.chunks(chunk) {
                got.extend(c.feed(part));
            }
            got.extend(c.finish());
            let crcs: Vec<u32> = got.iter().map(|p| p.1).collect();
            assert_eq!(crcs, want, "chunk={chunk}");
            assert_eq!(got.iter().map(|p| p.0).collect::<Vec<_>>(), (0..16).collect::<Vec<_>>());
            assert_eq!(got.last().unwrap().2, 1000 - 15 * 64);
        }
    }
}
