//! `POST /batch`: a whole list on one connection. The request body is chunked NDJSON, one
//! `BatchEntry` per line, read only when one of the batch's `jobs` slots is free; each entry is sent
//! to the next core (round-robin) and runs there as an ordinary download; every result comes back
//! as one `BatchEvent::Entry` line, in completion order, and `BatchEvent::End` closes the stream.
//!
//! Invariant: at most `jobs` entries of a batch are in flight, and the connection's core holds at
//! most one undecoded read buffer and one partial line — so a 100,000-line list costs the daemon
//! what `jobs` downloads cost, not what the list costs. One entry's failure is one `Entry` line.

use std::cell::Cell;
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;

use compio::buf::{BufResult, IntoInner, IoBufMut};
use compio::io::AsyncRead;
use compio::net::UnixStream;

use crate::daemon::caller::Caller;
use crate::daemon::serving::{send_line, write};
use crate::daemon::shared::{BatchJob, CoreMsg, Shared};
use crate::error::{Error, Result};
use crate::http::body::{BodyDecoder, Step};
use crate::http::codec::Framing;
use crate::limits;
use crate::proto::{BatchEntry, BatchEvent, Event};

/// Entries in flight when the client does not say: enough to keep every core's keep-alive
/// connections busy while others wait on the disk (measured in PERF.md, "lists").
pub fn default_jobs(n_cores: usize) -> usize {
    (limits::BATCH_JOBS_PER_CORE * n_cores).clamp(1, limits::MAX_BATCH_JOBS)
}

/// Serves one batch; `leftover` is what the head's read already took of the body.
pub async fn serve(
    shared: &Arc<Shared>,
    stream: &mut UnixStream,
    jobs: Option<usize>,
    leftover: Vec<u8>,
    caller: &Caller,
) -> Result<()> {
    let n_jobs = jobs.unwrap_or_else(|| default_jobs(shared.cores.len())).clamp(1, limits::MAX_BATCH_JOBS);
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
    write(stream, head.as_bytes().to_vec()).await?;
    // The body is read while results are written: a second fd of the same socket for the reader.
    let fd = stream.as_fd().try_clone_to_owned().map_err(|e| Error::internal(format!("dup client socket: {e}")))?;
    let body = UnixStream::from_std(std::os::unix::net::UnixStream::from(fd))
        .map_err(|e| Error::internal(format!("adopt client socket: {e}")))?;
    let (slot_tx, slot_rx) = flume::bounded::<()>(n_jobs);
    // Unbounded, but never holds more than `n_jobs` results: each comes from an entry holding a slot.
    let (result_tx, result_rx) = flume::unbounded::<BatchEvent>();
    let n_entries = Rc::new(Cell::new(0u64));
    let reader = read_entries(shared.clone(), body, leftover, caller.clone(), (slot_tx, result_tx), n_entries.clone());
    // Cancelled on drop: if the client stops reading, the reader stops admitting entries.
    let reader = compio::runtime::spawn(reader);
    while let Ok(ev) = result_rx.recv_async().await {
        send_line(stream, &ev).await?;
        let _ = slot_rx.try_recv();
    }
    let error = match reader.await {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e.message),
        Err(_) => Some("the batch reader panicked".into()),
    };
    send_line(stream, &BatchEvent::End { entries: n_entries.get(), error }).await
}

/// The reader: takes a slot, then the next entry, and hands it to a core. Returns at the end of
/// the body (Ok) or at a framing error (Err); dropping its result sender then lets `serve` finish
/// once every entry in flight has answered.
async fn read_entries(
    shared: Arc<Shared>,
    mut stream: UnixStream,
    leftover: Vec<u8>,
    caller: Caller,
    (slot_tx, result_tx): (flume::Sender<()>, flume::Sender<BatchEvent>),
    n_entries: Rc<Cell<u64>>,
) -> Result<()> {
    let mut lines = LineSplitter::new(leftover);
    let mut buf = Vec::with_capacity(limits::BATCH_READ_BYTES);
    loop {
        while let Some(line) = lines.next_line()? {
            // A slot first: the next entry is not even parsed until one is free.
            if slot_tx.send_async(()).await.is_err() {
                return Ok(());
            }
            n_entries.set(n_entries.get() + 1);
            dispatch(&shared, &line, &caller, &result_tx);
        }
        if lines.is_done() {
            return Ok(());
        }
        buf.clear();
        let read = compio::time::timeout(limits::BATCH_IDLE_TIMEOUT, stream.read(buf.uninit())).await;
        let BufResult(res, b) =
            read.map_err(|_| Error::client(format!("the list sent nothing for {:?}", limits::BATCH_IDLE_TIMEOUT)))?;
        buf = b.into_inner();
        match res {
            Ok(0) => return Err(Error::client("the client closed the connection mid-list")),
            Ok(_) => lines.feed(&buf)?,
            Err(e) => return Err(Error::client(format!("read: {e}"))),
        }
    }
}

