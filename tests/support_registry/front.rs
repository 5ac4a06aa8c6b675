//! A FAKE, for faults only: a small HTTP front on 127.0.0.1 that forwards every request to a
//! real registry and injects what no registry we can run here can be made to do — 429 answers
//! with `Retry-After` (GHCR, Docker Hub), and blob GETs answered with a 307 to a separate
//! "object storage" host with presigned, expiring URLs (Harbor on S3, GHCR, Docker Hub). The
//! filesystem driver of distribution never redirects, and no S3 service is reachable.
//!
//! A blob GET is redirected only after the registry said yes to the same request (forwarded as
//! HEAD, Authorization and all), so the registry's auth still decides. The store serves the
//! registry's own stored bytes with Range support, answers 403 (S3's "Request has expired") once
//! a URL's lifetime is over or its signature is wrong, and records whether any request carried
//! `Authorization`.
//!
//! Invariant: one request per connection (`Connection: close` both ways); both listeners stop
//! when the `Front` is dropped.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::server::{serve_keep_alive, write_response_head, RequestHead, Server};
use crate::common::sha256_hex;

const IDLE: Duration = Duration::from_secs(30);
const SECRET: &str = "e2e-presign-secret";

#[derive(Default, Clone)]
pub struct FrontOpts {
    /// Manifest GETs answered 429 before the registry sees one (`usize::MAX`: all of them).
    pub manifest_429s: usize,
    /// Blob GETs answered 429 likewise.
    pub blob_429s: usize,
    /// The 429s' `Retry-After` value; None sends none.
    pub retry_after: Option<&'static str>,
    /// Redirect blob GETs to the store, with URLs valid this long.
    pub redirect_lifetime: Option<Duration>,
    /// Added to the `scope` of the registry's 401 challenges: a challenge naming several scopes.
    pub challenge_extra_scope: Option<&'static str>,
}

/// One request as the front or the store saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// "front" or "store".
    pub at: &'static str,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub authorization: bool,
    pub range: Option<String>,
}

