//! A test token service for the registry's `auth.token` mode (distribution's token spec): answers
//! `GET /token?service=..&scope=repository:<name>:<actions>` with an RS256 JWT signed by a key it
//! generates with `openssl`, whose self-signed certificate is the registry's `rootcertbundle`.
//!
//! Policy: repositories under `public/` are pullable by anyone; everything else needs the one
//! Basic user. Anonymous requests for a private scope get a token with an empty `access` list
//! (as Docker Hub does), so the registry, not this service, refuses them; a wrong password gets a
//! 401 here. Every request is recorded for assertions.
//!
//! Quirks of hosted token services can be switched on: answers with only `access_token`, and an
//! OAuth2 endpoint (`POST` with `grant_type=refresh_token`) that trades the one identity token
//! for the user's rights, as Docker Hub's and ACR's do.
//!
//! Invariant: the accept thread stops when the `TokenServer` is dropped.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use sha2::{Digest, Sha256};
use tempfile::TempDir;

const MAX_REQUEST_HEAD_BYTES: usize = 16 * 1024;

/// One token request as the service saw it.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    pub method: String,
    /// Query parameters (GET) or form fields (POST), in order.
    pub params: Vec<(String, String)>,
    pub scopes: Vec<String>,
    /// The Basic user, when an Authorization header was sent (right or wrong password).
    pub basic_user: Option<String>,
    pub status: u16,
}

struct Shared {
    user: String,
    password: String,
    key: PathBuf,
    kid: String,
    requests: Mutex<Vec<TokenRequest>>,
    n_tokens: AtomicU64,
    /// `exp` of the tokens issued from now on, in seconds after issue (may be negative: see
    /// `set_token_exp_offset`).
    exp_offset_secs: AtomicI64,
    only_access_token: AtomicBool,
    /// The refresh token a `POST` grant must present.
    identity_token: Mutex<Option<String>>,
}

pub struct TokenServer {
    dir: TempDir,
    port: u16,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

const SERVICE: &str = "e2e-registry";
const ISSUER: &str = "e2e-token-issuer";

impl TokenServer {
    pub fn start(user: &str, password: &str) -> TokenServer {
        super::ensure_tools();
        let dir = crate::common::temp_dir("oras-token-");
        let (key, cert) = (dir.path().join("key.pem"), dir.path().join("cert.pem"));
        openssl(
            &["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=e2e-token"],
            &["-keyout", path_str(&key), "-out", path_str(&cert)],
        );
        let kid = libtrust_key_id(&cert);
        let shared = Arc::new(Shared {
            user: user.into(),
            password: password.into(),
            key,
            kid,
            requests: Mutex::new(Vec::new()),
            n_tokens: AtomicU64::new(0),
            exp_offset_secs: AtomicI64::new(300),
            only_access_token: AtomicBool::new(false),
            identity_token: Mutex::new(None),
        });
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token service");
        let port = listener.local_addr().expect("local_addr").port();
        listener.set_nonblocking(true).expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (shared, stop) = (shared.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(listener, &shared, &stop))
        };
        TokenServer { dir, port, shared, stop, thread: Some(thread) }
    }

    pub fn realm(&self) -> String {
        format!("http://127.0.0.1:{}/token", self.port)
    }

    pub fn service(&self) -> &str {
        SERVICE
    }

    pub fn issuer(&self) -> &str {
        ISSUER
    }

