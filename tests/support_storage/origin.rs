//! A throttling in-process HTTP/1.1 origin on 127.0.0.1:0 (std threads, one per connection,
//! keep-alive) for the storage tests: it honours `Range: bytes=a-b` / `bytes=a-`, serves the bytes
//! at or past a per-file offset at a per-connection rate, and counts what it served per file.
//!
//! Invariant: every request is recorded (its Range) before its response is written, and a file's
//! `served` counter only grows by body bytes the socket accepted, so "bytes the daemon fetched" is
//! an upper bound a test can compare runs against. The rate is re-read before every chunk, so
//! `unthrottle` also speeds up responses already in flight; Drop stops every connection thread.

use std::collections::HashMap;
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::range;
use crate::common::server::{serve_keep_alive, write_response_head as write_head, RequestHead, Server};

/// Small enough that a throttled piece advances smoothly (32 KiB at 1 MiB/s = one write per 31 ms).
const CHUNK_BYTES: usize = 32 * 1024;
/// A silent keep-alive connection is dropped after this, so threads do not outlive a test long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One registered file: its bytes, its throttle and what was served of it.
struct File {
    body: Arc<Vec<u8>>,
    /// Bytes at offsets >= this are throttled.
    slow_from_offset: AtomicU64,
    /// Per-connection rate of the throttled region; 0 = unlimited.
    rate_bytes_per_sec: AtomicU64,
    served_bytes: AtomicU64,
    /// Requests numbered at or past this are never throttled (usize::MAX: all may be).
    fast_from_request: AtomicUsize,
    /// Responses whose body is being written right now.
    active_responses: AtomicUsize,
    /// Per request, in arrival order: its Range header (None = no Range) and the body bytes
    /// served for it so far.
    requests: Mutex<Vec<(Option<String>, u64)>>,
}

struct Shared {
    files: Mutex<HashMap<String, Arc<File>>>,
}

pub struct ThrottledOrigin {
    shared: Arc<Shared>,
    /// Owns the accept thread and the connections; dropping it stops them (and every throttle).
    server: Server,
}

impl ThrottledOrigin {
    pub fn start() -> ThrottledOrigin {
        let shared = Arc::new(Shared { files: Mutex::new(HashMap::new()) });
        let for_server = Arc::clone(&shared);
        let server = Server::start(IDLE_TIMEOUT, move |stream, _conn_id, stop| {
            let _ = serve_connection(stream, &for_server, stop);
        });
        ThrottledOrigin { shared, server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.addr(), path)
    }

    /// Registers `body` at `path`, unthrottled.
    pub fn add(&self, path: &str, body: Vec<u8>) {
        assert!(path.starts_with('/'), "origin paths start with '/': {path}");
        let file = File {
            body: Arc::new(body),
            slow_from_offset: AtomicU64::new(0),
            rate_bytes_per_sec: AtomicU64::new(0),
            served_bytes: AtomicU64::new(0),
            fast_from_request: AtomicUsize::new(usize::MAX),
            active_responses: AtomicUsize::new(0),
            requests: Mutex::new(Vec::new()),
        };
        self.shared.files.lock().unwrap().insert(path.to_string(), Arc::new(file));
    }

    /// Serves the bytes of `path` at offsets >= `slow_from_offset` at `bytes_per_sec` per
    /// connection (the bytes before it at full speed).
    pub fn throttle(&self, path: &str, slow_from_offset: u64, bytes_per_sec: u64) {
        let file = self.file(path);
        file.slow_from_offset.store(slow_from_offset, Ordering::SeqCst);
        file.rate_bytes_per_sec.store(bytes_per_sec, Ordering::SeqCst);
    }

    pub fn unthrottle(&self, path: &str) {
        self.file(path).rate_bytes_per_sec.store(0, Ordering::SeqCst);
    }

    /// Serves every request for `path` from now on at full speed while the responses already
    /// in flight stay throttled: lets a test hold an old download's pieces back while a new one
    /// runs.
    pub fn unthrottle_new_requests(&self, path: &str) {
        let file = self.file(path);
        let requests = file.requests.lock().unwrap();
        file.fast_from_request.store(requests.len(), Ordering::SeqCst);
    }

    /// Responses for `path` whose body is still being written.
    pub fn active_responses(&self, path: &str) -> usize {
        self.file(path).active_responses.load(Ordering::SeqCst)
    }

    /// Body bytes of `path` the sockets accepted so far.
    pub fn served_bytes(&self, path: &str) -> u64 {
        self.file(path).served_bytes.load(Ordering::SeqCst)
    }

    /// Body bytes of `path` served for requests numbered `first_request` and later: what one run
    /// of a daemon fetched, unaffected by bytes still trickling into an earlier run's sockets.
    pub fn served_bytes_since(&self, path: &str, first_request: usize) -> u64 {
        self.file(path).requests.lock().unwrap().iter().skip(first_request).map(|(_, n)| n).sum()
    }

