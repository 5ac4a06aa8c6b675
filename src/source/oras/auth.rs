//! Registry auth, the pure half: parse a 401's `WWW-Authenticate` (RFC 9110 §11.6.1 challenges),
//! build the token-service URL, and read the token service's JSON answer.
//!
//! Invariant: a `Challenge::Bearer` always has a realm that is an absolute http(s) URL without a
//! fragment, and a `Token` value is non-empty visible ASCII — so the IO layer may request the one
//! and put the other in an `Authorization` header without re-checking. Token values never appear
//! in errors or `Debug` output. Inputs are bounded ([`MAX_HEADER_BYTES`], [`MAX_TOKEN_RESPONSE_BYTES`]).

use std::fmt;

use super::reference::{OrasError, OrasErrorKind};

/// Longer challenge headers are not from a registry we can talk to (nginx's default header buffer is 8 KiB).
pub const MAX_HEADER_BYTES: usize = 8192;
/// Bounds the work per header; real registries send 1 challenge with 3 parameters.
const MAX_PARAMS: usize = 64;
/// Token responses are a few KiB (JWTs); 1 MiB is generous and still bounded.
pub const MAX_TOKEN_RESPONSE_BYTES: usize = 1 << 20;
/// Servers commonly cap a request header near 8-16 KiB; a longer token could not be sent anyway.
const MAX_TOKEN_BYTES: usize = 16 << 10;
/// Docker's token spec: a missing or smaller `expires_in` means 60 s.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 60;
/// Refreshing once a day costs nothing; trusting a server's "forever" would.
const MAX_TOKEN_LIFETIME_SECS: u64 = 24 * 60 * 60;

/// What the registry asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
    Basic { realm: Option<String> },
}

fn challenge_err(message: String) -> OrasError {
    OrasError::new(OrasErrorKind::BadChallenge, message)
}

/// One parsed challenge: lowercase scheme and its parameters (lowercase names, unquoted values).
struct RawChallenge {
    scheme: String,
    params: Vec<(String, String)>,
}

impl RawChallenge {
    /// Repeated parameters are invalid per RFC; the first one wins rather than failing the pull.
    fn param(&self, name: &str) -> Option<String> {
        self.params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone())
    }
}

/// Parses a `WWW-Authenticate` value. With several challenges, Bearer is preferred over Basic
/// (a token keeps the password off the wire for every request); other schemes are skipped, and
/// only an error when nothing usable is left.
pub fn parse_www_authenticate(value: &str) -> Result<Challenge, OrasError> {
    if value.len() > MAX_HEADER_BYTES {
        return Err(challenge_err(format!("WWW-Authenticate is {} bytes, limit {MAX_HEADER_BYTES}", value.len())));
    }
    let challenges = Parser { s: value.as_bytes(), pos: 0, n_params: 0 }.challenges()?;
    if let Some(bearer) = challenges.iter().find(|c| c.scheme == "bearer") {
        return bearer_challenge(bearer);
    }
    if let Some(basic) = challenges.iter().find(|c| c.scheme == "basic") {
        return Ok(Challenge::Basic { realm: basic.param("realm") });
    }
    let schemes: Vec<&str> = challenges.iter().map(|c| c.scheme.as_str()).collect();
    Err(challenge_err(if schemes.is_empty() {
        "WWW-Authenticate is empty".to_owned()
    } else {
        format!("unsupported authentication scheme(s) [{}]: only Bearer and Basic are supported", schemes.join(", "))
    }))
}