    pub fn cert_path(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    /// Tokens issued from now on carry `exp = now + offset`. distribution 2.8 accepts a token until
    /// 60 s (its leeway) after `exp`, so an offset of -57 makes a token that works for about 3 s.
    pub fn set_token_exp_offset(&self, offset_secs: i64) {
        self.shared.exp_offset_secs.store(offset_secs, Ordering::SeqCst);
    }

    /// Answers carry `access_token` only (no `token`), as OAuth2 services do.
    pub fn set_only_access_token(&self, only: bool) {
        self.shared.only_access_token.store(only, Ordering::SeqCst);
    }

    /// `POST` grants presenting this refresh token get the user's rights.
    pub fn set_identity_token(&self, token: &str) {
        *self.shared.identity_token.lock().unwrap() = Some(token.to_string());
    }

    pub fn requests(&self) -> Vec<TokenRequest> {
        self.shared.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("temp paths are UTF-8")
}

fn openssl(args: &[&str], more: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).args(more).stdin(Stdio::null()).output().expect("run openssl");
    assert!(out.status.success(), "openssl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// libtrust's key id, which distribution 2.8 matches against a JWT's `kid`: the SHA-256 of the
/// DER SubjectPublicKeyInfo, first 30 bytes, base32 without padding, in `:`-separated groups of 4.
fn libtrust_key_id(cert: &Path) -> String {
    let pem = openssl(&["x509", "-noout", "-pubkey", "-in", path_str(cert)], &[]);
    let mut child = Command::new("openssl")
        .args(["pkey", "-pubin", "-outform", "DER"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run openssl pkey");
    child.stdin.take().expect("stdin").write_all(&pem).expect("feed public key");
    let der = child.wait_with_output().expect("openssl pkey output").stdout;
    assert!(!der.is_empty(), "openssl pkey printed no DER");
    let encoded = base32(&Sha256::digest(&der)[..30]);
    encoded.as_bytes().chunks(4).map(|c| String::from_utf8_lossy(c).into_owned()).collect::<Vec<_>>().join(":")
}

/// RFC 4648 base32 without padding (30 bytes in, 48 characters out).
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut out, mut buffer, mut n_bits) = (String::new(), 0u32, 0u32);
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        n_bits += 8;
        while n_bits >= 5 {
            n_bits -= 5;
            out.push(ALPHABET[((buffer >> n_bits) & 31) as usize] as char);
        }
    }
    if n_bits > 0 {
        out.push(ALPHABET[((buffer << (5 - n_bits)) & 31) as usize] as char);
    }
    out
}

fn accept_loop(listener: TcpListener, shared: &Shared, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => serve(stream, shared),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One request per connection (`Connection: close`): clients here ask for a token at a time.
fn serve(mut stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let Some(mut head) = read_head(&mut stream) else { return };
    let body_at = head.find("\r\n\r\n").map_or(head.len(), |i| i + 4);
    let content_length: usize = head
        .lines()
        .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case("content-length")))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut buf = [0u8; 1024];
    while head.len() - body_at < content_length.min(MAX_REQUEST_HEAD_BYTES) {
        match stream.read(&mut buf) {
            Ok(n) if n > 0 => head.push_str(&String::from_utf8_lossy(&buf[..n])),
            _ => return,
        }
    }
    let (status, body) = answer(&head, shared);
    let reason = if status == 200 { "OK" } else { "Unauthorized" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes());
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).ok()?;
        if n == 0 || head.len() > MAX_REQUEST_HEAD_BYTES {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(head).ok()
}

fn answer(head: &str, shared: &Shared) -> (u16, String) {
    let method = head.split(' ').next().unwrap_or("").to_string();
    let target = head.lines().next().and_then(|l| l.split(' ').nth(1)).unwrap_or("/");
    let query = target.split_once('?').map_or("", |(_, q)| q);
    let form = head.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let encoded = if method == "POST" { form } else { query };
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(encoded.as_bytes()).into_owned().collect();
    let param = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    // GET sends one `scope` per scope; an OAuth2 POST sends them space-joined in one field.
    let scopes: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "scope")
        .flat_map(|(_, v)| v.split(' ').map(str::to_string).collect::<Vec<_>>())
        .collect();
    if method == "POST" {
        let expected = shared.identity_token.lock().ok().and_then(|t| t.clone());
        let granted = param("grant_type").as_deref() == Some("refresh_token")
            && expected.is_some()
            && param("refresh_token") == expected;
        let status = if granted { 200 } else { 401 };
        let body = if granted {
            token_body(shared, &shared.user, &scopes, true)
        } else {
            r#"{"error":"invalid_grant"}"#.to_string()
        };
        record(shared, TokenRequest { method, params: pairs, scopes, basic_user: None, status });
        return (status, body);
    }
    let basic = head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        let value = value.trim();
        (name.eq_ignore_ascii_case("authorization") && value.starts_with("Basic ")).then(|| value[6..].to_string())
    });
    let decoded = basic.as_deref().and_then(|b| STANDARD.decode(b).ok()).and_then(|b| String::from_utf8(b).ok());
    let basic_user = decoded.as_deref().map(|d| d.split(':').next().unwrap_or("").to_string());
    let authenticated = decoded.as_deref() == Some(&format!("{}:{}", shared.user, shared.password));
    let (status, body) = if basic.is_some() && !authenticated {
        (401, r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string())
    } else {
        (200, token_body(shared, basic_user.as_deref().unwrap_or(""), &scopes, authenticated))
    };
    record(shared, TokenRequest { method, params: pairs, scopes, basic_user, status });
    (status, body)
}

