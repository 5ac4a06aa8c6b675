//! Parent side of the data path, on the compio cores: the Vortex TCP server. Each core accepts
//! on the shared listener, reads one `DownloadPiece`, checks it, and sends the piece's
//! metadata and then its bytes straight from the task file: `splice(2)` file → pipe → socket
//! (io_uring's splice opcode), or a buffered copy where splice is unavailable.
//!
//! Invariant: only tasks this daemon holds, and only pieces whose bit is set (whole, written,
//! crc recorded) are sent; the task is pinned for the whole exchange so GC cannot delete the file
//! mid-upload; a malformed or unanswerable request gets a Vortex error and never affects other
//! connections. Uploads in flight are bounded, the rate by `upload.rateLimit`. A connection takes
//! an upload slot only once its whole, valid request is in; before that it waits at most
//! `UPLOAD_REQUEST_TIMEOUT`, among at most `MAX_WAITING_UPLOAD_REQUESTS_PER_CORE` per core, so
//! connections that never send (or trickle) a request cannot lock real peers out.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncReadAtExt, AsyncReadExt, AsyncWriteExt};

use crate::daemon::counters;
use crate::daemon::task::State;
use crate::limits;
use crate::p2p::node::{Node, Served};
use crate::p2p::vortex::{self, PieceHead, Refusal, RefusalCode, HEADER_SIZE};

/// Every core accepts on its own copy of the Vortex listener (the kernel hands each connection to
/// one of them), so uploads spread over the cores with no hand-off between them.
pub async fn accept_loop(node: Arc<Node>) {
    let listener = node.vortex_listener.try_clone().and_then(|l| {
        l.set_nonblocking(true)?;
        compio::net::TcpListener::from_std(l)
    });
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("cannot serve uploads (Vortex): {e}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((conn, _)) => {
                compio::runtime::spawn(serve(node.clone(), conn)).detach();
            }
            Err(e) => {
                // EMFILE and friends: back off instead of spinning the core.
                tracing::warn!("vortex accept failed: {e}");
                compio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// One connection on a core: its request first, read while it holds no upload slot (so a
/// connection that never sends one costs a socket for at most `UPLOAD_REQUEST_TIMEOUT`, never a
/// slot), then, with a slot, the answer within `UPLOAD_TIMEOUT`.
pub async fn serve(node: Arc<Node>, mut conn: compio::net::TcpStream) {
    let Some(asked) = await_request(&mut conn).await else { return };
    let Some(_slot) = UploadSlot::take(&node) else {
        let busy = Refusal::new(RefusalCode::Internal, "too many uploads in flight, try another parent");
        let _ = refuse_within(&mut conn, busy).await;
        return;
    };
    match compio::time::timeout(limits::UPLOAD_TIMEOUT, answer(&node, &mut conn, asked)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!("upload ended early: {e}"),
        Err(_) => tracing::debug!("upload timed out"),
    }
}

/// One of the `MAX_CONCURRENT_UPLOADS` slots, taken once a whole valid request is in; dropping it
/// gives it back.
struct UploadSlot<'a>(&'a AtomicUsize);

impl UploadSlot<'_> {
    fn take(node: &Node) -> Option<UploadSlot<'_>> {
        let n = &node.uploads_in_flight;
        n.fetch_update(Ordering::AcqRel, Ordering::Acquire, |k| (k < limits::MAX_CONCURRENT_UPLOADS).then_some(k + 1))
            .ok()
            .map(|_| UploadSlot(n))
    }
}