struct State {
    opts: FrontOpts,
    upstream: String,
    blob_root: PathBuf,
    store_port: Mutex<u16>,
    n_manifest_429s: AtomicUsize,
    n_blob_429s: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

pub struct Front {
    front: Server,
    _store: Server,
    state: Arc<State>,
}

impl Front {
    /// A front for the registry at `upstream` (`127.0.0.1:PORT`) whose filesystem storage root
    /// is `blob_root` (the store serves blobs from there).
    pub fn start(upstream: &str, blob_root: PathBuf, opts: FrontOpts) -> Front {
        let state = Arc::new(State {
            opts,
            upstream: upstream.to_string(),
            blob_root,
            store_port: Mutex::new(0),
            n_manifest_429s: AtomicUsize::new(0),
            n_blob_429s: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let for_store = Arc::clone(&state);
        let store = Server::start(IDLE, move |stream, _, _| {
            if !is_tls_hello(&stream) {
                let _ = serve_keep_alive(stream, |head, w| store_answer(&for_store, head, w).map(|()| false));
            }
        });
        *state.store_port.lock().unwrap() = store.addr().port();
        let for_front = Arc::clone(&state);
        let front = Server::start(IDLE, move |stream, _, _| {
            if !is_tls_hello(&stream) {
                let _ = serve_keep_alive(stream, |head, w| front_answer(&for_front, head, w).map(|()| false));
            }
        });
        Front { front, _store: store, state }
    }

    /// `127.0.0.1:PORT` of the front: the registry as the daemon sees it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.front.addr().port())
    }

    pub fn oras_url(&self, reference: &str) -> String {
        format!("oras://{}/{reference}", self.host())
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// 429s served so far: (manifest, blob).
    pub fn n_429s(&self) -> (usize, usize) {
        let n = |c: &AtomicUsize, limit: usize| c.load(Ordering::SeqCst).min(limit);
        (
            n(&self.state.n_manifest_429s, self.state.opts.manifest_429s),
            n(&self.state.n_blob_429s, self.state.opts.blob_429s),
        )
    }
}

/// A TLS ClientHello (the daemon tries https first on loopback) has no line end for a request
/// reader to wait for: close at once, as a plain-http registry's answer ends the attempt.
/// (The server keeps a clone of every stream, so closing takes an explicit shutdown.)
fn is_tls_hello(stream: &TcpStream) -> bool {
    let mut first = [0u8; 1];
    let hello = matches!(stream.peek(&mut first), Ok(1) if first[0] == 0x16);
    if hello {
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }
    hello
}

fn record(state: &State, at: &'static str, head: &RequestHead, status: u16) {
    let seen = Seen {
        at,
        method: head.method.clone(),
        path: head.path().to_string(),
        status,
        authorization: head.header("authorization").is_some(),
        range: head.header("range").map(str::to_string),
    };
    if let Ok(mut s) = state.seen.lock() {
        s.push(seen);
    }
}

/// Takes one of `limit` fault tokens from `counter`.
fn take(counter: &AtomicUsize, limit: usize) -> bool {
    limit == usize::MAX || counter.fetch_add(1, Ordering::SeqCst) < limit
}

fn front_answer(state: &State, head: &RequestHead, w: &mut TcpStream) -> io::Result<()> {
    let path = head.path();
    let is_blob = head.method == "GET" && path.contains("/blobs/sha256:");
    let is_manifest = head.method == "GET" && path.contains("/manifests/");
    let limited = (is_manifest && take(&state.n_manifest_429s, state.opts.manifest_429s))
        || (is_blob && take(&state.n_blob_429s, state.opts.blob_429s));
    if limited {
        record(state, "front", head, 429);
        let mut headers = vec![("Content-Length", "0".to_string())];
        if let Some(v) = state.opts.retry_after {
            headers.push(("Retry-After", v.to_string()));
        }
        return write_response_head(w, 429, &headers, false);
    }
    if let (true, Some(lifetime)) = (is_blob, state.opts.redirect_lifetime) {
        // The registry decides whether this client may have the blob; only then redirect.
        let (status, response) = forward(state, head, "HEAD")?;
        if (200..300).contains(&status) {
            let digest = path.rsplit('/').next().unwrap_or("");
            let location = presign(state, digest, lifetime);
            record(state, "front", head, 307);
            return write_response_head(w, 307, &[("Location", location), ("Content-Length", "0".into())], false);
        }
        record(state, "front", head, status);
        return w.write_all(&response);
    }
    let (status, mut response) = forward(state, head, &head.method)?;
    record(state, "front", head, status);
    if let (401, Some(extra)) = (status, state.opts.challenge_extra_scope) {
        response = add_scope(&response, extra);
    }
    w.write_all(&response)
}

/// `scope="a"` → `scope="EXTRA a"` in the response's `WWW-Authenticate` field.
fn add_scope(response: &[u8], extra: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(response);
    let Some(head_end) = text.find("\r\n\r\n") else { return response.to_vec() };
    let (head, body) = text.split_at(head_end);
    let head: Vec<String> = head
        .split("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("www-authenticate:") {
                line.replacen("scope=\"", &format!("scope=\"{extra} "), 1)
            } else {
                line.to_string()
            }
        })
        .collect();
    format!("{}{body}", head.join("\r\n")).into_bytes()
}

/// The request sent on to the registry (one connection, `Connection: close`) and its whole answer.
fn forward(state: &State, head: &RequestHead, method: &str) -> io::Result<(u16, Vec<u8>)> {
    let mut upstream = TcpStream::connect(&state.upstream)?;
    upstream.set_read_timeout(Some(IDLE))?;
    let mut request = format!("{method} {} HTTP/1.1\r\n", head.target);
    for (name, value) in &head.headers {
        if !name.eq_ignore_ascii_case("connection") {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    request.push_str("Connection: close\r\n\r\n");
    upstream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    upstream.read_to_end(&mut response)?;
    let status = std::str::from_utf8(&response[..response.len().min(12)])
        .ok()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    Ok((status, response))
}

fn now_ms() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0)
}

fn signature(digest: &str, expires_ms: u128) -> String {
    sha256_hex(format!("{SECRET}|{digest}|{expires_ms}").as_bytes())
}

/// `http://127.0.0.1:STORE/store/<digest>?X-Expires=<ms>&X-Signature=<hex>`.
fn presign(state: &State, digest: &str, lifetime: Duration) -> String {
    let expires = now_ms() + lifetime.as_millis();
    let port = *state.store_port.lock().unwrap();
    format!("http://127.0.0.1:{port}/store/{digest}?X-Expires={expires}&X-Signature={}", signature(digest, expires))
}

fn store_answer(state: &State, head: &RequestHead, w: &mut TcpStream) -> io::Result<()> {
    let query = head.target.split_once('?').map_or("", |(_, q)| q);
    let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{name}=")[..]));
    let digest = head.path().strip_prefix("/store/").unwrap_or("");
    let expires: u128 = param("X-Expires").and_then(|e| e.parse().ok()).unwrap_or(0);
    let valid = param("X-Signature") == Some(signature(digest, expires).as_str());
    if !valid || now_ms() > expires {
        record(state, "store", head, 403);
        let body = "<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>";
        write_response_head(w, 403, &[("Content-Length", body.len().to_string())], false)?;
        return w.write_all(body.as_bytes());
    }
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    let path =
        state.blob_root.join("docker/registry/v2/blobs/sha256").join(hex.get(..2).unwrap_or("")).join(hex).join("data");
    let Ok(mut file) = File::open(&path) else {
        record(state, "store", head, 404);
        return write_response_head(w, 404, &[("Content-Length", "0".into())], false);
    };
    let len = file.seek(SeekFrom::End(0))?;
    let range = head.header("range").and_then(|r| parse_range(r, len));
    let (status, first, last) = match range {
        Some((a, b)) => (206, a, b),
        None => (200, 0, len.saturating_sub(1)),
    };
    record(state, "store", head, status);
    let n = if len == 0 { 0 } else { last - first + 1 };
    let mut headers = vec![("Content-Length", n.to_string())];
    if status == 206 {
        headers.push(("Content-Range", format!("bytes {first}-{last}/{len}")));
    }
    write_response_head(w, status, &headers, false)?;
    let mut buf = vec![0u8; n as usize];
    file.read_exact_at(&mut buf, first)?;
    w.write_all(&buf)
}

/// `bytes=a-b` (closed, within the file), as the daemon sends.
fn parse_range(value: &str, len: u64) -> Option<(u64, u64)> {
    match crate::common::range::parse(value)? {
        crate::common::range::Spec::From { first: a, last: Some(b) } => (a <= b && b < len).then_some((a, b)),
        _ => None,
    }
}
