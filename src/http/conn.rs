//! One client connection on this core's io_uring runtime: connect (dial timeout, TCP keepalive,
//! optional proxy CONNECT tunnel), TLS driven by hand over owned-buffer reads and writes, request
//! writes, and the read buffer the head parser and body decoder consume from.
//!
//! Invariant: `rbuf[rpos..]` holds plaintext received but not yet consumed; with TLS, `tls_in`
//! holds ciphertext not yet fed to rustls, and rustls' plaintext is drained into `rbuf` before the
//! next `read_tls` (rustls refuses more records while its plaintext buffer is full).

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::buf::{BufResult, IntoInner, IoBufMut};
use compio::io::{AsyncRead, AsyncWriteExt};
use compio::net::TcpStream;
use rustls::ClientConnection;

use crate::error::{Error, Kind, Result};
use crate::http::codec::{self, ResponseHead};
use crate::limits;

/// An HTTP proxy: where to connect and what to authenticate with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyAddr {
    pub host: String,
    pub port: u16,
    /// `Basic ...` header value from the proxy URL's userinfo; never logged.
    pub auth: Option<String>,
}

/// Where a connection goes. Pooled connections are keyed by it, proxy included: a tunnel through a
/// proxy is a different connection from a direct one to the same origin.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub proxy: Option<ProxyAddr>,
}

impl std::fmt::Display for PoolKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}:{}", if self.tls { "https" } else { "http" }, self.host, self.port)?;
        if let Some(p) = &self.proxy {
            write!(f, " via proxy {}:{}", p.host, p.port)?;
        }
        Ok(())
    }
}

/// Timeouts and TLS settings needed to open a connection.
#[derive(Clone)]
pub struct Dial {
    pub dial_timeout: Duration,
    pub keep_alive: Duration,
    pub tls_handshake_timeout: Duration,
    pub tls: Arc<rustls::ClientConfig>,
}

enum Drained {
    Bytes(usize),
    Closed,
    Empty,
}

pub struct Conn {
    stream: TcpStream,
    tls: Option<Box<ClientConnection>>,
    rbuf: Vec<u8>,
    rpos: usize,
    tls_in: Vec<u8>,
    tls_in_pos: usize,
    pub key: PoolKey,
    /// Requests sent on this connection; > 0 before a send means it came from the pool.
    pub n_requests: u32,
    pub idle_since: Instant,
}

impl Conn {
    pub async fn connect(key: &PoolKey, dial: &Dial) -> Result<Conn> {
        let (host, port) = match &key.proxy {
            Some(p) => (p.host.clone(), p.port),
            None => (key.host.clone(), key.port),
        };
        let stream = tcp_connect(key, &host, port, dial).await?;
        let mut conn = Conn {
            stream,
            tls: None,
            rbuf: Vec::with_capacity(limits::READ_BUF_BYTES),
            rpos: 0,
            tls_in: Vec::new(),
            tls_in_pos: 0,
            key: key.clone(),
            n_requests: 0,
            idle_since: Instant::now(),
        };
        if key.tls {
            if let Some(proxy) = &key.proxy {
                let fut = conn.connect_tunnel(proxy.clone());
                match crate::http::within(dial.dial_timeout, fut).await {
                    Ok(r) => r?,
                    Err(_) => return Err(Error::origin(true, format!("{key}: CONNECT: dialTimeout elapsed"))),
                }
            }
            match crate::http::within(dial.tls_handshake_timeout, conn.handshake(dial)).await {
                Ok(r) => r?,
                Err(_) => {
                    return Err(Error::origin(
                        true,
                        format!("{key}: tlsHandshakeTimeout ({:?}) elapsed", dial.tls_handshake_timeout),
                    )
                    .with_kind(Kind::Timeout))
                }
            }
        }
        Ok(conn)
    }

    /// `CONNECT host:port` through the proxy; anything but 2xx is an error naming the status.
    async fn connect_tunnel(&mut self, proxy: ProxyAddr) -> Result<()> {
        let authority = format!("{}:{}", self.key.host, self.key.port);
        let mut req = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
        if let Some(auth) = &proxy.auth {
            req.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
        }
        req.push_str("\r\n");
        self.write_raw(req.into_bytes()).await.map_err(|e| io_error(&self.key, e))?;
        let head = self.read_head().await?;
        if !(200..300).contains(&head.status) {
            let what = format!(
                "proxy {}:{} refused CONNECT {authority}: {} {}",
                proxy.host, proxy.port, head.status, head.reason
            );
            return Err(crate::http::status::error(&head, what));
        }
        if !self.buffered().is_empty() {
            return Err(Error::origin(false, format!("proxy {}:{} sent data after CONNECT", proxy.host, proxy.port)));
        }
        Ok(())
    }

