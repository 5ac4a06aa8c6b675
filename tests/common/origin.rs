//! An in-process HTTP/1.1 origin on 127.0.0.1:0 (std threads, one per connection, keep-alive)
//! serving registered byte strings with per-path behaviour, and recording every request.
//!
//! Invariant: every request is recorded (connection id, method, target, Range) before its
//! response is written, and `bytes_served` counts only body bytes the socket accepted; so a test
//! can reason about what the daemon fetched once its client has returned.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{self, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::range::{answer, Answer};
use super::server::{header_in, serve_keep_alive, write_response_head as write_head, RequestHead, Server};

const WRITE_CHUNK_BYTES: usize = 64 * 1024;
/// An idle keep-alive connection is dropped after this, so connection threads do not linger.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Honours a single `Range: bytes=..` with 206 + Content-Range, 416 when unsatisfiable,
    /// 200 with the full body otherwise.
    Normal,
    /// Always 200 with the full body and a Content-Length.
    IgnoreRange,
    /// 200, `Transfer-Encoding: chunked`, no length; ignores Range.
    Chunked,
    /// 200, no length, body ends when the server closes the connection; ignores Range.
    CloseDelimited,
    /// Answers this status with a short text body.
    Status(u16),
}

#[derive(Clone, Copy, Debug)]
pub struct Serve {
    pub mode: Mode,
    /// Sleep before the response head (lets concurrent clients overlap, makes pieces slow).
    pub first_byte_delay: Duration,
}

impl Serve {
    pub fn normal() -> Serve {
        Serve { mode: Mode::Normal, first_byte_delay: Duration::ZERO }
    }
    pub fn ignore_range() -> Serve {
        Serve { mode: Mode::IgnoreRange, ..Serve::normal() }
    }
    pub fn chunked() -> Serve {
        Serve { mode: Mode::Chunked, ..Serve::normal() }
    }
    pub fn close_delimited() -> Serve {
        Serve { mode: Mode::CloseDelimited, ..Serve::normal() }
    }
    pub fn status(code: u16) -> Serve {
        Serve { mode: Mode::Status(code), ..Serve::normal() }
    }
    pub fn with_delay(self, delay: Duration) -> Serve {
        Serve { first_byte_delay: delay, ..self }
    }
}

#[derive(Clone, Debug)]
pub struct Request {
    /// Numbered per accepted TCP connection, from 0.
    pub conn_id: u64,
    pub method: String,
    /// The request target as sent (path + query).
    pub target: String,
    /// The target without its query string.
    pub path: String,
    pub range: Option<String>,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// A registered body and how to serve it.
type Entry = (Arc<Vec<u8>>, Serve);

struct Shared {
    files: Mutex<HashMap<String, Entry>>,
    requests: Mutex<Vec<Request>>,
    bytes_served: AtomicU64,
}

pub struct TestOrigin {
    shared: Arc<Shared>,
    /// Owns the accept thread and the connections; dropping it stops them.
    server: Server,
}

impl TestOrigin {
    pub fn start() -> TestOrigin {
        let shared = Arc::new(Shared {
            files: Mutex::new(HashMap::new()),
            requests: Mutex::new(Vec::new()),
            bytes_served: AtomicU64::new(0),
        });
        let for_server = Arc::clone(&shared);
        let server = Server::start(IDLE_TIMEOUT, move |stream, conn_id, _stop| {
            let _ = serve_connection(stream, conn_id, &for_server);
        });
        TestOrigin { shared, server }
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.server.addr(), path)
    }

    pub fn add(&self, path: &str, bytes: Vec<u8>) {
        self.add_with(path, bytes, Serve::normal());
    }

    pub fn add_with(&self, path: &str, bytes: Vec<u8>, serve: Serve) {
        assert!(path.starts_with('/'), "origin paths start with '/': {path}");
        self.shared.files.lock().unwrap().insert(path.to_string(), (Arc::new(bytes), serve));
    }

    pub fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Requests whose path (query stripped) is `path`.
    pub fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }

    pub fn distinct_connections(&self, path: &str) -> usize {
        self.requests_for(path).iter().map(|r| r.conn_id).collect::<BTreeSet<_>>().len()
    }

    /// How often each Range header value (None = no Range) was requested for `path`.
    pub fn range_counts(&self, path: &str) -> BTreeMap<Option<String>, usize> {
        let mut counts = BTreeMap::new();
        for request in self.requests_for(path) {
            *counts.entry(request.range).or_insert(0) += 1;
        }
        counts
    }

    pub fn bytes_served(&self) -> u64 {
        self.shared.bytes_served.load(Ordering::SeqCst)
    }
}

