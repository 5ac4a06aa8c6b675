//! The serving toolkit of the daemon's listeners (the socket API and the metrics endpoint): read one
//! bounded HTTP/1.1 request, answer it, and run blocking work off the core.
//!
//! Invariant: every read is bounded in bytes (`MAX_HEAD_BYTES`, `MAX_API_BODY_BYTES`) and in time
//! (`API_REQUEST_TIMEOUT`), so no client can pin a connection or its memory; blocking work never
//! runs on a core's own thread.

use compio::buf::{BufResult, IntoInner, IoBufMut};
use compio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::limits;

/// One request as read off a connection: the wire router (`proto::ApiRequest::parse`) takes it from here.
pub struct HttpReq {
    pub method: String,
    pub path: String,
    /// The whole body; for a chunked request (`POST /batch`) only what came with the head, still
    /// framed: that route reads the rest itself, as it goes.
    pub body: Vec<u8>,
    pub chunked: bool,
}

/// `read_request` bounded by `API_REQUEST_TIMEOUT`: a client that connects and says nothing (or
/// dribbles) must not hold a connection, and its fd, forever.
pub async fn read_request_within(stream: &mut (impl AsyncRead + AsyncWrite)) -> Result<HttpReq> {
    match compio::time::timeout(limits::API_REQUEST_TIMEOUT, read_request(stream)).await {
        Ok(r) => r,
        Err(_) => Err(Error::client(format!("no complete request within {:?}", limits::API_REQUEST_TIMEOUT))),
    }
}

/// A complete request head, with what reading the rest of the request needs.
#[derive(Debug)]
pub struct Head {
    pub method: String,
    pub path: String,
    /// Bytes of the head in the buffer; the body starts there.
    pub head_len: usize,
    /// `Transfer-Encoding: chunked` (its route reads the body itself).
    pub chunked: bool,
    /// `Content-Length` (at most `MAX_API_BODY_BYTES`); 0 when chunked or absent.
    pub content_len: usize,
}

/// The head at the start of `buf`: Some when complete, None when more bytes are needed, or the
/// client error (malformed, too large, a bad or too large `Content-Length`). Pure (fuzzed).
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>> {
    let mut headers = [httparse::EMPTY_HEADER; limits::MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(head_len)) => {
            let chunked = is_chunked(req.headers);
            let content_len = if chunked { 0 } else { content_length(req.headers)? };
            let method = req.method.unwrap_or("").to_string();
            let path = req.path.unwrap_or("").to_string();
            Ok(Some(Head { method, path, head_len, chunked, content_len }))
        }
        Ok(httparse::Status::Partial) if buf.len() >= limits::MAX_HEAD_BYTES => {
            Err(Error::client("request head too large"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(e) => Err(Error::client(format!("malformed request: {e}"))),
    }
}

async fn read_request(stream: &mut (impl AsyncRead + AsyncWrite)) -> Result<HttpReq> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if let Some(head) = parse_head(&buf)? {
            let mut body = buf[head.head_len..].to_vec();
            if !head.chunked {
                read_body(stream, &mut body, head.content_len).await?;
            }
            return Ok(HttpReq { method: head.method, path: head.path, body, chunked: head.chunked });
        }
        buf.reserve(4096);
        let BufResult(res, b) = stream.read(buf.uninit()).await;
        buf = b.into_inner();
        match res {
            Ok(0) => return Err(Error::client("connection closed mid-request")),
            Ok(_) => {}
            Err(e) => return Err(Error::client(format!("read: {e}"))),
        }
    }
}