fn bearer_challenge(c: &RawChallenge) -> Result<Challenge, OrasError> {
    let realm = c.param("realm").ok_or_else(|| challenge_err("Bearer challenge has no realm".to_owned()))?;
    let url =
        url::Url::parse(&realm).map_err(|e| challenge_err(format!("Bearer realm {realm:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.fragment().is_some() || !url.has_host() {
        return Err(challenge_err(format!("Bearer realm {realm:?} must be an http(s) URL without a fragment")));
    }
    Ok(Challenge::Bearer { realm, service: c.param("service"), scope: c.param("scope") })
}

/// A cursor over the header bytes. Grammar (RFC 9110): `challenge = scheme [ 1*SP ( token68 /
/// #auth-param ) ]`, `auth-param = token BWS "=" BWS ( token / quoted-string )`, list elements
/// separated by commas with optional whitespace, empty elements allowed.
struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    n_params: usize,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> &str {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        // tchars are ASCII, so this slice is valid UTF-8.
        std::str::from_utf8(&self.s[start..self.pos]).unwrap_or_default()
    }

    fn unexpected(&self) -> OrasError {
        let what = match self.peek() {
            Some(b) if b.is_ascii_graphic() => format!("{:?}", b as char),
            Some(b) => format!("byte 0x{b:02x}"),
            None => "end of header".to_owned(),
        };
        challenge_err(format!("malformed WWW-Authenticate: unexpected {what} at offset {}", self.pos))
    }

    fn challenges(mut self) -> Result<Vec<RawChallenge>, OrasError> {
        let mut out = Vec::new();
        loop {
            while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
                self.pos += 1;
            }
            if self.peek().is_none() {
                return Ok(out);
            }
            let scheme = self.token().to_ascii_lowercase();
            if scheme.is_empty() {
                return Err(self.unexpected());
            }
            let params = self.params()?;
            out.push(RawChallenge { scheme, params });
        }
    }

    /// Reads `name=value` pairs until the end or until a token not followed by `=`, which
    /// starts the next challenge (the cursor is left before it).
    fn params(&mut self) -> Result<Vec<(String, String)>, OrasError> {
        let mut params = Vec::new();
        loop {
            self.skip_ws();
            match self.peek() {
                None => return Ok(params),
                Some(b',') => {
                    self.pos += 1;
                    continue;
                }
                Some(_) => {}
            }
            let start = self.pos;
            let name = self.token().to_ascii_lowercase();
            if name.is_empty() {
                return Err(self.unexpected());
            }
            self.skip_ws();
            if self.peek() != Some(b'=') {
                self.pos = start;
                return Ok(params);
            }
            self.pos += 1;
            self.skip_ws();
            match self.value()? {
                Some(value) => params.push((name, value)),
                None => self.skip_token68_padding()?,
            }
            self.n_params += 1;
            if self.n_params > MAX_PARAMS {
                return Err(challenge_err(format!("WWW-Authenticate has more than {MAX_PARAMS} parameters")));
            }
        }
    }

    /// A token or quoted string; `None` when a `=` follows instead (the name was a token68
    /// such as `abc==`, which only other schemes use).
    fn value(&mut self) -> Result<Option<String>, OrasError> {
        if self.peek() == Some(b'"') {
            return self.quoted().map(Some);
        }
        if self.peek() == Some(b'=') {
            return Ok(None);
        }
        let value = self.token().to_owned();
        if value.is_empty() {
            return Err(self.unexpected());
        }
        Ok(Some(value))
    }

    fn skip_token68_padding(&mut self) -> Result<(), OrasError> {
        while self.peek() == Some(b'=') {
            self.pos += 1;
        }
        self.skip_ws();
        match self.peek() {
            None | Some(b',') => Ok(()),
            Some(_) => Err(self.unexpected()),
        }
    }

    /// `"..."` with `\x` escapes; control characters other than tab are refused.
    fn quoted(&mut self) -> Result<String, OrasError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek() {
                None => return Err(challenge_err("malformed WWW-Authenticate: unterminated quoted string".to_owned())),
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let Some(escaped) = self.peek() else { continue };
                    out.push(escaped);
                }
                Some(b) if b.is_ascii_control() && b != b'\t' => return Err(self.unexpected()),
                Some(b) => out.push(b),
            }
            self.pos += 1;
        }
        // The header came in as &str and we only dropped ASCII backslashes, so this is UTF-8.
        String::from_utf8(out).map_err(|_| challenge_err("malformed WWW-Authenticate: bad UTF-8".to_owned()))
    }
}

/// `realm?service=..&scope=..`, form-encoded, appended to any query the realm already has.
pub fn token_url(ch_realm: &str, service: Option<&str>, scope: &str) -> String {
    let mut pairs = Vec::new();
    if let Some(service) = service.filter(|s| !s.is_empty()) {
        pairs.push(("service", service));
    }
    // A challenge may name several scopes, space-separated; the token spec sends one `scope`
    // parameter each.
    pairs.extend(scope.split_whitespace().map(|s| ("scope", s)));
    match url::Url::parse(ch_realm) {
        Ok(mut url) if !pairs.is_empty() => {
            url.query_pairs_mut().extend_pairs(pairs);
            url.into()
        }
        Ok(url) => url.into(),
        // Unreachable for realms from `parse_www_authenticate`; still give a usable answer.
        Err(_) => {
            let query: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{k}={}", url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>()))
                .collect();
            let sep = if ch_realm.contains('?') { '&' } else { '?' };
            if query.is_empty() {
                ch_realm.to_owned()
            } else {
                format!("{ch_realm}{sep}{}", query.join("&"))
            }
        }
    }
}

