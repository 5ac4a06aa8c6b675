//! Requests on top of `conn` and `pool`: one GET (with an optional closed Range) that reuses this
//! core's keep-alive connections, retries once on a stale pooled connection, and follows redirects.
//!
//! Invariant: a `Response` owns its connection until the body has been read to the end; only then
//! does the connection return to the pool (dropping a `Response` early closes the connection, which
//! is how a caller abandons a body it does not want).

use std::time::Duration;

use url::Url;

use crate::http::redact::Shown;

use crate::error::{Error, Kind, Result};
use crate::http::body::{BodyDecoder, Step};
use crate::http::codec::{self, Framing, Request, ResponseHead};
use crate::http::conn::{io_error, Conn, Dial, PoolKey, ProxyAddr};
use crate::http::limit;
use crate::http::pool::{self, PoolLimits};
use crate::limits;

/// What a request needs from the transport config (built once per config block, cheap to clone).
#[derive(Clone)]
pub struct Options {
    pub dial: Dial,
    pub response_header_timeout: Duration,
    /// Longest silence allowed while a body streams.
    pub body_idle_timeout: Duration,
    pub pool: PoolLimits,
    /// `maxConnsPerHost`: requests in flight per host across all cores (0 = unlimited).
    pub max_conns_per_host: usize,
    pub proxy: ProxyChoice,
}

/// Which proxy a request uses: the config's `proxy` for every scheme, or the environment's
/// `HTTP_PROXY`/`HTTPS_PROXY` when the config says nothing; `NO_PROXY` applies to both.
#[derive(Clone, Debug, Default)]
pub struct ProxyChoice {
    pub configured: Option<ProxyAddr>,
    pub env_http: Option<ProxyAddr>,
    pub env_https: Option<ProxyAddr>,
    pub no_proxy: Vec<String>,
}

