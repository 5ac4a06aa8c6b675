//! Sans-IO HTTP/1.1 client codec: writes request heads, parses response heads (via httparse) and
//! decides how the response body is framed (RFC 9112 §6.3).
//!
//! Invariant: nothing here does IO or panics on peer input. Every byte count is bounded by a
//! constant in `crate::limits`, and every framing ambiguity a request-smuggling attack could use
//! (Content-Length with Transfer-Encoding, disagreeing Content-Lengths) is an error, not a guess.

use std::fmt;

use crate::limits::{MAX_HEADERS, MAX_HEAD_BYTES, MAX_INTERIM_RESPONSES, MAX_REQUEST_HEADER_BYTES};

/// What went wrong while encoding or decoding HTTP/1.1. Retry decisions key off `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    pub kind: HttpErrorKind,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpErrorKind {
    HeadTooLarge,
    TooManyHeaders,
    MalformedHead,
    BadContentLength,
    /// Content-Length together with Transfer-Encoding: the request-smuggling shape.
    ConflictingFraming,
    BadChunk,
    ChunkLineTooLong,
    TrailerTooLarge,
    BadContentRange,
    /// The peer closed the connection before the body was complete.
    UnexpectedEof,
    BadStatus,
}

impl HttpErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::HeadTooLarge => "response head too large",
            Self::TooManyHeaders => "too many response headers",
            Self::MalformedHead => "malformed response head",
            Self::BadContentLength => "bad Content-Length",
            Self::ConflictingFraming => "conflicting body framing",
            Self::BadChunk => "bad chunked encoding",
            Self::ChunkLineTooLong => "chunk-size line too long",
            Self::TrailerTooLarge => "chunked trailer too large",
            Self::BadContentRange => "bad Content-Range",
            Self::UnexpectedEof => "connection closed before the body was complete",
            Self::BadStatus => "bad response status",
        }
    }
}

impl HttpError {
    pub fn new(kind: HttpErrorKind, detail: impl Into<String>) -> Self {
        Self { kind, detail: detail.into() }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.detail.is_empty() {
            f.write_str(self.kind.as_str())
        } else {
            write!(f, "{}: {}", self.kind.as_str(), self.detail)
        }
    }
}

impl std::error::Error for HttpError {}

// ---- request -----------------------------------------------------------------------------------

/// The `User-Agent` we send unless the caller gives one.
pub const USER_AGENT: &str = concat!("dfget/", env!("CARGO_PKG_VERSION"));

/// A request without a body (we only ever GET/HEAD).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Origin-form `/path?query`, or absolute-form `http://host/path` when talking to a proxy.
    pub target: &'a str,
    /// `Host` header value, including the port when it is not the scheme's default.
    pub host: &'a str,
    /// Caller headers, already checked with [`valid_header`].
    pub headers: &'a [(String, String)],
    pub keep_alive: bool,
    /// Request body (a POST's form); sent with its `Content-Length` when the method is not GET
    /// or HEAD.
    pub body: &'a [u8],
}

/// Header fields the codec owns because they decide framing or connection reuse; a caller copy
/// would contradict ours (two `Host`s get a 400; a `Content-Length` on a GET makes the server wait
/// for a body that never comes).
const OWNED_HEADERS: [&str; 4] = ["host", "connection", "content-length", "transfer-encoding"];

