//! One client connection on this core's io_uring runtime: connect (with the dial timeout and TCP
//! keepalive), write a request, read a response head, and hand body bytes to the framing decoder.
//!
//! Invariant: `rbuf[rpos..]` holds bytes received but not yet consumed by the head parser or the
//! body decoder; nothing else buffers socket data.

use std::io;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use compio::buf::{BufResult, IntoInner, IoBuf, IoBufMut};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;

use crate::error::{Error, Result};
use crate::http::codec::{self, ResponseHead};
use crate::limits;

/// Where a connection goes: scheme, host and port. Pooled connections are keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub tls: bool,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}:{}",
            if self.tls { "https" } else { "http" },
            self.host,
            self.port
        )
    }
}

pub struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    rpos: usize,
    pub key: PoolKey,
    /// Requests sent on this connection; > 0 means it came from the pool and may be stale.
    pub n_requests: u32,
    pub idle_since: Instant,
}

impl Conn {
    pub async fn connect(
        key: &PoolKey,
        dial_timeout: Duration,
        keep_alive: Duration,
    ) -> Result<Conn> {
        let host = key
            .host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let connect = TcpStream::connect((host.as_str(), key.port));
        let stream = match compio::time::timeout(dial_timeout, connect).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(connect_error(key, e)),
            Err(_) => {
                return Err(Error::origin(
                    true,
                    format!("connect to {key}: dialTimeout ({dial_timeout:?}) elapsed"),
                ))
            }
        };
        let _ = stream.set_nodelay(true);
        if !keep_alive.is_zero() {
            let fd = stream.as_fd();
            let _ = rustix::net::sockopt::set_socket_keepalive(fd, true);
            let _ = rustix::net::sockopt::set_tcp_keepidle(fd, keep_alive);
            let _ = rustix::net::sockopt::set_tcp_keepintvl(fd, keep_alive);
        }
        Ok(Conn {
            stream,
            rbuf: Vec::with_capacity(limits::READ_BUF_BYTES),
            rpos: 0,
            key: key.clone(),
            n_requests: 0,
            idle_since: Instant::now(),
        })
    }

    pub async fn write_all(&mut self, bytes: Vec<u8>) -> io::Result<Vec<u8>> {
        let BufResult(res, bytes) = self.stream.write_all(bytes).await;
        res.map(|()| bytes)
    }

    /// Reads more bytes into the buffer; returns how many (0 = the peer closed).
    pub async fn fill(&mut self) -> io::Result<usize> {
        if self.rpos == self.rbuf.len() {
            self.rbuf.clear();
            self.rpos = 0;
        } else if self.rpos > self.rbuf.capacity() / 2 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        if self.rbuf.capacity() - self.rbuf.len() < limits::READ_BUF_BYTES / 4 {
            self.rbuf.reserve(limits::READ_BUF_BYTES);
        }
        let buf = std::mem::take(&mut self.rbuf);
        let BufResult(res, buf) = self.stream.read(buf.uninit()).await;
        self.rbuf = buf.into_inner();
        res
    }

    pub fn buffered(&self) -> &[u8] {
        &self.rbuf[self.rpos..]
    }

    pub fn consume(&mut self, n: usize) {
        debug_assert!(self.rpos + n <= self.rbuf.len());
        self.rpos += n;
    }

    /// Reads until a complete response head is buffered, then consumes it.
    pub async fn read_head(&mut self) -> Result<ResponseHead> {
        loop {
            match codec::parse_head(self.buffered()) {
                Ok(Some((head, used))) => {
                    self.consume(used);
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => return Err(Error::origin(false, format!("{}: {e}", self.key))),
            }
            let n = self.fill().await.map_err(|e| io_error(&self.key, e))?;
            if n == 0 {
                let partial = !self.buffered().is_empty();
                return Err(Error::origin(
                    true,
                    format!(
                        "{}: connection closed before a response{}",
                        self.key,
                        if partial { " head was complete" } else { "" }
                    ),
                ));
            }
        }
    }

    pub fn rbuf_capacity(&mut self) -> usize {
        self.rbuf.buf_capacity()
    }

    pub fn has_leftover(&self) -> bool {
        self.rpos < self.rbuf.len() && !self.rbuf.as_init()[self.rpos..].is_empty()
    }
}

fn connect_error(key: &PoolKey, e: io::Error) -> Error {
    let why = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => e.to_string(),
    };
    Error::origin(true, format!("connect to {key}: {why}"))
}

pub fn io_error(key: &PoolKey, e: io::Error) -> Error {
    Error::origin(true, format!("{key}: {e}"))
}