impl ProxyChoice {
    pub fn from_config_and_env(configured: Option<&str>) -> Result<ProxyChoice> {
        let env = |names: &[&str]| names.iter().find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()));
        let parse_env = |v: Option<String>| v.map(|v| parse_proxy(&v)).transpose();
        Ok(ProxyChoice {
            configured: configured.map(parse_proxy).transpose()?,
            env_http: parse_env(env(&["http_proxy", "HTTP_PROXY"]))?,
            env_https: parse_env(env(&["https_proxy", "HTTPS_PROXY"]))?,
            no_proxy: env(&["no_proxy", "NO_PROXY"])
                .map(|v| v.split(',').map(|s| s.trim().to_ascii_lowercase()).filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    }

    /// The proxy for `url`, if any. Environment proxies skip loopback hosts (as Go does); a proxy
    /// written in the config is used for every host not in `NO_PROXY`.
    pub fn for_url(&self, url: &Url) -> Option<ProxyAddr> {
        let host = url.host_str()?.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        if self.no_proxy.iter().any(|p| no_proxy_matches(p, &host)) {
            return None;
        }
        if let Some(p) = &self.configured {
            return Some(p.clone());
        }
        if is_loopback(&host) {
            return None;
        }
        match url.scheme() {
            "https" => self.env_https.clone(),
            _ => self.env_http.clone(),
        }
    }
}

fn no_proxy_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.split(':').next().unwrap_or(pattern);
    pattern == "*"
        || host == pattern.trim_start_matches('.')
        || host.ends_with(&format!(".{}", pattern.trim_start_matches('.')))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `http://[user:pass@]host:port` → where to connect and the Basic credential. https proxies (TLS
/// to the proxy itself) are not supported: say so instead of silently speaking plain text.
pub fn parse_proxy(text: &str) -> Result<ProxyAddr> {
    let with_scheme = if text.contains("://") { text.to_string() } else { format!("http://{text}") };
    let url = Url::parse(&with_scheme)
        .map_err(|e| Error::client(format!("invalid proxy `{}`: {e}", crate::http::redact::redact_url(text))))?;
    if url.scheme() != "http" {
        return Err(Error::client(format!("proxy scheme `{}` is not supported (use http://)", url.scheme())));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Error::client(format!("proxy `{}` has no host", crate::http::redact::redact_url(text))))?
        .to_string();
    Ok(ProxyAddr { host, port: url.port().unwrap_or(80), auth: userinfo_auth(&url) })
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

impl Options {
    pub fn from_transport(t: &crate::config::TransportConfig) -> Result<Options> {
        Ok(Options {
            dial: Dial {
                dial_timeout: t.dial_timeout,
                keep_alive: t.keep_alive,
                tls_handshake_timeout: t.tls_handshake_timeout,
                tls: crate::http::tls::client_config(t.insecure_skip_verify, t.ca_file.as_deref())?,
            },
            response_header_timeout: t.response_header_timeout,
            // The same bound for any silence of the origin: before the head and between body reads.
            body_idle_timeout: t.response_header_timeout,
            pool: PoolLimits {
                max_idle_total: t.max_idle_conns,
                max_idle_per_host: t.max_idle_conns_per_host,
                idle_timeout: t.idle_conn_timeout,
            },
            max_conns_per_host: t.max_conns_per_host,
            proxy: ProxyChoice::from_config_and_env(t.proxy.as_deref())?,
        })
    }
}

pub struct Response {
    pub head: ResponseHead,
    /// The URL that answered (after redirects).
    pub url: Url,
    conn: Option<Conn>,
    decoder: BodyDecoder,
    keep_alive: bool,
    opts: Options,
    /// Held while the response is alive: counts against `maxConnsPerHost`.
    _permit: limit::Permit,
}

pub fn pool_key(url: &Url, proxy: Option<ProxyAddr>) -> Result<PoolKey> {
    let tls = match url.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(Error::client(format!("unsupported URL scheme `{other}` in {}", Shown(url)))),
    };
    let host = url.host_str().ok_or_else(|| Error::client(format!("URL has no host: {}", Shown(url))))?;
    let port = url.port_or_known_default().unwrap_or(if tls { 443 } else { 80 });
    Ok(PoolKey { tls, host: host.to_string(), port, proxy })
}

fn host_header(url: &Url) -> String {
    let host = url.host_str().unwrap_or("");
    match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    }
}

/// Origin-form (`/p?q`) normally; absolute-form for plain http through a proxy.
fn target(url: &Url, via_proxy: bool) -> String {
    if via_proxy && url.scheme() == "http" {
        let mut u = url.clone();
        u.set_fragment(None);
        // The userinfo is the origin's credential (sent as Authorization), never the proxy's.
        let _ = u.set_username("");
        let _ = u.set_password(None);
        return u.to_string();
    }
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// GET `url`, following up to `MAX_REDIRECTS` redirects. `range` is an inclusive byte range.
/// `Authorization` is dropped when a redirect leaves the original host or port.
pub async fn get(
    url: &Url,
    headers: &[(String, String)],
    range: Option<(u64, u64)>,
    opts: &Options,
) -> Result<Response> {
    let mut url = url.clone();
    let mut headers = headers.to_vec();
    if let Some((first, last)) = range {
        headers.push(("Range".into(), crate::http::range::range_header(first, last)));
    }
    // Every URL of the chain, so a loop or an overlong chain is reported with where it went.
    let mut chain: Vec<Url> = vec![url.clone()];
    for _ in 0..=limits::MAX_REDIRECTS {
        let resp = send("GET", &url, &headers, b"", opts).await?;
        let status = resp.head.status;
        if !matches!(status, 301 | 302 | 303 | 307 | 308) {
            return Ok(resp);
        }
        let location = resp
            .head
            .header_str("location")
            .ok_or_else(|| Error::origin(false, format!("{}: {status} redirect without Location", Shown(&url))))?;
        let next = url
            .join(location)
            .map_err(|e| Error::origin(false, format!("{}: bad redirect Location `{location}`: {e}", Shown(&url))))?;
        drop(resp);
        if next.host_str() != url.host_str() || next.port_or_known_default() != url.port_or_known_default() {
            headers.retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
        }
        if chain.contains(&next) {
            return Err(Error::origin(
                false,
                format!("{}: redirects form a loop: {} → {next}", chain[0], join_chain(&chain)),
            ));
        }
        chain.push(next.clone());
        url = next;
    }
    Err(Error::origin(
        false,
        format!("{}: too many redirects (more than {}): {}", chain[0], limits::MAX_REDIRECTS, join_chain(&chain)),
    ))
}

fn join_chain(chain: &[Url]) -> String {
    chain.iter().map(Url::as_str).collect::<Vec<_>>().join(" → ")
}

/// `Basic base64(user:password)` from the URL's userinfo (percent-decoded), as Go's net/http
/// sends it; an explicit `Authorization` header wins. A redirect to another URL has no userinfo,
/// so the credential never follows it.
fn userinfo_auth(url: &Url) -> Option<String> {
    use base64::Engine as _;
    if url.username().is_empty() && url.password().is_none() {
        return None;
    }
    let user = percent_decode(url.username());
    let pass = percent_decode(url.password().unwrap_or(""));
    Some(format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))))
}