    async fn handshake(&mut self, dial: &Dial) -> Result<()> {
        let name = crate::http::tls::server_name(&self.key.host)?;
        let tls = ClientConnection::new(dial.tls.clone(), name)
            .map_err(|e| Error::internal(format!("TLS setup for {}: {e}", self.key)))?;
        self.tls = Some(Box::new(tls));
        loop {
            self.flush_tls().await.map_err(|e| io_error(&self.key, e).with_kind(Kind::TlsHandshake))?;
            if !self.tls.as_ref().is_some_and(|t| t.is_handshaking()) {
                return Ok(());
            }
            let n = self.read_ciphertext().await.map_err(|e| io_error(&self.key, e).with_kind(Kind::TlsHandshake))?;
            if n == 0 {
                return Err(Error::origin(true, format!("{}: connection closed during the TLS handshake", self.key))
                    .with_kind(Kind::TlsHandshake));
            }
            self.feed_tls().map_err(|e| tls_error(&self.key, e))?;
        }
    }

    /// Sends bytes, through TLS when the connection has it.
    pub async fn write_all(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        match self.tls.as_mut() {
            None => self.write_raw(bytes).await,
            Some(tls) => {
                tls.writer().write_all(&bytes)?;
                self.flush_tls().await
            }
        }
    }

    async fn write_raw(&mut self, bytes: Vec<u8>) -> io::Result<()> {
        let BufResult(res, _) = self.stream.write_all(bytes).await;
        res
    }

    async fn flush_tls(&mut self) -> io::Result<()> {
        let Some(tls) = self.tls.as_mut() else { return Ok(()) };
        if !tls.wants_write() {
            return Ok(());
        }
        let mut out = Vec::with_capacity(16 * 1024);
        while tls.wants_write() {
            tls.write_tls(&mut out)?;
        }
        self.write_raw(out).await
    }

    /// One socket read into `tls_in` (owned buffer, as io_uring needs). Returns bytes read.
    async fn read_ciphertext(&mut self) -> io::Result<usize> {
        if self.tls_in_pos == self.tls_in.len() {
            self.tls_in.clear();
            self.tls_in_pos = 0;
        }
        self.tls_in.reserve(limits::READ_BUF_BYTES / 4);
        let buf = std::mem::take(&mut self.tls_in);
        let BufResult(res, buf) = self.stream.read(buf.uninit()).await;
        self.tls_in = buf.into_inner();
        res
    }

    /// Feeds all buffered ciphertext to rustls (an empty feed after EOF tells it the peer closed).
    fn feed_tls(&mut self) -> std::result::Result<(), rustls::Error> {
        let Some(tls) = self.tls.as_mut() else { return Ok(()) };
        loop {
            let mut rest = &self.tls_in[self.tls_in_pos..];
            let n = tls.read_tls(&mut rest).map_err(|e| rustls::Error::General(e.to_string()))?;
            self.tls_in_pos += n;
            tls.process_new_packets()?;
            if n == 0 || self.tls_in_pos == self.tls_in.len() {
                return Ok(());
            }
        }
    }