/// The body of an OAuth2 refresh-token grant (RFC 6749 §6, as Docker's and oras-go's clients
/// send it when the docker config holds an `identitytoken`): form-encoded, scopes space-joined.
pub fn refresh_token_form(service: Option<&str>, scope: &str, refresh_token: &str) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "refresh_token");
    form.append_pair("refresh_token", refresh_token);
    if let Some(service) = service.filter(|s| !s.is_empty()) {
        form.append_pair("service", service);
    }
    let scopes: Vec<&str> = scope.split_whitespace().collect();
    if !scopes.is_empty() {
        form.append_pair("scope", &scopes.join(" "));
    }
    form.append_pair("client_id", "dfget");
    form.append_pair("access_type", "offline");
    form.finish()
}

/// The scope a pull needs; registries ignore a challenge's own scope if we ask for this.
pub fn pull_scope(repository: &str) -> String {
    format!("repository:{repository}:pull")
}

/// A bearer token from the token service. `Debug` hides the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    pub value: String,
    pub expires_in_secs: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("value", &format_args!("<redacted, {} bytes>", self.value.len()))
            .field("expires_in_secs", &self.expires_in_secs)
            .finish()
    }
}

/// `Bearer <token>` for the `Authorization` header.
pub fn bearer_header(token: &Token) -> String {
    format!("Bearer {}", token.value)
}

fn token_err(message: &str) -> OrasError {
    OrasError::new(OrasErrorKind::BadToken, message)
}