fn has_header(headers: &[(String, String)], name: &str) -> bool {
    headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name))
}

/// POST a form (`application/x-www-form-urlencoded`) to `url`, no redirects followed: the OAuth2
/// token endpoint of a registry. Retried once on a stale pooled connection like a GET, which is
/// safe for what it is used for (a refresh-token grant changes nothing on the server).
pub async fn post_form(url: &Url, headers: &[(String, String)], form: &str, opts: &Options) -> Result<Response> {
    let mut all = headers.to_vec();
    all.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
    send("POST", url, &all, form.as_bytes(), opts).await
}

/// One request/response exchange, retried once on a fresh connection when a pooled one turns out
/// to be stale (the server closed it while idle): GET is idempotent, so this is safe.
async fn send(method: &str, url: &Url, headers: &[(String, String)], body: &[u8], opts: &Options) -> Result<Response> {
    let key = pool_key(url, opts.proxy.for_url(url))?;
    let mut req_bytes = Vec::with_capacity(512);
    let plain_proxy = key.proxy.as_ref().filter(|_| !key.tls);
    let target = target(url, plain_proxy.is_some());
    let host = host_header(url);
    let mut all_headers = headers.to_vec();
    if let Some(auth) = userinfo_auth(url).filter(|_| !has_header(headers, "authorization")) {
        all_headers.push(("Authorization".into(), auth));
    }
    if let Some(auth) = plain_proxy.and_then(|p| p.auth.clone()) {
        all_headers.push(("Proxy-Authorization".into(), auth));
    }
    let req = Request { method, target: &target, host: &host, headers: &all_headers, keep_alive: true, body };
    codec::write_request(&req, &mut req_bytes);
    let permit = limit::acquire(&key, opts.max_conns_per_host).await;

    if let Some(conn) = pool::take(&key, &opts.pool) {
        match exchange(conn, req_bytes.clone(), url, opts, permit.clone()).await {
            Ok(resp) => return Ok(resp),
            // Only a connection the server closed while idle is retried here, at once. A timeout
            // on a pooled connection is the origin being slow: waiting it out again on a fresh
            // connection would double the wait before the caller's own retry budget even starts.
            Err(e) if e.kind == Kind::StaleConnection => {
                tracing::debug!(url = %Shown(url), error = %e, "stale pooled connection, retrying on a new one");
            }
            Err(e) => return Err(e),
        }
    }
    let conn = Conn::connect(&key, &opts.dial).await?;
    exchange(conn, req_bytes, url, opts, permit).await
}