/// Appends the request head to `out`. A caller `Host` header replaces `req.host` (like curl's
/// `-H Host:`); caller `Connection`/`Content-Length`/`Transfer-Encoding` are dropped.
pub fn write_request(req: &Request<'_>, out: &mut Vec<u8>) {
    debug_assert!(req.headers.iter().all(|(n, v)| valid_header(n, v)));
    let given = |name: &str| req.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
    let host = given("host").map_or(req.host, |(_, v)| v.as_str());

    out.extend_from_slice(req.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    put_header(out, "Host", host);
    for (name, value) in req.headers {
        if !OWNED_HEADERS.iter().any(|o| name.eq_ignore_ascii_case(o)) {
            put_header(out, name, value);
        }
    }
    if given("user-agent").is_none() {
        put_header(out, "User-Agent", USER_AGENT);
    }
    // We store bytes verbatim and fetch them by Range: a compressed body would break both.
    if given("accept-encoding").is_none() {
        put_header(out, "Accept-Encoding", "identity");
    }
    if !req.keep_alive {
        put_header(out, "Connection", "close");
    }
    let has_body = !matches!(req.method, "GET" | "HEAD");
    debug_assert!(has_body || req.body.is_empty(), "GET and HEAD requests carry no body");
    if has_body {
        put_header(out, "Content-Length", &req.body.len().to_string());
    }
    out.extend_from_slice(b"\r\n");
    if has_body {
        out.extend_from_slice(req.body);
    }
}

fn put_header(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// True when `name: value` can be sent as is: `name` is a non-empty RFC 9110 token, `value` has no
/// control bytes but HTAB (so no CR/LF header injection, no NUL), and the line fits
/// `MAX_REQUEST_HEADER_BYTES`.
pub fn valid_header(name: &str, value: &str) -> bool {
    let ctl = |b: u8| (b < 0x20 && b != b'\t') || b == 0x7f;
    !name.is_empty()
        && name.len() + 2 + value.len() <= MAX_REQUEST_HEADER_BYTES
        && name.bytes().all(is_tchar)
        && !value.bytes().any(ctl)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

// ---- response head -----------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// `1` for HTTP/1.1, `0` for HTTP/1.0.
    pub version_minor: u8,
    /// In arrival order, names as sent; values are raw bytes (they may hold obs-text).
    pub headers: Vec<(String, Vec<u8>)>,
}

impl ResponseHead {
    /// First value of `name`, compared case-insensitively.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// First value of `name` if it is valid UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }

    pub fn headers_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
    }

    /// Whether the server lets us reuse the connection (RFC 9112 §9.3): HTTP/1.1 unless a
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.list_tokens("connection").any(|t| t.eq_ignore_ascii_case(b"close")) {
            return false;
        }
        self.version_minor >= 1 || self.list_tokens("connection").any(|t| t.eq_ignore_ascii_case(b"keep-alive"))
    }

    /// Elements of a comma-separated list header across all its fields, OWS-trimmed; empty
    /// elements are kept so callers that must reject them can.
    fn list_tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a [u8]> {
        self.headers_all(name).flat_map(|v| v.split(|&b| b == b',')).map(trim_ows)
    }
}

fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Parses the response head at the start of `buf`.
///
/// `Ok(None)`: incomplete, read more (only while `buf.len() < MAX_HEAD_BYTES`, else
/// `HeadTooLarge`). `Ok(Some((head, n)))`: the final head and the bytes it used, including any 1xx
/// interim heads skipped before it; the body starts at `buf[n..]`. All heads together must fit in
/// `MAX_HEAD_BYTES`, since the caller keeps them buffered until we return `Some`.
pub fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let window = &buf[..buf.len().min(MAX_HEAD_BYTES)];
    let mut offset = 0;
    for _ in 0..=MAX_INTERIM_RESPONSES {
        let Some((head, len)) = parse_one_head(&window[offset..])? else {
            if buf.len() >= MAX_HEAD_BYTES {
                return Err(HttpError::new(
                    HttpErrorKind::HeadTooLarge,
                    format!("no end of head within {MAX_HEAD_BYTES} bytes"),
                ));
            }
            return Ok(None);
        };
        offset += len;
        match head.status {
            // We never ask to switch protocols: what follows a 101 is not HTTP/1.1 for us.
            101 => return Err(bad_status(101)),
            100..=199 => continue,
            _ => return Ok(Some((head, offset))),
        }
    }
    Err(HttpError::new(HttpErrorKind::HeadTooLarge, format!("more than {MAX_INTERIM_RESPONSES} interim 1xx responses")))
}

fn bad_status(status: u16) -> HttpError {
    HttpError::new(HttpErrorKind::BadStatus, format!("status {status}"))
}

/// One head (interim or final) at the start of `buf`.
fn parse_one_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut slots);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HttpError::new(HttpErrorKind::TooManyHeaders, format!("more than {MAX_HEADERS} header fields")))
        }
        Err(e) => return Err(HttpError::new(HttpErrorKind::MalformedHead, e.to_string())),
    };
    // httparse fills these three whenever it returns Complete; a None would be its bug, but we
    // still answer with an error rather than a panic.
    let (Some(status), Some(version_minor), Some(reason)) = (resp.code, resp.version, resp.reason) else {
        return Err(HttpError::new(HttpErrorKind::MalformedHead, "incomplete status line"));
    };
    // RFC 9110 §15: status codes are 100..=599; others are not HTTP.
    if !(100..=599).contains(&status) {
        return Err(bad_status(status));
    }
    let headers = resp.headers.iter().map(|h| (h.name.to_owned(), h.value.to_vec())).collect();
    let head = ResponseHead { status, reason: reason.to_owned(), version_minor, headers };
    Ok(Some((head, len)))
}