fn is_chunked(headers: &[httparse::Header<'_>]) -> bool {
    headers.iter().any(|h| h.name.eq_ignore_ascii_case("transfer-encoding") && h.value.eq_ignore_ascii_case(b"chunked"))
}

fn content_length(headers: &[httparse::Header<'_>]) -> Result<usize> {
    let Some(h) = headers.iter().find(|h| h.name.eq_ignore_ascii_case("content-length")) else {
        return Ok(0);
    };
    let len: usize = std::str::from_utf8(h.value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| Error::client("bad Content-Length"))?;
    if len > limits::MAX_API_BODY_BYTES {
        return Err(Error::client(format!("request body over {} bytes", limits::MAX_API_BODY_BYTES)));
    }
    Ok(len)
}

async fn read_body(stream: &mut (impl AsyncRead + AsyncWrite), body: &mut Vec<u8>, len: usize) -> Result<()> {
    while body.len() < len {
        body.reserve(len - body.len());
        let BufResult(res, b) = stream.read(std::mem::take(body).uninit()).await;
        *body = b.into_inner();
        match res {
            Ok(0) => return Err(Error::client("connection closed mid-body")),
            Ok(_) => {}
            Err(e) => return Err(Error::client(format!("read: {e}"))),
        }
    }
    body.truncate(len);
    Ok(())
}

pub async fn respond_json(
    stream: &mut (impl AsyncRead + AsyncWrite),
    status: u16,
    body: &impl Serialize,
) -> Result<()> {
    write(stream, json_response(status, body)?).await
}

/// A whole `Connection: close` response with a JSON body. Pure; the front door sends it too.
pub fn json_response(status: u16, body: &impl Serialize) -> Result<Vec<u8>> {
    let body = serde_json::to_vec(body).map_err(|e| Error::internal(e.to_string()))?;
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Ok(out)
}

/// One NDJSON line. Bounded in time: a client that stops reading (suspended, say) must not hold
/// a task's pin, and so block eviction and removal, forever.
pub async fn send_line(stream: &mut (impl AsyncRead + AsyncWrite), value: &impl Serialize) -> Result<()> {
    let mut line = serde_json::to_vec(value).map_err(|e| Error::internal(e.to_string()))?;
    line.push(b'\n');
    match compio::time::timeout(limits::CLIENT_WRITE_TIMEOUT, write(stream, line)).await {
        Ok(r) => r,
        Err(_) => Err(Error::client(format!("client read nothing for {:?}", limits::CLIENT_WRITE_TIMEOUT))),
    }
}

pub async fn write(stream: &mut (impl AsyncRead + AsyncWrite), bytes: Vec<u8>) -> Result<()> {
    let BufResult(res, _) = stream.write_all(bytes).await;
    res.map_err(|e| Error::client(format!("client went away: {e}")))
}

/// Runs blocking work (hashing, fsync) on compio's blocking pool so the core keeps serving IO.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    compio::runtime::spawn_blocking(f).await.unwrap_or_else(|_| Err(Error::internal("blocking job panicked")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ok(Some((method, path, head_len, chunked, content_len))), Ok(None) = read more, or an error
    /// containing the text.
    type Want<'a> = std::result::Result<Option<(&'a str, &'a str, usize, bool, usize)>, &'a str>;

    fn check(input: &[u8], want: Want) {
        let got = parse_head(input);
        match (got, want) {
            (Ok(None), Ok(None)) => {}
            (Ok(Some(h)), Ok(Some(w))) => {
                assert_eq!((h.method.as_str(), h.path.as_str(), h.head_len, h.chunked, h.content_len), w)
            }
            (Err(e), Err(w)) => assert!(e.message.contains(w), "{:?}: {}", String::from_utf8_lossy(input), e.message),
            (g, w) => panic!("{:?}: got {g:?}, want {w:?}", String::from_utf8_lossy(input)),
        }
    }

    #[test]
    fn request_heads() {
        let get = b"GET /healthy HTTP/1.1\r\nHost: d\r\n\r\n";
        check(get, Ok(Some(("GET", "/healthy", get.len(), false, 0))));
        check(&get[..get.len() - 1], Ok(None));
        check(b"", Ok(None));
        let post = b"POST /download HTTP/1.1\r\nContent-Length: 5\r\n\r\n{\"a\"";
        check(post, Ok(Some(("POST", "/download", post.len() - 4, false, 5))));
        let batch = b"POST /batch?jobs=2 HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: x\r\n\r\n";
        check(batch, Ok(Some(("POST", "/batch?jobs=2", batch.len(), true, 0))));
        check(b"POST /download HTTP/1.1\r\nContent-Length: x\r\n\r\n", Err("bad Content-Length"));
        let huge = format!("POST /download HTTP/1.1\r\nContent-Length: {}\r\n\r\n", limits::MAX_API_BODY_BYTES + 1);
        check(huge.as_bytes(), Err("request body over"));
        check(b"GET /\x01 HTTP/1.1\r\n\r\n", Err("malformed request"));
        let long = format!("GET /{} HTTP/1.1\r\n", "a".repeat(limits::MAX_HEAD_BYTES));
        check(long.as_bytes(), Err("request head too large"));
    }
}