async fn exchange(mut conn: Conn, req: Vec<u8>, url: &Url, opts: &Options, permit: limit::Permit) -> Result<Response> {
    let key = conn.key.clone();
    let reused = conn.n_requests > 0;
    conn.n_requests += 1;
    let fut = async {
        conn.write_all(req).await.map_err(|e| io_error(&key, e))?;
        conn.read_head().await
    };
    let got = crate::http::within(opts.response_header_timeout, fut).await;
    let head = match got {
        Ok(Ok(head)) => head,
        // EOF or reset (retryable IO trouble) with not one byte of a response: the stale class.
        Ok(Err(e)) if reused && e.retryable && e.kind == Kind::Other && conn.buffered().is_empty() => {
            return Err(e.with_kind(Kind::StaleConnection))
        }
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(Error::origin(
                true,
                format!("{}: responseHeaderTimeout ({:?}) elapsed", Shown(url), opts.response_header_timeout),
            )
            .with_kind(Kind::Timeout))
        }
    };
    let framing = codec::framing(&head, false).map_err(|e| Error::origin(false, format!("{}: {e}", Shown(url))))?;
    let keep_alive = head.keep_alive() && !matches!(framing, Framing::Close);
    Ok(Response {
        head,
        url: url.clone(),
        conn: Some(conn),
        decoder: BodyDecoder::new(framing),
        keep_alive,
        opts: opts.clone(),
        _permit: permit,
    })
}

impl Response {
    pub fn status(&self) -> u16 {
        self.head.status
    }

    /// Appends body bytes to `out` until it holds at least `want_bytes` or the body ends.
    /// Returns false once the body is complete (the connection is then back in the pool).
    pub async fn read_into(&mut self, out: &mut Vec<u8>, want_bytes: usize) -> Result<bool> {
        loop {
            if self.decoder.is_done() {
                self.release();
                return Ok(false);
            }
            if out.len() >= want_bytes {
                return Ok(true);
            }
            let conn = self.conn.as_mut().ok_or_else(|| Error::internal("body read after release"))?;
            let (consumed, step) = self
                .decoder
                .decode(conn.buffered())
                .map_err(|e| Error::origin(false, format!("{}: {e}", Shown(&self.url))))?;
            match step {
                Some(Step::Data { start, end }) => out.extend_from_slice(&conn.buffered()[start..end]),
                Some(Step::Done) => {}
                None => {}
            }
            conn.consume(consumed);
            if step.is_none() {
                self.fill_more().await?;
            }
        }
    }

    async fn fill_more(&mut self) -> Result<()> {
        let conn = self.conn.as_mut().ok_or_else(|| Error::internal("body read after release"))?;
        let key = conn.key.clone();
        let n = match crate::http::within(self.opts.body_idle_timeout, conn.fill()).await {
            Ok(r) => r.map_err(|e| io_error(&key, e))?,
            Err(_) => {
                return Err(Error::origin(
                    true,
                    format!(
                        "{}: no body data for {:?} (idle read timeout)",
                        Shown(&self.url),
                        self.opts.body_idle_timeout
                    ),
                )
                .with_kind(Kind::Timeout))
            }
        };
        if n == 0 {
            self.keep_alive = false;
            self.decoder.on_eof().map_err(|e| Error::origin(true, format!("{}: {e}", Shown(&self.url))))?;
        }
        Ok(())
    }