impl Drop for UploadSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The piece a new connection asks for, or None when there is nothing to answer: it sent no
/// whole request within `UPLOAD_REQUEST_TIMEOUT`, it was closed to make room for newer ones
/// (`waiting`), or its request was malformed (then it was refused).
async fn await_request(conn: &mut compio::net::TcpStream) -> Option<(String, u32)> {
    let (_place, evicted) = waiting::enter();
    let outcome = {
        let read = std::pin::pin!(compio::time::timeout(limits::UPLOAD_REQUEST_TIMEOUT, read_request(conn)));
        let evicted = std::pin::pin!(evicted.recv_async());
        match futures_util::future::select(read, evicted).await {
            futures_util::future::Either::Left((read, _)) => Some(read),
            futures_util::future::Either::Right(_) => None,
        }
    };
    match outcome {
        Some(Ok(Ok(Ok(asked)))) => Some(asked),
        Some(Ok(Ok(Err(refusal)))) => {
            let _ = refuse_within(conn, refusal).await;
            None
        }
        Some(Ok(Err(e))) => {
            tracing::debug!("upload request not read: {e}");
            None
        }
        Some(Err(_)) => {
            tracing::debug!("no upload request within {:?}: closed", limits::UPLOAD_REQUEST_TIMEOUT);
            None
        }
        None => {
            tracing::debug!("closed a connection still waiting for its upload request, for a newer one");
            None
        }
    }
}

/// Reads one `DownloadPiece` packet: the piece asked for, or the refusal a malformed one gets.
async fn read_request(conn: &mut compio::net::TcpStream) -> Result<Result<(String, u32), Refusal>, String> {
    let BufResult(res, head) = conn.read_exact([0u8; HEADER_SIZE]).await;
    res.map_err(|e| format!("read header: {e}"))?;
    let (tag, len) = match vortex::decode_header(&head) {
        Ok(v) => v,
        Err(e) => return Ok(Err(Refusal::new(RefusalCode::InvalidArgument, e))),
    };
    let BufResult(res, value) = conn.read_exact(vec![0u8; len as usize]).await;
    res.map_err(|e| format!("read value: {e}"))?;
    Ok(vortex::parse_request(tag, &value))
}

/// Writes a refusal to a connection that holds no slot, giving up after `UPLOAD_REQUEST_TIMEOUT`
/// (a fresh socket's send buffer takes it at once; a peer that reads nothing cannot keep us).
async fn refuse_within(conn: &mut compio::net::TcpStream, r: Refusal) -> Result<(), String> {
    match compio::time::timeout(limits::UPLOAD_REQUEST_TIMEOUT, refuse(conn, r)).await {
        Ok(result) => result,
        Err(_) => Err("refusal not taken in time".into()),
    }
}

/// Connections of this core still waiting for their request, oldest first. Per core: each core
/// bounds its own, so no state is shared. When `MAX_WAITING_UPLOAD_REQUESTS_PER_CORE` wait and
/// another arrives, the oldest is closed (its sender dropped): a real peer sends its request
/// right after connecting, so idle connections opened in a flood push out each other, not it.
mod waiting {
    use std::cell::RefCell;
    use std::collections::VecDeque;

    #[derive(Default)]
    struct Waiting {
        next_seq: u64,
        queue: VecDeque<(u64, flume::Sender<()>)>,
    }

    thread_local! {
        static WAITING: RefCell<Waiting> = RefCell::new(Waiting::default());
    }

    /// A connection's place in the queue; leaving (drop) takes it out.
    pub struct Place(u64);

    impl Drop for Place {
        fn drop(&mut self) {
            WAITING.with_borrow_mut(|w| {
                if let Ok(i) = w.queue.binary_search_by_key(&self.0, |(seq, _)| *seq) {
                    w.queue.remove(i);
                }
            });
        }
    }

    /// Queues a new connection, closing the oldest waiting one if the queue is full. The receiver
    /// disconnects when this one is pushed out in turn.
    pub fn enter() -> (Place, flume::Receiver<()>) {
        let (tx, rx) = flume::bounded(1);
        let seq = WAITING.with_borrow_mut(|w| {
            if w.queue.len() >= crate::limits::MAX_WAITING_UPLOAD_REQUESTS_PER_CORE {
                w.queue.pop_front();
            }
            let seq = w.next_seq;
            w.next_seq += 1;
            w.queue.push_back((seq, tx));
            seq
        });
        (Place(seq), rx)
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use crate::limits::MAX_WAITING_UPLOAD_REQUESTS_PER_CORE as MAX;

        #[test]
        fn a_full_queue_pushes_out_its_oldest_and_a_leaver_frees_its_place() {
            let mut held: Vec<_> = (0..MAX).map(|_| enter()).collect();
            assert!(held.iter().all(|(_, rx)| !rx.is_disconnected()));
            let newest = enter();
            assert!(held[0].1.is_disconnected(), "the oldest was not pushed out");
            assert!(held[1..].iter().all(|(_, rx)| !rx.is_disconnected()) && !newest.1.is_disconnected());
            // One leaves on its own: the next newcomer pushes out nobody.
            drop(held.remove(5));
            let _again = enter();
            assert!(!held[1].1.is_disconnected(), "a place freed by a leaver was not reused");
            assert_eq!(WAITING.with_borrow(|w| w.queue.len()), MAX);
        }
    }
}