fn serve_connection(stream: TcpStream, conn_id: u64, shared: &Shared) -> io::Result<()> {
    serve_keep_alive(stream, |head, writer| {
        let request = record(conn_id, head, shared);
        let entry = shared.files.lock().unwrap().get(&request.path).cloned();
        respond(writer, &request, entry, head.keep_alive(), shared)
    })
}

fn record(conn_id: u64, head: &RequestHead, shared: &Shared) -> Request {
    let request = Request {
        conn_id,
        method: head.method.clone(),
        target: head.target.clone(),
        path: head.path().to_string(),
        range: head.header("range").map(str::to_string),
        headers: head.headers.clone(),
    };
    shared.requests.lock().unwrap().push(request.clone());
    request
}

/// Writes one response; returns whether the connection stays open.
fn respond(w: &mut TcpStream, req: &Request, entry: Option<Entry>, keep: bool, shared: &Shared) -> io::Result<bool> {
    let Some((body, serve)) = entry else {
        return respond_status(w, req, 404, keep, shared);
    };
    if !serve.first_byte_delay.is_zero() {
        std::thread::sleep(serve.first_byte_delay);
    }
    let head_only = req.method.eq_ignore_ascii_case("HEAD");
    match serve.mode {
        Mode::Status(code) => respond_status(w, req, code, keep, shared),
        Mode::Normal => respond_ranged(w, &body, req.range.as_deref(), head_only, keep, shared),
        Mode::IgnoreRange => {
            write_head(w, 200, &[("Content-Length", body.len().to_string())], keep)?;
            if !head_only {
                write_counted(w, &body, shared)?;
            }
            Ok(keep)
        }
        Mode::Chunked => {
            write_head(w, 200, &[("Transfer-Encoding", "chunked".to_string())], keep)?;
            if !head_only {
                write_chunked(w, &body, shared)?;
            }
            Ok(keep)
        }
        Mode::CloseDelimited => {
            write_head(w, 200, &[], false)?;
            if !head_only {
                write_counted(w, &body, shared)?;
            }
            Ok(false)
        }
    }
}

fn respond_status(w: &mut TcpStream, req: &Request, code: u16, keep: bool, shared: &Shared) -> io::Result<bool> {
    let body = format!("status {code} for {}\n", req.target).into_bytes();
    write_head(w, code, &[("Content-Length", body.len().to_string())], keep)?;
    if !req.method.eq_ignore_ascii_case("HEAD") {
        write_counted(w, &body, shared)?;
    }
    Ok(keep)
}

fn respond_ranged(
    w: &mut TcpStream,
    body: &[u8],
    range: Option<&str>,
    head_only: bool,
    keep: bool,
    shared: &Shared,
) -> io::Result<bool> {
    let len = body.len() as u64;
    let (code, slice, mut headers) = match range.map(|r| answer(r, len)) {
        None | Some(Answer::Full) => (200, body, vec![]),
        Some(Answer::Partial(first, last)) => {
            (206, &body[first as usize..=last as usize], vec![("Content-Range", format!("bytes {first}-{last}/{len}"))])
        }
        Some(Answer::Unsatisfiable) => (416, &body[..0], vec![("Content-Range", format!("bytes */{len}"))]),
    };
    headers.push(("Accept-Ranges", "bytes".to_string()));
    headers.push(("Content-Length", slice.len().to_string()));
    write_head(w, code, &headers, keep)?;
    if !head_only {
        write_counted(w, slice, shared)?;
    }
    Ok(keep)
}

fn write_counted(w: &mut TcpStream, bytes: &[u8], shared: &Shared) -> io::Result<()> {
    for chunk in bytes.chunks(WRITE_CHUNK_BYTES) {
        w.write_all(chunk)?;
        shared.bytes_served.fetch_add(chunk.len() as u64, Ordering::SeqCst);
    }
    Ok(())
}

fn write_chunked(w: &mut TcpStream, bytes: &[u8], shared: &Shared) -> io::Result<()> {
    for chunk in bytes.chunks(WRITE_CHUNK_BYTES) {
        w.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())?;
        write_counted(w, chunk, shared)?;
        w.write_all(b"\r\n")?;
    }
    w.write_all(b"0\r\n\r\n")
}