    /// Reads and drops the rest of a (small) body, e.g. an error page, so the connection can be reused.
    pub async fn discard(mut self, max_bytes: usize) {
        let mut sink = Vec::new();
        while let Ok(true) = self.read_into(&mut sink, 1).await {
            if sink.len() > max_bytes {
                return;
            }
            sink.clear();
        }
    }

    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            if self.keep_alive && !conn.has_leftover() {
                pool::put(conn, &self.opts.pool);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// What the origin does with the second request on its first connection. A fake origin,
    /// because no real server can be told to drop one reused connection at a chosen moment.
    #[derive(Clone, Copy, Debug)]
    enum Second {
        /// Closes the connection (FIN) without a response byte: it timed out while idle.
        Close,
        /// Resets it (RST, `SO_LINGER` 0) without a response byte.
        Reset,
        /// Says nothing: a slow origin, not a stale connection.
        Silence,
    }

    /// Reads one request head; false at EOF.
    fn read_request(r: &mut BufReader<TcpStream>) -> bool {
        let mut n_lines = 0;
        loop {
            let mut line = String::new();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return false,
                Ok(_) if line == "\r\n" && n_lines > 0 => return true,
                Ok(_) => n_lines += 1,
            }
        }
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

    /// Serves `ok` on every request, except the second on the first connection. Counts connections.
    fn origin(second: Second) -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let n_conns = Arc::new(AtomicUsize::new(0));
        let counter = n_conns.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let first_conn = counter.fetch_add(1, Ordering::SeqCst) == 0;
                let mut r = BufReader::new(stream.try_clone().unwrap());
                let mut w = stream;
                let mut n = 0;
                while read_request(&mut r) {
                    n += 1;
                    if first_conn && n == 2 {
                        match second {
                            Second::Close => drop(w),
                            Second::Reset => {
                                let _ = rustix::net::sockopt::set_socket_linger(&w, Some(Duration::ZERO));
                                drop(w);
                            }
                            Second::Silence => held.push(w),
                        }
                        break;
                    }
                    if w.write_all(OK).is_err() {
                        break;
                    }
                }
            }
        });
        (port, n_conns)
    }

    fn options(response_header_timeout: Duration) -> Options {
        let t = crate::config::TransportConfig { response_header_timeout, ..Default::default() };
        Options::from_transport(&t).unwrap()
    }

    async fn get_ok(url: &Url, opts: &Options) -> Result<Vec<u8>> {
        let mut resp = get(url, &[], None, opts).await?;
        let mut body = Vec::new();
        while resp.read_into(&mut body, 1024).await? {}
        Ok(body)
    }

    #[test]
    fn a_stale_pooled_connection_is_retried_at_once_on_a_fresh_one() {
        for second in [Second::Close, Second::Reset] {
            let (port, n_conns) = origin(second);
            let url = Url::parse(&format!("http://127.0.0.1:{port}/f")).unwrap();
            // A long responseHeaderTimeout: were the stale connection waited out, the test would hang.
            let opts = options(Duration::from_secs(600));
            let rt = compio::runtime::Runtime::new().unwrap();
            rt.block_on(async {
                assert_eq!(get_ok(&url, &opts).await.unwrap(), b"ok", "{second:?}: first request");
                let again = get_ok(&url, &opts).await;
                assert_eq!(again.as_deref().ok(), Some(&b"ok"[..]), "{second:?}: {again:?}");
            });
            assert_eq!(n_conns.load(Ordering::SeqCst), 2, "{second:?}: one pooled, one fresh connection");
        }
    }

    #[test]
    fn a_timeout_on_a_pooled_connection_is_not_waited_out_twice() {
        let (port, n_conns) = origin(Second::Silence);
        let url = Url::parse(&format!("http://127.0.0.1:{port}/f")).unwrap();
        let opts = options(Duration::from_millis(300));
        let rt = compio::runtime::Runtime::new().unwrap();
        let err = rt.block_on(async {
            assert_eq!(get_ok(&url, &opts).await.unwrap(), b"ok");
            get_ok(&url, &opts).await.unwrap_err()
        });
        assert_eq!(err.kind, Kind::Timeout, "{err:?}");
        assert!(err.retryable, "the caller's retry budget decides: {err:?}");
        assert_eq!(n_conns.load(Ordering::SeqCst), 1, "the timeout was retried on a fresh connection");
    }
}