/// Answers a valid request: the piece's metadata and bytes, or a refusal naming what is missing.
async fn answer(node: &Node, conn: &mut compio::net::TcpStream, asked: (String, u32)) -> Result<(), String> {
    let (task_id, number) = asked;
    let served = node.tasks.get(&task_id).map(|e| e.value().clone());
    let Some(Served { task, spread }) = served.filter(|s| s.task.state() != State::Failed) else {
        return refuse(conn, Refusal::new(RefusalCode::NotFound, format!("task {task_id} not found"))).await;
    };
    // Pinned until the last byte is written: GC and `tasks rm` skip a pinned task.
    let Some(_pin) = task.pin() else {
        return refuse(conn, Refusal::new(RefusalCode::NotFound, format!("task {task_id} is being removed"))).await;
    };
    let g = task.geometry().ok_or("task has no layout")?;
    let have = task.pieces_done().get(number as usize).copied().unwrap_or(false);
    let range = g.layout.piece_range(u64::from(number));
    let (Some((start, end)), true) = (range, have) else {
        return refuse(
            conn,
            Refusal::new(RefusalCode::NotFound, format!("piece {number} of task {task_id} not found")),
        )
        .await;
    };
    let crc = task.crcs().get(number as usize).copied().unwrap_or(0);
    let t0 = Instant::now();
    let head = PieceHead {
        number,
        offset: start,
        length: end - start,
        digest: vortex::crc_digest(crc),
        parent_id: task.peer_id.clone(),
        cost_secs: 0,
        created_at_secs: (task.last_access_unix_ms.load(Ordering::Acquire) / 1000) as i64,
    };
    let BufResult(res, _) = conn.write_all(vortex::encode_piece_head(&head)).await;
    res.map_err(|e| format!("write head: {e}"))?;
    send_range(node, conn, &task.data_path, start, end).await?;
    let copy = spread.uploaded(u64::from(number));
    if tracing::enabled!(tracing::Level::DEBUG) {
        let to = conn.peer_addr().map_or_else(|_| "?".to_string(), |a| a.to_string());
        tracing::debug!(task = %task.id, piece = number, copy, %to, ms = t0.elapsed().as_millis() as u64, "piece uploaded");
    }
    Ok(())
}

async fn refuse(conn: &mut compio::net::TcpStream, r: Refusal) -> Result<(), String> {
    let BufResult(res, _) = conn.write_all(vortex::encode_refusal(&r)).await;
    res.map_err(|e| format!("write refusal: {e}"))?;
    Err(format!("refused: {}", r.message))
}

/// Sends `[start, end)` of the task file, paced by `upload.rateLimit`: zero-copy (`splice`
/// through a pipe) where the driver and kernel allow it, else through a buffer. A core that
/// once found splice unusable (the polling driver cannot wait on a regular file) copies from then
/// on.
async fn send_range(
    node: &Node,
    conn: &mut compio::net::TcpStream,
    path: &std::path::Path,
    start: u64,
    end: u64,
) -> Result<(), String> {
    let file = compio::fs::File::open(path).await.map_err(|e| format!("open task file: {e}"))?;
    if !SPLICE_UNUSABLE.get() {
        match splice_range(node, conn, &file, start, end).await {
            Ok(()) => return Ok(()),
            Err(SpliceError::Unusable(e)) => {
                SPLICE_UNUSABLE.set(true);
                tracing::info!("zero-copy uploads unavailable on this core ({e}); copying through memory");
            }
            Err(SpliceError::Failed(e)) => return Err(e),
        }
    }
    copy_range(node, conn, &file, start, end).await
}