    /// Range headers of every request for `path` so far, in arrival order.
    pub fn ranges(&self, path: &str) -> Vec<Option<String>> {
        self.file(path).requests.lock().unwrap().iter().map(|(r, _)| r.clone()).collect()
    }

    pub fn n_requests(&self, path: &str) -> usize {
        self.ranges(path).len()
    }

    fn file(&self, path: &str) -> Arc<File> {
        let files = self.shared.files.lock().unwrap();
        Arc::clone(files.get(path).unwrap_or_else(|| panic!("no origin file {path}")))
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared, stop: &AtomicBool) -> io::Result<()> {
    serve_keep_alive(stream, |head, writer| {
        let file = shared.files.lock().unwrap().get(head.path()).cloned();
        let Some(file) = file else {
            write_head(writer, 404, &[("Content-Length", "0".into())], false)?;
            return Ok(false);
        };
        let request_idx = {
            let mut requests = file.requests.lock().unwrap();
            requests.push((head.header("range").map(str::to_string), 0));
            requests.len() - 1
        };
        file.active_responses.fetch_add(1, Ordering::SeqCst);
        let result = respond_file(writer, head, &file, request_idx, stop);
        file.active_responses.fetch_sub(1, Ordering::SeqCst);
        result?;
        Ok(head.keep_alive())
    })
}

/// `bytes=a-b` or `bytes=a-` against `len`: Some((first, last)) inclusive, Err(()) when
/// unsatisfiable, None (serve the whole body) for anything else — suffix ranges included: this
/// origin, like some real ones, does not support them.
fn parse_range(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    match range::parse(value)? {
        range::Spec::Suffix(_) => None,
        range::Spec::From { .. } => match range::answer(value, len) {
            range::Answer::Full => None,
            range::Answer::Partial(first, last) => Some(Ok((first, last))),
            range::Answer::Unsatisfiable => Some(Err(())),
        },
    }
}

fn respond_file(w: &mut TcpStream, head: &RequestHead, file: &File, idx: usize, stop: &AtomicBool) -> io::Result<()> {
    let len = file.body.len() as u64;
    let (status, first, end, content_range) = match head.header("range").and_then(|r| parse_range(r, len)) {
        None => (200, 0, len, None),
        Some(Ok((first, last))) => (206, first, last + 1, Some(format!("bytes {first}-{last}/{len}"))),
        Some(Err(())) => {
            let headers = [("Content-Range", format!("bytes */{len}")), ("Content-Length", "0".into())];
            return write_head(w, 416, &headers, head.keep_alive());
        }
    };
    let mut headers = vec![("Accept-Ranges", "bytes".to_string()), ("Content-Length", (end - first).to_string())];
    if let Some(cr) = content_range {
        headers.push(("Content-Range", cr));
    }
    write_head(w, status, &headers, head.keep_alive())?;
    if head.method.eq_ignore_ascii_case("HEAD") {
        return Ok(());
    }
    write_body(w, file, (first, end), idx, stop)
}

/// Writes `body[first..end]`, sleeping after each throttled chunk to hold the file's rate.
fn write_body(
    w: &mut TcpStream,
    file: &File,
    (first, end): (u64, u64),
    idx: usize,
    stop: &AtomicBool,
) -> io::Result<()> {
    let mut pos = first;
    while pos < end {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::new(io::ErrorKind::Interrupted, "origin stopping"));
        }
        let slow_from = file.slow_from_offset.load(Ordering::SeqCst);
        let exempt = idx >= file.fast_from_request.load(Ordering::SeqCst);
        let rate = if exempt { 0 } else { file.rate_bytes_per_sec.load(Ordering::SeqCst) };
        let throttled = rate > 0 && pos >= slow_from;
        // A chunk never straddles the throttle boundary, so the fast prefix stays fast.
        let mut chunk_end = (pos + CHUNK_BYTES as u64).min(end);
        if rate > 0 && pos < slow_from {
            chunk_end = chunk_end.min(slow_from);
        }
        w.write_all(&file.body[pos as usize..chunk_end as usize])?;
        file.served_bytes.fetch_add(chunk_end - pos, Ordering::SeqCst);
        file.requests.lock().unwrap()[idx].1 += chunk_end - pos;
        if throttled {
            std::thread::sleep(Duration::from_secs_f64((chunk_end - pos) as f64 / rate as f64));
        }
        pos = chunk_end;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    fn check(value: &str, len: u64, expected: Option<Result<(u64, u64), ()>>) {
        assert_eq!(parse_range(value, len), expected, "Range {value:?} on {len} bytes");
    }

    #[test]
    fn range_parsing() {
        check("bytes=0-9", 100, Some(Ok((0, 9))));
        check("bytes=90-200", 100, Some(Ok((90, 99))));
        check("bytes=10-", 100, Some(Ok((10, 99))));
        check("bytes=100-", 100, Some(Err(())));
        check("bytes=5-1", 100, None);
        check("bytes=-10", 100, None);
        check("items=0-1", 100, None);
    }
}