/// Reads `{"token": ..}` or `{"access_token": ..}` (the latter wins, as in Docker's client), with
/// `expires_in` clamped to [60 s, 1 day]. Goes through `serde_json::Value` so that errors can
/// only be syntax errors, whose messages hold a position and never the token.
pub fn parse_token_response(bytes: &[u8]) -> Result<Token, OrasError> {
    if bytes.len() > MAX_TOKEN_RESPONSE_BYTES {
        return Err(token_err("token response is larger than 1 MiB"));
    }
    let json: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        OrasError::new(
            OrasErrorKind::BadToken,
            format!("token response is not JSON (line {}, column {})", e.line(), e.column()),
        )
    })?;
    let field = |name: &str| json.get(name).and_then(|v| v.as_str()).filter(|s| !s.is_empty());
    let value = field("access_token")
        .or_else(|| field("token"))
        .ok_or_else(|| token_err("token response has neither a \"token\" nor an \"access_token\" string"))?;
    if value.len() > MAX_TOKEN_BYTES {
        return Err(token_err("token is longer than 16 KiB"));
    }
    if !value.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(token_err("token holds characters that cannot go in an HTTP header"));
    }
    let expires_in = json
        .get("expires_in")
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().filter(|f| f.is_finite() && *f >= 0.0).map(|f| f as u64)));
    let expires_in_secs =
        expires_in.unwrap_or(DEFAULT_TOKEN_LIFETIME_SECS).clamp(DEFAULT_TOKEN_LIFETIME_SECS, MAX_TOKEN_LIFETIME_SECS);
    Ok(Token { value: value.to_owned(), expires_in_secs })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(realm: &str, service: Option<&str>, scope: Option<&str>) -> Result<Challenge, &'static str> {
        Ok(Challenge::Bearer {
            realm: realm.to_owned(),
            service: service.map(str::to_owned),
            scope: scope.map(str::to_owned),
        })
    }

    fn basic(realm: Option<&str>) -> Result<Challenge, &'static str> {
        Ok(Challenge::Basic { realm: realm.map(str::to_owned) })
    }

    /// `expected`: the challenge, or a substring of the BadChallenge message.
    fn check(input: &str, expected: Result<Challenge, &str>) {
        match (parse_www_authenticate(input), expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{input}"),
            (Err(e), Err(want)) => {
                assert_eq!(e.kind, OrasErrorKind::BadChallenge, "{input}");
                assert!(e.message.contains(want), "{input}: {:?} lacks {want:?}", e.message);
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn challenges() {
        let realm = "https://auth.example/token";
        let cases: Vec<(&str, Result<Challenge, &str>)> = vec![
            // docker-registry's exact header
            (
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:test/img:pull""#,
                bearer(realm, Some("registry.example"), Some("repository:test/img:pull")),
            ),
            (r#"Basic realm="Registry Realm""#, basic(Some("Registry Realm"))),
            ("Basic", basic(None)),
            (
                r#"bEaReR   REALM = "https://auth.example/token" , scope="repository:a:pull,push""#,
                bearer(realm, None, Some("repository:a:pull,push")),
            ),
            (r#"Bearer realm="https://auth.example/token",service=svc"#, bearer(realm, Some("svc"), None)),
            // RFC 9110: a URL is not a token, so it must be quoted.
            (r#"Bearer realm=https://auth.example/token"#, Err("unexpected ':' at offset 18")),
            (r#"Bearer realm="https://auth.example/token",,service="a\"b\\c""#, bearer(realm, Some("a\"b\\c"), None)),
            (r#"Bearer realm="https://auth.example/token",realm="https://evil/""#, bearer(realm, None, None)),
            (
                r#"Bearer realm="https://auth.example/token?x=1",service="s""#,
                bearer("https://auth.example/token?x=1", Some("s"), None),
            ),
            (r#"Basic realm="b", Bearer realm="https://auth.example/token""#, bearer(realm, None, None)),
            (r#"Negotiate, Basic realm="x""#, basic(Some("x"))),
            (r#"Negotiate abc==, Basic realm="x""#, basic(Some("x"))),
            (r#"Bearer realm="https://auth.example/token", error="invalid_token""#, bearer(realm, None, None)),
            ("", Err("empty")),
            ("  ,, ", Err("empty")),
            ("Negotiate", Err("unsupported authentication scheme(s) [negotiate]")),
            (r#"Digest realm="x", nonce="y""#, Err("[digest]")),
            ("Bearer", Err("no realm")),
            (r#"Bearer service="x""#, Err("no realm")),
            (r#"Bearer realm="/relative/token""#, Err("not a URL")),
            (r#"Bearer realm="ftp://auth.example/t""#, Err("http(s) URL")),
            (r#"Bearer realm="https://auth.example/t#frag""#, Err("http(s) URL")),
            (r#"Bearer realm="https://auth.example/token"#, Err("unterminated")),
            (r#"Bearer realm="a\"#, Err("unterminated")),
            ("Bearer realm=", Err("unexpected end of header")),
            ("Bearer realm=,", Err("unexpected ','")),
            ("Bearer realm=\"a\nb\"", Err("byte 0x0a")),
            ("=realm", Err("unexpected '='")),
            (r#"Bearer realm="x" "y""#, Err("unexpected '\"'")),
            ("Bearer a==b", Err("unexpected 'b'")),
        ];
        for (input, expected) in cases {
            check(input, expected);
        }
        check(&format!("Basic realm=\"{}\"", "x".repeat(MAX_HEADER_BYTES)), Err("limit 8192"));
        check(&format!("Basic {}", "a=b,".repeat(65)), Err("more than 64 parameters"));
    }

    #[test]
    fn token_urls() {
        let check = |realm: &str, service: Option<&str>, scope: &str, want: &str| {
            assert_eq!(token_url(realm, service, scope), want);
        };
        let scope = pull_scope("test/img");
        assert_eq!(scope, "repository:test/img:pull");
        check(
            "https://auth.example/token",
            Some("registry.example"),
            &scope,
            "https://auth.example/token?service=registry.example&scope=repository%3Atest%2Fimg%3Apull",
        );
        check(
            "https://auth.example/token?x=1",
            None,
            &scope,
            "https://auth.example/token?x=1&scope=repository%3Atest%2Fimg%3Apull",
        );
        check("https://auth.example/token", Some("a b&c"), "", "https://auth.example/token?service=a+b%26c");
        check("https://auth.example/token", None, "", "https://auth.example/token");
        check(
            "https://auth.example/token?tenant=t1",
            Some("reg"),
            "repository:a:pull  repository:b:pull",
            "https://auth.example/token?tenant=t1&service=reg&scope=repository%3Aa%3Apull&scope=repository%3Ab%3Apull",
        );
        assert_eq!(
            refresh_token_form(Some("reg"), "repository:a:pull repository:b:pull", "id+tok"),
            "grant_type=refresh_token&refresh_token=id%2Btok&service=reg&scope=repository%3Aa%3Apull+repository%3Ab%3Apull\
             &client_id=dfget&access_type=offline"
        );
        assert_eq!(
            refresh_token_form(None, "", "t"),
            "grant_type=refresh_token&refresh_token=t&client_id=dfget&access_type=offline"
        );
        check("not a url", Some("s"), &scope, "not a url?service=s&scope=repository%3Atest%2Fimg%3Apull");
    }

    const SECRET: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0.sig";
    /// (token value, lifetime) or a substring of the BadToken message.
    type TokenWant = Result<(&'static str, u64), &'static str>;

    /// `expected`: (token value, lifetime) or a substring of the BadToken message.
    fn check_token(input: &str, expected: Result<(&str, u64), &str>) {
        match (parse_token_response(input.as_bytes()), expected) {
            (Ok(got), Ok((value, secs))) => {
                assert_eq!((got.value.as_str(), got.expires_in_secs), (value, secs), "{input}");
                assert!(!format!("{got:?}").contains(value), "Debug leaks the token");
                assert_eq!(bearer_header(&got), format!("Bearer {value}"));
            }
            (Err(e), Err(want)) => {
                assert_eq!(e.kind, OrasErrorKind::BadToken, "{input}");
                assert!(e.message.contains(want), "{input}: {:?} lacks {want:?}", e.message);
                assert!(!e.message.contains(SECRET) && !e.message.contains("c2VjcmV0"), "error leaks the token");
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn token_responses() {
        let cases: Vec<(String, TokenWant)> = vec![
            (format!(r#"{{"token":"{SECRET}"}}"#), Ok((SECRET, 60))),
            (
                format!(r#"{{"access_token":"{SECRET}","expires_in":300,"issued_at":"2024-01-01T00:00:00Z"}}"#),
                Ok((SECRET, 300)),
            ),
            (format!(r#"{{"token":"other","access_token":"{SECRET}"}}"#), Ok((SECRET, 60))),
            (format!(r#"{{"token":"{SECRET}","access_token":""}}"#), Ok((SECRET, 60))),
            (format!(r#"{{"token":"{SECRET}","expires_in":5}}"#), Ok((SECRET, 60))),
            (format!(r#"{{"token":"{SECRET}","expires_in":-5}}"#), Ok((SECRET, 60))),
            (format!(r#"{{"token":"{SECRET}","expires_in":120.7}}"#), Ok((SECRET, 120))),
            (format!(r#"{{"token":"{SECRET}","expires_in":"300"}}"#), Ok((SECRET, 60))),
            (format!(r#"{{"token":"{SECRET}","expires_in":99999999999}}"#), Ok((SECRET, 86400))),
            (r#"{"error":"denied"}"#.to_owned(), Err("neither")),
            (r#"{"token":""}"#.to_owned(), Err("neither")),
            (r#"{"token":42}"#.to_owned(), Err("neither")),
            (r#"["token"]"#.to_owned(), Err("neither")),
            (format!(r#"{{"token":"{SECRET}"#), Err("not JSON (line 1")),
            (format!(r#"{{"token":"{SECRET}","expires_in":}}"#), Err("not JSON")),
            (format!(r#"{{"token":"{SECRET}\r\nX-Evil: 1"}}"#), Err("cannot go in an HTTP header")),
            (format!(r#"{{"token":"{SECRET} x"}}"#), Err("cannot go in an HTTP header")),
            (format!(r#"{{"token":"{}"}}"#, "a".repeat(MAX_TOKEN_BYTES + 1)), Err("longer than 16 KiB")),
            ("<html>502</html>".to_owned(), Err("not JSON")),
        ];
        for (input, expected) in &cases {
            check_token(input, *expected);
        }
        let huge = vec![b' '; MAX_TOKEN_RESPONSE_BYTES + 1];
        assert_eq!(parse_token_response(&huge).unwrap_err().kind, OrasErrorKind::BadToken);
    }
}