thread_local! {
    /// Set on a core whose first splice failed with "not supported here" before sending a byte.
    static SPLICE_UNUSABLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

enum SpliceError {
    /// Nothing reached the socket, and splice cannot work here: copy instead.
    Unusable(std::io::Error),
    Failed(String),
}

/// Errors that say splice itself is unavailable (old kernel, a file system or driver without it),
/// not that this transfer went wrong.
fn splice_unsupported(e: &std::io::Error) -> bool {
    use rustix::io::Errno;
    let code = e.raw_os_error().map(Errno::from_raw_os_error);
    matches!(code, Some(Errno::INVAL | Errno::NOSYS | Errno::PERM | Errno::OPNOTSUPP))
}

/// File → pipe → socket with `splice(2)` (io_uring's splice opcode on the io_uring driver): the
/// bytes go from the page cache to the socket without passing through this process.
async fn splice_range(
    node: &Node,
    conn: &mut compio::net::TcpStream,
    file: &compio::fs::File,
    start: u64,
    end: u64,
) -> Result<(), SpliceError> {
    use compio::fs::pipe::splice;
    let (rx, tx) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SpliceError::Unusable(std::io::Error::from(e)))?;
    // A bigger pipe moves more per pair of splices; the kernel may refuse (pipe-max-size).
    let _ = rustix::pipe::fcntl_setpipe_size(&tx, limits::WRITE_CHUNK_BYTES);
    let cap = rustix::pipe::fcntl_getpipe_size(&tx).unwrap_or(64 * 1024).max(4096) as u64;
    let (rx, tx) = (compio::driver::SharedFd::new(rx), compio::driver::SharedFd::new(tx));
    let mut sent_any = false;
    let fail = |sent_any: bool, what: &str, e: std::io::Error| {
        if !sent_any && splice_unsupported(&e) {
            SpliceError::Unusable(e)
        } else {
            SpliceError::Failed(format!("{what}: {e}"))
        }
    };
    let mut pos = start;
    while pos < end {
        // The pipe is empty here, so this never waits for room in it.
        let want = (end - pos).min(cap) as usize;
        let n =
            splice(file, &tx, want).offset_in(pos as i64).await.map_err(|e| fail(sent_any, "splice task file", e))?;
        if n == 0 {
            return Err(SpliceError::Failed(format!("task file ends at {pos}, before the piece's end {end}")));
        }
        pace(node, n).await;
        let mut left = n;
        while left > 0 {
            let m = splice(&rx, &*conn, left).await.map_err(|e| fail(sent_any, "splice to socket", e))?;
            if m == 0 {
                return Err(SpliceError::Failed("the child closed the connection".into()));
            }
            left -= m;
            sent_any = true;
            counters::bump(&counters::UPLOAD_BYTES_SPLICED, m as u64);
        }
        pos += n as u64;
    }
    Ok(())
}

/// Waits for `upload.rateLimit` to admit `n` more bytes.
async fn pace(node: &Node, n: usize) {
    if let Some(rl) = &node.upload_rate {
        let wait = rl.reserve(n as u64, Instant::now());
        if !wait.is_zero() {
            compio::time::sleep(wait).await;
        }
    }
}

/// The fallback: read a chunk of the task file, write it to the connection.
async fn copy_range(
    node: &Node,
    conn: &mut compio::net::TcpStream,
    file: &compio::fs::File,
    start: u64,
    end: u64,
) -> Result<(), String> {
    let mut buf: Vec<u8> = Vec::with_capacity(limits::WRITE_CHUNK_BYTES);
    let mut pos = start;
    while pos < end {
        let want = (end - pos).min(limits::WRITE_CHUNK_BYTES as u64) as usize;
        buf.clear();
        let BufResult(res, b) = file.read_exact_at(buf.slice(..want), pos).await;
        buf = b.into_inner();
        res.map_err(|e| format!("read task file: {e}"))?;
        pace(node, want).await;
        let BufResult(res, b) = conn.write_all(buf).await;
        buf = b;
        res.map_err(|e| format!("write piece: {e}"))?;
        counters::bump(&counters::UPLOAD_BYTES_COPIED, want as u64);
        pos += want as u64;
    }
    Ok(())
}