/// Parses one line and sends it to the next core; a line that is no `BatchEntry` is answered at
/// once (line 0: its line number is what could not be read).
fn dispatch(shared: &Shared, line: &[u8], caller: &Caller, result_tx: &flume::Sender<BatchEvent>) {
    // Each entry is a request for the idle clock (`aliveTime`): a long list keeps a spawned daemon up.
    shared.last_request_unix_ms.store(crate::clock::now_unix_ms(), std::sync::atomic::Ordering::Release);
    match serde_json::from_slice::<BatchEntry>(line) {
        Ok(entry) => {
            let job = BatchJob { entry, caller: caller.clone(), reply: result_tx.clone() };
            if let Err(flume::SendError(CoreMsg::Entry(job))) = shared.pick_core().send(CoreMsg::Entry(Box::new(job))) {
                let e = Error::internal("the daemon is shutting down");
                let _ = job.reply.send(BatchEvent::Entry {
                    line: job.entry.line,
                    url: job.entry.request.url.clone(),
                    result: Event::error(e),
                });
            }
        }
        Err(e) => {
            let ev = Event::error(Error::client(format!("bad batch entry: {e}")));
            let _ = result_tx.send(BatchEvent::Entry { line: 0, url: String::new(), result: ev });
        }
    }
}

/// Sans-IO: chunked request body in, NDJSON lines out. Holds the undecoded bytes not yet
/// consumed and at most one partial line (bounded by `MAX_API_BODY_BYTES`).
struct LineSplitter {
    decoder: BodyDecoder,
    raw: Vec<u8>,
    text: Vec<u8>,
    /// Bytes of `text` already searched for a newline.
    scanned: usize,
}

impl LineSplitter {
    fn new(leftover: Vec<u8>) -> LineSplitter {
        LineSplitter { decoder: BodyDecoder::new(Framing::Chunked), raw: leftover, text: Vec::new(), scanned: 0 }
    }

    fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        self.raw.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete line (without its `\n`; empty lines skipped); `None` = more input needed
    /// or the body is done. A last line without `\n` counts once the body ends.
    fn next_line(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(i) = self.text[self.scanned..].iter().position(|&b| b == b'\n') {
                let end = self.scanned + i;
                let line: Vec<u8> = self.text.drain(..=end).take(end).collect();
                self.scanned = 0;
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return Ok(Some(line));
            }
            self.scanned = self.text.len();
            if self.text.len() > limits::MAX_API_BODY_BYTES {
                return Err(Error::client(format!("a batch entry over {} bytes", limits::MAX_API_BODY_BYTES)));
            }
            if self.decoder.is_done() {
                let rest = std::mem::take(&mut self.text);
                self.scanned = 0;
                return Ok((!rest.iter().all(u8::is_ascii_whitespace)).then_some(rest));
            }
            let (used, step) = self
                .decoder
                .decode(&self.raw)
                .map_err(|e| Error::client(format!("malformed chunked list body: {e}")))?;
            if let Some(Step::Data { start, end }) = step {
                self.text.extend_from_slice(&self.raw[start..end]);
            }
            self.raw.drain(..used);
            if step.is_none() {
                return Ok(None);
            }
        }
    }

    fn is_done(&self) -> bool {
        self.decoder.is_done() && self.text.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `body` in pieces of `step` bytes; returns the lines, and whether the body ended.
    fn split(body: &[u8], step: usize) -> (Vec<String>, bool) {
        let mut s = LineSplitter::new(Vec::new());
        let mut out = Vec::new();
        for piece in body.chunks(step.max(1)) {
            s.feed(piece).expect("feed");
            while let Some(line) = s.next_line().expect("framing") {
                out.push(String::from_utf8(line).expect("utf-8"));
            }
        }
        while let Some(line) = s.next_line().expect("framing") {
            out.push(String::from_utf8(line).expect("utf-8"));
        }
        (out, s.is_done())
    }

    fn check(body: &str, lines: &[&str], done: bool) {
        for step in [1, 2, 3, 7, 1000] {
            let (got, is_done) = split(body.as_bytes(), step);
            assert_eq!(got, lines, "{body:?} in steps of {step}");
            assert_eq!(is_done, done, "{body:?} in steps of {step}");
        }
    }

    #[test]
    fn chunked_ndjson_is_split_into_lines_at_any_boundary() {
        check("0\r\n\r\n", &[], true);
        check("4\r\n{a}\n\r\n0\r\n\r\n", &["{a}"], true);
        // Lines across chunks, several lines in one chunk, blank lines, a last line without \n.
        check("2\r\n{a\r\n6\r\n}\n{b}\n\r\n5\r\n\n{c}\n\r\n3\r\n{d}\r\n0\r\n\r\n", &["{a}", "{b}", "{c}", "{d}"], true);
        // Not finished yet: what came so far, nothing invented.
        check("4\r\n{a}\n\r\n3\r\n{b}", &["{a}"], false);
    }

    #[test]
    fn malformed_framing_is_an_error() {
        let mut s = LineSplitter::new(b"zz\r\n".to_vec());
        assert!(s.next_line().is_err());
    }
}
