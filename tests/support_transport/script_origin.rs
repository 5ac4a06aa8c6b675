//! A scriptable in-process origin on 127.0.0.1:0 (std threads, one per connection), plain or TLS
//! (rustls server), whose every response is written by a test-supplied handler — so a test can
//! send exactly the hostile bytes it wants: oversized heads, bad framing, wrong ranges, stalls,
//! truncation with or without TLS close_notify.
//!
//! Invariant: every request is recorded before its handler runs, and `max_active` is the largest
//! number of handlers that ran at the same time (an "active request" is one whose head was read
//! and whose handler has not returned). Dropping the origin stops every stall and closes every
//! connection, so no thread outlives the test for long.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::server::{header_in, read_request_head, reason, Server};

/// A connection thread gives up on a silent client after this.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct Req {
    /// Numbered per accepted TCP connection, from 0.
    pub conn_id: u64,
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// `Range: bytes=first-last` parsed (closed ranges only, the daemon sends no other form).
    pub range: Option<(u64, u64)>,
}

impl Req {
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(&self.headers, name)
    }
}

/// What the server does with the connection after a handler returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    KeepAlive,
    /// Clean close: with TLS, close_notify is sent first.
    Close,
    /// TCP shutdown without anything more (with TLS: no close_notify — a truncation).
    Cut,
}

/// The handler's view of the connection.
pub struct Ctx<'a> {
    w: &'a mut dyn Write,
    stop: &'a AtomicBool,
}

impl Ctx<'_> {
    /// Writes and flushes (through TLS when the origin has it).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.w.flush()
    }

    /// Sleeps up to `max`, returning early when the origin is dropped.
    pub fn stall(&self, max: Duration) {
        let deadline = Instant::now() + max;
        while Instant::now() < deadline && !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Writes a head (`status`, `headers` verbatim) and then `body`.
    pub fn respond(&mut self, status: u16, headers: &[(&str, String)], body: &[u8]) -> io::Result<()> {
        let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        self.write(head.as_bytes())?;
        for chunk in body.chunks(256 * 1024) {
            self.write(chunk)?;
        }
        Ok(())
    }

    /// A correct answer for `body`: 206 + Content-Range for a satisfiable Range, else 200.
    pub fn serve_ranged(&mut self, req: &Req, body: &[u8]) -> io::Result<Next> {
        let len = body.len() as u64;
        match req.range {
            Some((first, last)) if first < len => {
                let last = last.min(len - 1);
                let slice = &body[first as usize..=last as usize];
                let headers = [
                    ("Content-Range", format!("bytes {first}-{last}/{len}")),
                    ("Content-Length", slice.len().to_string()),
                ];
                self.respond(206, &headers, slice)?;
            }
            _ => self.respond(200, &[("Content-Length", len.to_string())], body)?,
        }
        Ok(Next::KeepAlive)
    }
}

pub type Handler = dyn Fn(&Req, &mut Ctx) -> io::Result<Next> + Send + Sync;

struct Shared {
    handler: Box<Handler>,
    tls: Option<Arc<rustls::ServerConfig>>,
    requests: Mutex<Vec<Req>>,
    active: AtomicUsize,
    max_active: AtomicUsize,
}

pub struct ScriptOrigin {
    shared: Arc<Shared>,
    /// Owns the accept thread and the connections; dropping it stops every stall and connection.
    server: Server,
}

impl ScriptOrigin {
    /// A plain-HTTP origin answering every request with `handler`.
    pub fn start(handler: impl Fn(&Req, &mut Ctx) -> io::Result<Next> + Send + Sync + 'static) -> ScriptOrigin {
        ScriptOrigin::start_inner(Box::new(handler), None)
    }

    /// A TLS origin presenting `cert_pem` (leaf first) with `key_pem`.
    pub fn start_tls(
        cert_pem: &Path,
        key_pem: &Path,
        handler: impl Fn(&Req, &mut Ctx) -> io::Result<Next> + Send + Sync + 'static,
    ) -> ScriptOrigin {
        ScriptOrigin::start_inner(Box::new(handler), Some(server_config(cert_pem, key_pem)))
    }