// ---- framing -----------------------------------------------------------------------------------

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all, whatever the headers say.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    Chunked,
    /// Until the server closes the connection (the connection cannot be reused).
    Close,
}

/// Body framing of a response (RFC 9112 §6.3), strict where the RFC allows a guess.
///
/// A transfer coding other than a final `chunked` is passed through undecoded (`Close`): we send
/// no `TE` header, so a conforming server never applies one, and the size/digest checks above us
/// catch a server that does.
pub fn framing(head: &ResponseHead, request_was_head: bool) -> Result<Framing, HttpError> {
    if request_was_head || matches!(head.status, 100..=199 | 204 | 304) {
        return Ok(Framing::Empty);
    }
    let has_te = head.header("transfer-encoding").is_some();
    let content_length = content_length(head)?;
    if has_te {
        return transfer_framing(head, content_length.is_some());
    }
    Ok(content_length.map_or(Framing::Close, Framing::Length))
}

fn transfer_framing(head: &ResponseHead, has_content_length: bool) -> Result<Framing, HttpError> {
    let conflict = |detail: &str| HttpError::new(HttpErrorKind::ConflictingFraming, detail);
    if has_content_length {
        return Err(conflict("both Transfer-Encoding and Content-Length"));
    }
    // RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing.
    if head.version_minor == 0 {
        return Err(conflict("Transfer-Encoding in an HTTP/1.0 response"));
    }
    let codings: Vec<&[u8]> = head.list_tokens("transfer-encoding").collect();
    let is_chunked = |c: &[u8]| coding_name(c).eq_ignore_ascii_case(b"chunked");
    let n_chunked = codings.iter().filter(|c| is_chunked(c)).count();
    match codings.last() {
        Some(last) if is_chunked(last) && n_chunked == 1 => Ok(Framing::Chunked),
        // RFC 9112 §6.1: chunked must not be applied twice; the body boundary would be a guess.
        _ if n_chunked > 1 => Err(conflict("chunked applied more than once")),
        _ => Ok(Framing::Close),
    }
}

/// The coding name of a transfer-coding list element, without `;param=..`.
fn coding_name(element: &[u8]) -> &[u8] {
    let end = element.iter().position(|&b| b == b';').unwrap_or(element.len());
    trim_ows(&element[..end])
}

/// The Content-Length, if any. Several fields or list elements are accepted only when all are
/// the same number (RFC 9112 §6.3 item 5); anything else is an error.
fn content_length(head: &ResponseHead) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    for element in head.list_tokens("content-length") {
        let n = parse_decimal(element).ok_or_else(|| {
            HttpError::new(
                HttpErrorKind::BadContentLength,
                format!("not a length: {:?}", String::from_utf8_lossy(element)),
            )
        })?;
        match found {
            Some(prev) if prev != n => {
                return Err(HttpError::new(HttpErrorKind::BadContentLength, format!("differing values {prev} and {n}")))
            }
            _ => found = Some(n),
        }
    }
    Ok(found)
}