    /// Reads more plaintext into `rbuf`; returns how many bytes (0 = the peer closed cleanly: TCP
    /// EOF without TLS, or TLS close_notify). A TLS stream cut without close_notify is an error.
    pub async fn fill(&mut self) -> io::Result<usize> {
        self.compact();
        if self.tls.is_none() {
            let buf = std::mem::take(&mut self.rbuf);
            let BufResult(res, buf) = self.stream.read(buf.uninit()).await;
            self.rbuf = buf.into_inner();
            return res;
        }
        loop {
            if let Some(n) = self.pump_tls()? {
                self.flush_tls().await?;
                return Ok(n);
            }
            self.flush_tls().await?;
            if self.read_ciphertext().await? == 0 {
                // TCP EOF: an empty feed lets rustls tell a clean close_notify from truncation.
                if let Some(tls) = self.tls.as_mut() {
                    let _ = tls.read_tls(&mut &[][..]);
                    tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
                }
                return match self.drain_plaintext()? {
                    Drained::Bytes(n) => Ok(n),
                    Drained::Closed => Ok(0),
                    Drained::Empty => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS stream truncated (TCP closed without close_notify)",
                    )),
                };
            }
        }
    }

    /// Feeds buffered ciphertext to rustls one batch at a time, draining plaintext into `rbuf`
    /// after each batch. `Some(n)`: n plaintext bytes (0 = close_notify); `None`: need more input.
    fn pump_tls(&mut self) -> io::Result<Option<usize>> {
        let mut total = 0usize;
        loop {
            match self.drain_plaintext()? {
                Drained::Bytes(n) => total += n,
                Drained::Closed => return Ok(Some(total)),
                Drained::Empty => {}
            }
            // Never call read_tls with an empty slice here: rustls takes a 0-byte read as EOF.
            if self.tls_in_pos == self.tls_in.len() {
                return Ok((total > 0).then_some(total));
            }
            let Some(tls) = self.tls.as_mut() else { return Ok(None) };
            let mut rest = &self.tls_in[self.tls_in_pos..];
            let n = tls.read_tls(&mut rest)?;
            self.tls_in_pos += n;
            tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
    }

    fn drain_plaintext(&mut self) -> io::Result<Drained> {
        let Some(tls) = self.tls.as_mut() else { return Ok(Drained::Empty) };
        let mut tmp = [0u8; 16 * 1024];
        let mut total = 0usize;
        loop {
            match tls.reader().read(&mut tmp) {
                Ok(0) if total == 0 => return Ok(Drained::Closed),
                Ok(0) => return Ok(Drained::Bytes(total)),
                Ok(n) => {
                    self.rbuf.extend_from_slice(&tmp[..n]);
                    total += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Ok(if total > 0 { Drained::Bytes(total) } else { Drained::Empty })
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "TLS stream truncated (TCP closed without close_notify)",
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn compact(&mut self) {
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
                return Err(Error::origin(
                    true,
                    format!("{}: connection closed before a complete response head", self.key),
                ));
            }
        }
    }

    /// Bytes beyond the last response: a connection with leftovers cannot be reused safely.
    pub fn has_leftover(&self) -> bool {
        self.rpos < self.rbuf.len() || self.tls_in_pos < self.tls_in.len()
    }

    /// Whether an idle connection is fit for another request: nothing buffered, and the socket
    /// has neither bytes nor an EOF waiting. An origin that sent more after its response (late
    /// bytes past Content-Length) or closed the connection while it idled would otherwise hand
    /// the next request those bytes as its answer, or a spurious failure. One non-blocking
    /// `recv(MSG_PEEK)`: no wait, nothing consumed.
    pub fn is_quiet(&self) -> bool {
        use rustix::net::RecvFlags;
        if self.has_leftover() {
            return false;
        }
        let mut probe = [0u8; 1];
        match rustix::net::recv(self.stream.as_fd(), &mut probe, RecvFlags::PEEK | RecvFlags::DONTWAIT) {
            // Data or EOF: not ours to send a request into.
            Ok(_) => false,
            Err(e) => e == rustix::io::Errno::AGAIN,
        }
    }
}

async fn tcp_connect(key: &PoolKey, host: &str, port: u16, dial: &Dial) -> Result<TcpStream> {
    let bare = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let stream = match crate::http::within(dial.dial_timeout, TcpStream::connect((bare.as_str(), port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(connect_error(key, host, port, e)),
        Err(_) => {
            return Err(Error::origin(true, format!("connect to {key}: dialTimeout ({:?}) elapsed", dial.dial_timeout))
                .with_kind(Kind::Timeout))
        }
    };
    let _ = stream.set_nodelay(true);
    if !dial.keep_alive.is_zero() {
        let fd = stream.as_fd();
        let _ = rustix::net::sockopt::set_socket_keepalive(fd, true);
        let _ = rustix::net::sockopt::set_tcp_keepidle(fd, dial.keep_alive);
        let _ = rustix::net::sockopt::set_tcp_keepintvl(fd, dial.keep_alive);
    }
    Ok(stream)
}

fn connect_error(key: &PoolKey, host: &str, port: u16, e: io::Error) -> Error {
    let what = if key.proxy.is_some() { format!("proxy {host}:{port}") } else { key.to_string() };
    let why = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
        _ => e.to_string(),
    };
    Error::origin(true, format!("connect to {what}: {why}"))
}

fn tls_error(key: &PoolKey, e: rustls::Error) -> Error {
    let hint = match &e {
        rustls::Error::InvalidCertificate(_) => {
            " (the server's certificate is not trusted: add its CA with caFile, or set insecureSkipVerify: true)"
        }
        _ => "",
    };
    // A certificate the user must act on will not fix itself: not retryable.
    Error::origin(false, format!("{key}: TLS handshake failed: {e}{hint}")).with_kind(Kind::TlsHandshake)
}

pub fn io_error(key: &PoolKey, e: io::Error) -> Error {
    Error::origin(true, format!("{key}: {e}"))
}