    fn start_inner(handler: Box<Handler>, tls: Option<Arc<rustls::ServerConfig>>) -> ScriptOrigin {
        let shared = Arc::new(Shared {
            handler,
            tls,
            requests: Mutex::new(Vec::new()),
            active: AtomicUsize::new(0),
            max_active: AtomicUsize::new(0),
        });
        let for_server = Arc::clone(&shared);
        let server = Server::start(READ_TIMEOUT, move |stream, conn_id, stop| {
            let _ = match for_server.tls.clone() {
                None => {
                    let raw = stream.try_clone();
                    raw.and_then(|raw| serve(stream, raw, conn_id, &for_server, stop, |_| {}))
                }
                Some(config) => serve_tls(stream, config, conn_id, &for_server, stop),
            };
        });
        ScriptOrigin { shared, server }
    }

    pub fn port(&self) -> u16 {
        self.server.addr().port()
    }

    /// `http://127.0.0.1:PORT{path}` (`https://` for a TLS origin).
    pub fn url(&self, path: &str) -> String {
        let scheme = if self.shared.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}{path}", self.server.addr())
    }

    pub fn requests(&self) -> Vec<Req> {
        self.shared.requests.lock().unwrap().clone()
    }

    pub fn max_active(&self) -> usize {
        self.shared.max_active.load(Ordering::SeqCst)
    }

    pub fn n_connections(&self) -> u64 {
        self.server.n_connections()
    }
}

fn server_config(cert_pem: &Path, key_pem: &Path) -> Arc<rustls::ServerConfig> {
    let cert_bytes = std::fs::read(cert_pem).expect("read server cert");
    let key_bytes = std::fs::read(key_pem).expect("read server key");
    let certs: Vec<_> =
        rustls_pemfile::certs(&mut cert_bytes.as_slice()).collect::<Result<_, _>>().expect("parse server cert");
    let key = rustls_pemfile::private_key(&mut key_bytes.as_slice()).expect("parse server key").expect("a key");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .expect("server cert + key");
    Arc::new(config)
}

fn serve_tls(
    stream: TcpStream,
    config: Arc<rustls::ServerConfig>,
    conn_id: u64,
    shared: &Shared,
    stop: &AtomicBool,
) -> io::Result<()> {
    let raw = stream.try_clone()?;
    let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
    let tls = rustls::StreamOwned::new(conn, stream);
    serve(tls, raw, conn_id, shared, stop, |s: &mut rustls::StreamOwned<rustls::ServerConnection, TcpStream>| {
        s.conn.send_close_notify();
        let _ = s.flush();
    })
}

/// The request loop of one connection; `close_clean` runs before a clean close.
fn serve<S: Read + Write>(
    stream: S,
    raw: TcpStream,
    conn_id: u64,
    shared: &Shared,
    stop: &AtomicBool,
    close_clean: impl FnOnce(&mut S),
) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    while let Some(req) = read_request(&mut reader, conn_id)? {
        shared.requests.lock().unwrap().push(req.clone());
        let now = shared.active.fetch_add(1, Ordering::SeqCst) + 1;
        shared.max_active.fetch_max(now, Ordering::SeqCst);
        let mut ctx = Ctx { w: reader.get_mut(), stop };
        let next = (shared.handler)(&req, &mut ctx);
        shared.active.fetch_sub(1, Ordering::SeqCst);
        match next? {
            Next::KeepAlive => continue,
            Next::Close => {
                close_clean(reader.get_mut());
                let _ = raw.shutdown(Shutdown::Both);
                return Ok(());
            }
            Next::Cut => {
                let _ = raw.shutdown(Shutdown::Both);
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Reads one request head; Ok(None) on a clean EOF before any byte.
fn read_request<R: BufRead>(reader: &mut R, conn_id: u64) -> io::Result<Option<Req>> {
    let Some(head) = read_request_head(reader)? else {
        return Ok(None);
    };
    let range = head.header("range").and_then(parse_closed_range);
    Ok(Some(Req { conn_id, method: head.method, target: head.target, headers: head.headers, range }))
}

/// `bytes=a-b` only (what the daemon sends); the script judges it against its body.
fn parse_closed_range(v: &str) -> Option<(u64, u64)> {
    match crate::common::range::parse(v)? {
        crate::common::range::Spec::From { first, last: Some(last) } => Some((first, last)),
        _ => None,
    }
}