fn record(shared: &Shared, request: TokenRequest) {
    if let Ok(mut requests) = shared.requests.lock() {
        requests.push(request);
    }
}

/// The JSON answer with a signed token for `scopes`.
fn token_body(shared: &Shared, subject: &str, scopes: &[String], authenticated: bool) -> String {
    let access: Vec<serde_json::Value> = scopes.iter().filter_map(|s| grant(s, authenticated)).collect();
    let token = sign(shared, subject, &access);
    let expires_in = shared.exp_offset_secs.load(Ordering::SeqCst).max(0);
    if shared.only_access_token.load(Ordering::SeqCst) {
        serde_json::json!({"access_token": token, "expires_in": expires_in}).to_string()
    } else {
        serde_json::json!({"token": token, "access_token": token, "expires_in": expires_in}).to_string()
    }
}

/// The access entry granted for `repository:<name>:<actions>`, or None when nothing is granted.
fn grant(scope: &str, authenticated: bool) -> Option<serde_json::Value> {
    let rest = scope.strip_prefix("repository:")?;
    let (name, actions) = rest.rsplit_once(':')?;
    let granted: Vec<&str> = if authenticated {
        // The one user may do everything; granting push with pull also lets oras-py reuse a
        // token it got for a pull-only scope.
        vec!["pull", "push"]
    } else if name.starts_with("public/") && actions.split(',').any(|a| a == "pull") {
        vec!["pull"]
    } else {
        return None;
    };
    Some(serde_json::json!({"type": "repository", "name": name, "actions": granted}))
}

/// `header.claims.signature`, RS256 over the first two parts with the service's key.
fn sign(shared: &Shared, subject: &str, access: &[serde_json::Value]) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let jti = shared.n_tokens.fetch_add(1, Ordering::SeqCst);
    let header = serde_json::json!({"typ": "JWT", "alg": "RS256", "kid": shared.kid});
    // distribution 2.8.2 decodes `aud` as a single string, not a list.
    let claims = serde_json::json!({
        "iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now.saturating_add_signed(shared.exp_offset_secs.load(Ordering::SeqCst)), "nbf": now - 10, "iat": now,
        "jti": format!("e2e-{jti}"), "access": access,
    });
    let signing_input =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", path_str(&shared.key)])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run openssl dgst");
    child.stdin.take().expect("stdin").write_all(signing_input.as_bytes()).expect("feed signing input");
    let signature = child.wait_with_output().expect("openssl dgst output").stdout;
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

#[test]
fn base32_matches_rfc4648_vectors() {
    for (input, expected) in [("", ""), ("f", "MY"), ("fo", "MZXQ"), ("foobar", "MZXW6YTBOI")] {
        assert_eq!(base32(input.as_bytes()), expected, "base32({input:?})");
    }
}
