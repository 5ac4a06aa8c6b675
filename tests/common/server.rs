//! Plumbing shared by the in-process HTTP/1.1 origins of the tests (std threads, one per
//! connection): a listener on 127.0.0.1:0 with its accept thread, a request-head reader, a
//! keep-alive request loop and a response-head writer. What an origin answers is its own code.
//!
//! Invariant: dropping a `Server` stops its accept thread and shuts down every connection it
//! accepted, so no connection thread outlives the test for long; a request head is never read
//! past `MAX_HEAD_BYTES`.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Longest request head (request line + fields) an origin reads.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

struct Conns {
    stop: AtomicBool,
    next_conn: AtomicU64,
    /// Clones of accepted connections, shut down on Drop to unblock their threads.
    open: Mutex<Vec<TcpStream>>,
}

/// A listener on 127.0.0.1:0 whose accept thread hands each connection to `serve` on a thread
/// of its own.
pub struct Server {
    addr: SocketAddr,
    conns: Arc<Conns>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// `serve(stream, conn_id, stop)`: `conn_id` numbers accepted connections from 0; `stop` turns
    /// true when the server is dropped (for handlers that sleep or trickle bytes). A connection
    /// silent for `idle_timeout` fails its reads.
    pub fn start<F>(idle_timeout: Duration, serve: F) -> Server
    where
        F: Fn(TcpStream, u64, &AtomicBool) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("origin bind");
        let addr = listener.local_addr().expect("origin addr");
        let conns = Arc::new(Conns {
            stop: AtomicBool::new(false),
            next_conn: AtomicU64::new(0),
            open: Mutex::new(Vec::new()),
        });
        let for_acceptor = Arc::clone(&conns);
        let acceptor = std::thread::spawn(move || accept_loop(listener, for_acceptor, idle_timeout, Arc::new(serve)));
        Server { addr, conns, acceptor: Some(acceptor) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn n_connections(&self) -> u64 {
        self.conns.next_conn.load(Ordering::SeqCst)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.conns.stop.store(true, Ordering::SeqCst);
        // accept() blocks: a connection to ourselves wakes it to see the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        if let Ok(open) = self.conns.open.lock() {
            for stream in open.iter() {
                let _ = stream.shutdown(Shutdown::Both);
            }
        }
    }
}

fn accept_loop<F>(listener: TcpListener, conns: Arc<Conns>, idle_timeout: Duration, serve: Arc<F>)
where
    F: Fn(TcpStream, u64, &AtomicBool) + Send + Sync + 'static,
{
    for stream in listener.incoming() {
        if conns.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let _ = stream.set_nodelay(true);
        let _ = stream.set_read_timeout(Some(idle_timeout));
        if let Ok(clone) = stream.try_clone() {
            conns.open.lock().unwrap().push(clone);
        }
        let conn_id = conns.next_conn.fetch_add(1, Ordering::SeqCst);
        let (conns, serve) = (Arc::clone(&conns), Arc::clone(&serve));
        std::thread::spawn(move || serve(stream, conn_id, &conns.stop));
    }
}

/// A request head as read: request line and fields, values trimmed.
#[derive(Clone, Debug)]
pub struct RequestHead {
    pub method: String,
    /// The request target as sent (path + query).
    pub target: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
}

impl RequestHead {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }

    /// The target without its query string.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }

    /// Whether the client lets the connection stay open (HTTP/1.0 only with `keep-alive`).
    pub fn keep_alive(&self) -> bool {
        let connection = self.header("connection").unwrap_or("").to_ascii_lowercase();
        if self.version == "HTTP/1.0" {
            return connection.contains("keep-alive");
        }
        !connection.contains("close")
    }

    pub fn content_length(&self) -> u64 {
        self.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0)
    }
}

/// The first value of field `name` (case-insensitive) in `headers`.
pub fn header_in<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Reads one request head; Ok(None) on a clean EOF before any byte. Stray CRLFs between requests
/// are skipped; a head over `MAX_HEAD_BYTES` or without method, target and version is an error.
pub fn read_request_head<R: BufRead>(reader: &mut R) -> io::Result<Option<RequestHead>> {
    let mut lines: Vec<String> = Vec::new();
    let mut total = 0;
    loop {
        let mut line = String::new();
        let n = reader.read_line(&mut line)?;
        if n == 0 {
            return if lines.is_empty() { Ok(None) } else { Err(io::ErrorKind::UnexpectedEof.into()) };
        }
        total += n;
        if total > MAX_HEAD_BYTES {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request head too large"));
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            if lines.is_empty() {
                continue;
            }
            break;
        }
        lines.push(line);
    }
    let mut parts = lines[0].split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "bad request line"));
    };
    let headers = lines[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Ok(Some(RequestHead {
        method: method.to_string(),
        target: target.to_string(),
        version: version.to_string(),
        headers,
    }))
}

/// The request loop of one plain connection: reads a head, skips its body, lets `respond` answer
/// and returns once `respond` says the connection ends (false) or the client goes away.
pub fn serve_keep_alive(
    stream: TcpStream,
    mut respond: impl FnMut(&RequestHead, &mut TcpStream) -> io::Result<bool>,
) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut writer = stream;
    while let Some(head) = read_request_head(&mut reader)? {
        io::copy(&mut reader.by_ref().take(head.content_length()), &mut io::sink())?;
        let keep = respond(&head, &mut writer)?;
        writer.flush()?;
        if !keep {
            let _ = writer.shutdown(Shutdown::Both);
            return Ok(());
        }
    }
    Ok(())
}

pub fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// `HTTP/1.1 CODE REASON`, `Content-Type: application/octet-stream`, `headers`, and
/// `Connection: close` unless `keep`.
pub fn write_response_head(w: &mut impl Write, code: u16, headers: &[(&str, String)], keep: bool) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {code} {}\r\n", reason(code));
    head.push_str("Content-Type: application/octet-stream\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !keep {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    w.write_all(head.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Option<(&str, &str, bool, u64)>) {
        let got = read_request_head(&mut raw.as_bytes()).ok().flatten();
        let got = got.as_ref().map(|h| (h.method.as_str(), h.path(), h.keep_alive(), h.content_length()));
        assert_eq!(got, expected, "head {raw:?}");
    }

    #[test]
    fn request_head_parsing() {
        check("GET /a?q=1 HTTP/1.1\r\nHost: x\r\n\r\n", Some(("GET", "/a", true, 0)));
        check("\r\nPUT /b HTTP/1.1\r\nconnection: Close\r\nContent-Length: 7\r\n\r\n", Some(("PUT", "/b", false, 7)));
        check("GET / HTTP/1.0\r\n\r\n", Some(("GET", "/", false, 0)));
        check("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", Some(("GET", "/", true, 0)));
        check("GET /\r\n\r\n", None);
        check("", None);
    }
}