/// `1*DIGIT` as a u64; `None` on empty, sign, any other byte or overflow.
pub(crate) fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |acc, &b| {
        let d = (b as char).to_digit(10)?;
        acc.checked_mul(10)?.checked_add(u64::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // ---- parse_head ----

    fn head(status: u16, minor: u8, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status,
            reason: String::new(),
            version_minor: minor,
            headers: headers.iter().map(|(n, v)| (n.to_string(), v.as_bytes().to_vec())).collect(),
        }
    }

    /// Parses `input` whole, then checks every proper prefix is `Ok(None)` (a split at any byte
    /// boundary is just "read more") and the full input gives the same answer.
    fn check_head(input: &[u8], expected: Result<(u16, &str, u8, usize), HttpErrorKind>) {
        let got = parse_head(input);
        match (&got, expected) {
            (Ok(Some((h, n))), Ok((status, reason, minor, len))) => {
                assert_eq!((h.status, h.reason.as_str(), h.version_minor, *n), (status, reason, minor, len));
                for cut in 0..len {
                    assert_eq!(parse_head(&input[..cut]), Ok(None), "prefix {cut} of {input:?}");
                }
            }
            (Err(e), Err(kind)) => assert_eq!(e.kind, kind, "{input:?}: {e}"),
            _ => panic!("{input:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn parse_head_table() {
        use HttpErrorKind::*;
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc";
        check_head(ok, Ok((200, "OK", 1, 38)));
        check_head(b"HTTP/1.0 404 Not Found\r\n\r\n", Ok((404, "Not Found", 0, 26)));
        check_head(b"HTTP/1.1 204\r\n\r\n", Ok((204, "", 1, 16)));
        check_head(b"HTTP/1.1 200 OK\nA: b\n\n", Ok((200, "OK", 1, 22)));
        // Interim responses are skipped and counted in the consumed length.
        let interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\nLink: </a>\r\n\r\nHTTP/1.1 206 P\r\n\r\n";
        check_head(interim, Ok((206, "P", 1, interim.len())));
        check_head(b"HTTP/1.1 101 Switching\r\nUpgrade: x\r\n\r\n", Err(BadStatus));
        check_head(b"HTTP/1.1 099 X\r\n\r\n", Err(BadStatus));
        check_head(b"HTTP/1.1 600 X\r\n\r\n", Err(BadStatus));
        check_head(b"HTTP/2 200 OK\r\n\r\n", Err(MalformedHead));
        check_head(b"HTTP/1.1 2000 OK\r\n\r\n", Err(MalformedHead));
        check_head(b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", Err(MalformedHead));
        check_head(b"HTTP/1.1 200 OK\r\nA: x\r\n folded\r\n\r\n", Err(MalformedHead));
        check_head(b"HTTP/1.1 200 OK\r\nA: x\0y\r\n\r\n", Err(MalformedHead));
        check_head(b"garbage\r\n\r\n", Err(MalformedHead));
    }

    #[test]
    fn parse_head_limits() {
        use HttpErrorKind::*;
        let many = |n: usize| {
            let mut v = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..n {
                v.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
            }
            v.extend_from_slice(b"\r\n");
            v
        };
        let at_limit = many(MAX_HEADERS);
        check_head(&at_limit, Ok((200, "OK", 1, at_limit.len())));
        check_head(&many(MAX_HEADERS + 1), Err(TooManyHeaders));

        // A head that fits exactly in MAX_HEAD_BYTES is fine; one byte more is not.
        let sized = |total: usize| {
            let fixed = b"HTTP/1.1 200 OK\r\nX: \r\n\r\n".len();
            let mut v = b"HTTP/1.1 200 OK\r\nX: ".to_vec();
            v.resize(total - 4, b'a');
            v.extend_from_slice(b"\r\n\r\n");
            assert!(total > fixed);
            v
        };
        let exact = sized(MAX_HEAD_BYTES);
        assert_eq!(parse_head(&exact).map(|o| o.map(|(_, n)| n)), Ok(Some(MAX_HEAD_BYTES)));
        let over = sized(MAX_HEAD_BYTES + 1);
        check_head(&over, Err(HeadTooLarge));
        assert_eq!(parse_head(&over[..MAX_HEAD_BYTES - 1]), Ok(None));
        assert_eq!(parse_head(&over[..MAX_HEAD_BYTES]).map_err(|e| e.kind), Err(HeadTooLarge));

        // Body bytes buffered past the limit behind a complete head are not the head's problem.
        let mut with_body = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n".to_vec();
        let head_len = with_body.len();
        with_body.resize(head_len + 100_000, b'x');
        let got = parse_head(&with_body).map(|o| o.map(|(h, n)| (h.status, n)));
        assert_eq!(got, Ok(Some((200, head_len))));

        let mut flood = b"HTTP/1.1 103 E\r\n\r\n".repeat(MAX_INTERIM_RESPONSES + 1);
        flood.extend_from_slice(b"HTTP/1.1 200 OK\r\n\r\n");
        check_head(&flood, Err(HeadTooLarge));
        let fine = &flood[18..];
        check_head(fine, Ok((200, "OK", 1, fine.len())));
    }

    #[test]
    fn header_lookup() {
        let h = head(200, 1, &[("Content-Type", "a"), ("x-multi", "1"), ("X-Multi", "2"), ("Bin", "\u{e9}")]);
        assert_eq!(h.header("content-type"), Some(&b"a"[..]));
        assert_eq!(h.header("X-MULTI"), Some(&b"1"[..]));
        assert_eq!(h.headers_all("x-multi").collect::<Vec<_>>(), vec![&b"1"[..], &b"2"[..]]);
        assert_eq!(h.header("missing"), None);
        assert_eq!(h.header_str("bin"), Some("\u{e9}"));
        let raw = ResponseHead { headers: vec![("Bin".into(), vec![0xff])], ..h };
        assert_eq!(raw.header_str("bin"), None);
    }

    fn check_keep_alive(minor: u8, connection: &[&str], expected: bool) {
        let fields: Vec<(&str, &str)> = connection.iter().map(|v| ("Connection", *v)).collect();
        assert_eq!(head(200, minor, &fields).keep_alive(), expected, "1.{minor} {connection:?}");
    }

    #[test]
    fn keep_alive_table() {
        check_keep_alive(1, &[], true);
        check_keep_alive(1, &["close"], false);
        check_keep_alive(1, &["Keep-Alive, CLOSE"], false);
        check_keep_alive(1, &["upgrade", "close"], false);
        check_keep_alive(0, &[], false);
        check_keep_alive(0, &["keep-alive"], true);
        check_keep_alive(0, &[" Keep-Alive "], true);
        check_keep_alive(0, &["keep-alive", "close"], false);
    }

    // ---- framing ----

    fn check_framing(
        status: u16,
        minor: u8,
        was_head: bool,
        fields: &[(&str, &str)],
        expected: Result<Framing, HttpErrorKind>,
    ) {
        let got = framing(&head(status, minor, fields), was_head).map_err(|e| e.kind);
        assert_eq!(got, expected, "{status} 1.{minor} head={was_head} {fields:?}");
    }

    #[test]
    fn framing_table() {
        use Framing::*;
        use HttpErrorKind::*;
        let cl = |v| [("Content-Length", v)];
        check_framing(200, 1, false, &cl("10"), Ok(Length(10)));
        check_framing(200, 1, false, &cl("0"), Ok(Length(0)));
        check_framing(200, 1, false, &cl("007"), Ok(Length(7)));
        check_framing(200, 1, false, &cl("18446744073709551615"), Ok(Length(u64::MAX)));
        check_framing(200, 1, false, &[], Ok(Close));
        check_framing(200, 0, false, &[], Ok(Close));
        check_framing(200, 1, true, &cl("10"), Ok(Empty));
        check_framing(200, 1, true, &[("Transfer-Encoding", "chunked")], Ok(Empty));
        check_framing(204, 1, false, &[("Transfer-Encoding", "chunked")], Ok(Empty));
        check_framing(304, 1, false, &cl("10"), Ok(Empty));
        check_framing(100, 1, false, &[], Ok(Empty));
        check_framing(200, 1, false, &[("Transfer-Encoding", "chunked")], Ok(Chunked));
        check_framing(200, 1, false, &[("transfer-encoding", " Chunked ")], Ok(Chunked));
        check_framing(200, 1, false, &[("Transfer-Encoding", "gzip, chunked")], Ok(Chunked));
        check_framing(200, 1, false, &[("Transfer-Encoding", "gzip"), ("Transfer-Encoding", "chunked")], Ok(Chunked));
        check_framing(200, 1, false, &[("Transfer-Encoding", "gzip")], Ok(Close));
        check_framing(200, 1, false, &[("Transfer-Encoding", "chunked, gzip")], Ok(Close));
        // Hostile shapes.
        check_framing(
            200,
            1,
            false,
            &[("Transfer-Encoding", "chunked"), ("Content-Length", "5")],
            Err(ConflictingFraming),
        );
        check_framing(
            200,
            1,
            false,
            &[("Content-Length", "5"), ("Transfer-Encoding", "gzip")],
            Err(ConflictingFraming),
        );
        check_framing(200, 1, false, &[("Transfer-Encoding", "chunked, chunked")], Err(ConflictingFraming));
        check_framing(200, 0, false, &[("Transfer-Encoding", "chunked")], Err(ConflictingFraming));
        check_framing(200, 1, false, &cl("-1"), Err(BadContentLength));
        check_framing(200, 1, false, &cl("+1"), Err(BadContentLength));
        check_framing(200, 1, false, &cl(""), Err(BadContentLength));
        check_framing(200, 1, false, &cl("1 2"), Err(BadContentLength));
        check_framing(200, 1, false, &cl("0x10"), Err(BadContentLength));
        check_framing(200, 1, false, &cl("18446744073709551616"), Err(BadContentLength));
        check_framing(200, 1, false, &cl("99999999999999999999999"), Err(BadContentLength));
        check_framing(200, 1, false, &cl("1,1"), Ok(Length(1)));
        check_framing(200, 1, false, &cl("1 , 1"), Ok(Length(1)));
        check_framing(200, 1, false, &[("Content-Length", "1"), ("content-length", "1")], Ok(Length(1)));
        check_framing(200, 1, false, &cl("1,2"), Err(BadContentLength));
        check_framing(200, 1, false, &cl("1,"), Err(BadContentLength));
        check_framing(200, 1, false, &[("Content-Length", "1"), ("Content-Length", "2")], Err(BadContentLength));
    }

    // ---- request ----

    fn check_request(req: Request<'_>, expected: &str) {
        let mut out = b"prefix".to_vec();
        write_request(&req, &mut out);
        assert_eq!(String::from_utf8_lossy(&out[6..]), expected);
    }

    #[test]
    fn write_request_table() {
        let ua = USER_AGENT;
        let hs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
        };
        let none = hs(&[]);
        let base = Request {
            method: "GET",
            target: "/a?b=c",
            host: "example.com:8080",
            headers: &none,
            keep_alive: true,
            body: b"",
        };
        check_request(base, &format!("GET /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: {ua}\r\nAccept-Encoding: identity\r\n\r\n"));
        check_request(
            Request { method: "HEAD", keep_alive: false, ..base },
            &format!("HEAD /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: {ua}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"),
        );
        let proxy = Request { target: "http://example.com:8080/a", ..base };
        check_request(proxy, &format!("GET http://example.com:8080/a HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: {ua}\r\nAccept-Encoding: identity\r\n\r\n"));
        let user = hs(&[
            ("Range", "bytes=0-9"),
            ("user-agent", "me/1"),
            ("Accept-Encoding", "gzip"),
            ("Authorization", "Bearer t"),
        ]);
        check_request(
            Request { headers: &user, ..base },
            "GET /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nRange: bytes=0-9\r\nuser-agent: me/1\r\nAccept-Encoding: gzip\r\nAuthorization: Bearer t\r\n\r\n",
        );
        let owned = hs(&[
            ("HOST", "other"),
            ("Connection", "keep-alive"),
            ("Content-Length", "5"),
            ("Transfer-Encoding", "chunked"),
        ]);
        check_request(
            Request { headers: &owned, keep_alive: false, ..base },
            &format!("GET /a?b=c HTTP/1.1\r\nHost: other\r\nUser-Agent: {ua}\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"),
        );
        // A POST carries its body with our Content-Length, never the caller's.
        check_request(
            Request { method: "POST", headers: &owned[2..3], body: b"a=1&b=2", ..base },
            &format!("POST /a?b=c HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: {ua}\r\nAccept-Encoding: identity\r\nContent-Length: 7\r\n\r\na=1&b=2"),
        );
    }

    fn check_valid_header(name: &str, value: &str, expected: bool) {
        assert_eq!(valid_header(name, value), expected, "{name:?}: {value:?}");
    }

    #[test]
    fn valid_header_table() {
        check_valid_header("X-Token", "abc def\tghi", true);
        check_valid_header("x!#$%&'*+-.^_`|~1", "", true);
        check_valid_header("X", "caf\u{e9}", true);
        check_valid_header("", "v", false);
        check_valid_header("X Y", "v", false);
        check_valid_header("X:Y", "v", false);
        check_valid_header("X\r\nEvil", "v", false);
        check_valid_header("X", "a\r\nEvil: 1", false);
        check_valid_header("X", "a\nb", false);
        check_valid_header("X", "a\rb", false);
        check_valid_header("X", "a\0b", false);
        check_valid_header("X", "a\x7fb", false);
        check_valid_header("X\u{e9}", "v", false);
        check_valid_header("X", &"a".repeat(MAX_REQUEST_HEADER_BYTES - 3), true);
        check_valid_header("X", &"a".repeat(MAX_REQUEST_HEADER_BYTES - 2), false);
    }

    #[test]
    fn error_display() {
        let e = HttpError::new(HttpErrorKind::BadChunk, "bad byte 0x7a");
        assert_eq!(e.to_string(), "bad chunked encoding: bad byte 0x7a");
        assert_eq!(HttpError::new(HttpErrorKind::UnexpectedEof, "").to_string(), HttpErrorKind::UnexpectedEof.as_str());
    }
}
