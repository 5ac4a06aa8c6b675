//! Parses `oras://[registry[:port]/]repo[:tag|@sha256:hex]` into a [`Reference`], and holds the
//! error type shared by the pure ORAS modules. Pure: no IO, never panics on any input.
//!
//! Invariant: a `Reference` that exists is valid — `registry` is a lowercase `host[:port]` (DNS
//! name, IPv4, or `[IPv6]`), `repository` matches the distribution-spec name grammar (lowercase
//! components, at most 255 bytes), `tag` matches `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, and `digest`
//! is `sha256:` + 64 lowercase hex. So the IO layer may splice them into request paths unescaped.
//! Registry detection follows go-containerregistry (what Apptainer uses): the first path component
//! is a registry iff it is `localhost` or contains `.` or `:`; otherwise Docker Hub, where a
//! single-component repository gets the `library/` prefix.

use crate::digest::Digest;
use std::fmt;
use std::net::IpAddr;

/// Docker Hub's API host; `docker.io` and `index.docker.io` in a reference are rewritten to it.
pub const DOCKER_HUB_REGISTRY: &str = "registry-1.docker.io";
/// Hosts that users write for Docker Hub; all mean [`DOCKER_HUB_REGISTRY`].
pub const DOCKER_HUB_ALIASES: [&str; 3] = ["docker.io", "index.docker.io", DOCKER_HUB_REGISTRY];
const SCHEME: &str = "oras://";
/// A URL longer than this is not a reference anyone typed; the bound keeps parsing cheap.
const MAX_URL_BYTES: usize = 2048;
/// distribution/reference's `NameTotalLengthMax`; registries reject longer names anyway.
const MAX_REPOSITORY_BYTES: usize = 255;
/// DNS limit for a host name (RFC 1035).
const MAX_HOST_BYTES: usize = 253;
const MAX_TAG_BYTES: usize = 128;

/// What went wrong, so callers decide (retry, re-auth, give up) from data, not message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrasErrorKind {
    BadReference,
    BadManifest,
    NoSifLayer,
    NoPlatform,
    DigestMismatch,
    BadChallenge,
    BadToken,
    BadCredentials,
    Unauthorized,
    NotFound,
}

/// An ORAS failure: a kind for code and a message for humans. Messages never hold secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrasError {
    pub kind: OrasErrorKind,
    pub message: String,
}

impl OrasError {
    pub fn new(kind: OrasErrorKind, message: impl Into<String>) -> OrasError {
        OrasError { kind, message: message.into() }
    }
}

impl fmt::Display for OrasError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for OrasError {}

fn bad(message: String) -> OrasError {
    OrasError::new(OrasErrorKind::BadReference, message)
}

/// A parsed `oras://` reference; see the module doc for what its fields guarantee.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// `host[:port]`, lowercase; IPv6 hosts keep their brackets (`[::1]:5000`).
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    /// Wins over `tag` when both are given.
    pub digest: Option<Digest>,
}

impl Reference {
    /// Parses `oras://[registry[:port]/]repo[:tag][@sha256:hex]`.
    pub fn parse(url: &str) -> Result<Reference, OrasError> {
        if url.len() > MAX_URL_BYTES {
            return Err(bad(format!("oras reference is {} bytes, limit {MAX_URL_BYTES}", url.len())));
        }
        let rest = strip_scheme(url)
            .ok_or_else(|| bad(format!("{url:?} is not an oras reference: it must start with {SCHEME}")))?;
        if rest.is_empty() {
            return Err(bad(format!("{url:?} names no repository")));
        }
        let (name_and_tag, digest) = match rest.split_once('@') {
            Some((before, after)) => (before, Some(parse_digest(after)?)),
            None => (rest, None),
        };
        let (name, tag) = split_tag(name_and_tag)?;
        let (registry, repository) = split_registry(name)?;
        Ok(Reference { registry, repository, tag, digest })
    }

    /// What goes after `/manifests/`: the digest if any, else the tag, else `latest`.
    pub fn reference(&self) -> &str {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.as_str(),
            (None, Some(tag)) => tag,
            (None, None) => "latest",
        }
    }

    /// The host without port or IPv6 brackets.
    pub fn host(&self) -> &str {
        split_host_port(&self.registry).0
    }

    /// True for `localhost`, `127.0.0.0/8` and `::1` — the registries that may fall back to
    /// plain http when the TLS handshake fails.
    pub fn is_loopback(&self) -> bool {
        let host = self.host();
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    /// `/v2/<repo>/manifests/<reference>`; safe to send unescaped (see the module invariant).
    pub fn manifest_path(&self) -> String {
        format!("/v2/{}/manifests/{}", self.repository, self.reference())
    }

    /// `/v2/<repo>/manifests/<digest>` for a child of an index.
    pub fn manifest_path_for(&self, digest: &Digest) -> String {
        format!("/v2/{}/manifests/{}", self.repository, digest)
    }

    /// `/v2/<repo>/blobs/<digest>`; a `Digest` is safe to send unescaped.
    pub fn blob_path(&self, digest: &Digest) -> String {
        format!("/v2/{}/blobs/{}", self.repository, digest)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(digest) = &self.digest {
            write!(f, "@{digest}")?;
        }
        Ok(())
    }
}

fn strip_scheme(url: &str) -> Option<&str> {
    let head = url.get(..SCHEME.len())?;
    head.eq_ignore_ascii_case(SCHEME).then(|| &url[SCHEME.len()..])
}

/// A registry's digest, strictly (`Digest::parse_strict`), as a reference error.
pub fn parse_digest(text: &str) -> Result<Digest, OrasError> {
    Digest::parse_strict(text).map_err(bad)
}

/// The tag is after the last `:` of the last path component (a `:` earlier is a port).
fn split_tag(name_and_tag: &str) -> Result<(&str, Option<String>), OrasError> {
    let last_slash = name_and_tag.rfind('/').map_or(0, |i| i + 1);
    let Some(colon) = name_and_tag[last_slash..].rfind(':') else {
        return Ok((name_and_tag, None));
    };
    let colon = last_slash + colon;
    let tag = &name_and_tag[colon + 1..];
    check_tag(tag)?;
    Ok((&name_and_tag[..colon], Some(tag.to_owned())))
}

fn check_tag(tag: &str) -> Result<(), OrasError> {
    let bytes = tag.as_bytes();
    let Some(&first) = bytes.first() else {
        return Err(bad("tag is empty after ':'".to_owned()));
    };
    if bytes.len() > MAX_TAG_BYTES {
        return Err(bad(format!("tag is {} bytes, limit {MAX_TAG_BYTES}", bytes.len())));
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    if !word(first) || !bytes.iter().all(|&b| word(b) || b == b'.' || b == b'-') {
        return Err(bad(format!(
            "tag {tag:?} is invalid: allowed are A-Z a-z 0-9 _ . - and it must not start with . or -"
        )));
    }
    Ok(())
}

fn split_registry(name: &str) -> Result<(String, String), OrasError> {
    let (registry, repository) = match name.split_once('/') {
        Some((first, rest)) if first == "localhost" || first.contains(['.', ':']) => {
            (check_registry(first)?, rest.to_owned())
        }
        _ => (DOCKER_HUB_REGISTRY.to_owned(), name.to_owned()),
    };
    let repository = if DOCKER_HUB_ALIASES.contains(&registry.as_str()) && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository
    };
    let registry =
        if DOCKER_HUB_ALIASES.contains(&registry.as_str()) { DOCKER_HUB_REGISTRY.to_owned() } else { registry };
    check_repository(&repository)?;
    Ok((registry, repository))
}

/// Splits `host:port` / `[v6]:port`; the host comes back without brackets.
fn split_host_port(registry: &str) -> (&str, Option<&str>) {
    if let Some(rest) = registry.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (rest, None),
        };
    }
    match registry.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (registry, None),
    }
}

fn check_registry(registry: &str) -> Result<String, OrasError> {
    let registry = registry.to_ascii_lowercase();
    let (host, port) = split_host_port(&registry);
    if let Some(port) = port {
        let ok = !port.is_empty() && port.len() <= 5 && port.bytes().all(|b| b.is_ascii_digit());
        if !ok || !port.parse::<u16>().is_ok_and(|p| p != 0) {
            return Err(bad(format!("registry {registry:?} has an invalid port {port:?} (1-65535)")));
        }
    }
    if registry.starts_with('[') {
        let v6 = registry.contains("]") && host.parse::<std::net::Ipv6Addr>().is_ok();
        if !v6 || !(port.is_some() || registry.ends_with(']')) {
            return Err(bad(format!("registry {registry:?} is not a valid [IPv6]:port")));
        }
        return Ok(registry);
    }
    check_hostname(host).map_err(|why| bad(format!("registry {registry:?} is invalid: {why}")))?;
    Ok(registry)
}

/// RFC 1123 host names (which also admits dotted IPv4).
fn check_hostname(host: &str) -> Result<(), &'static str> {
    if host.is_empty() || host.len() > MAX_HOST_BYTES {
        return Err("host name is empty or longer than 253 bytes");
    }
    for label in host.split('.') {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
            && b[0] != b'-'
            && b[b.len() - 1] != b'-';
        if !ok {
            return Err("host labels are 1-63 of a-z 0-9 - and do not start or end with -");
        }
    }
    Ok(())
}

/// Distribution spec: components `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*` joined by `/`.
fn check_repository(repository: &str) -> Result<(), OrasError> {
    if repository.len() > MAX_REPOSITORY_BYTES {
        return Err(bad(format!("repository is {} bytes, limit {MAX_REPOSITORY_BYTES}", repository.len())));
    }
    for component in repository.split('/') {
        check_component(component).map_err(|why| bad(format!("repository {repository:?} is invalid: {why}")))?;
    }
    Ok(())
}

fn check_component(component: &str) -> Result<(), &'static str> {
    if component.is_empty() {
        return Err("it has an empty path component");
    }
    if component.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err("repository names must be lowercase");
    }
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = component.as_bytes();
    if !bytes.iter().all(|&b| alnum(b) || matches!(b, b'.' | b'_' | b'-')) {
        return Err("allowed characters are a-z 0-9 . _ - and /");
    }
    if !alnum(bytes[0]) || !alnum(bytes[bytes.len() - 1]) {
        return Err("each component must start and end with a-z or 0-9");
    }
    // Between alphanumeric runs: exactly one '.', one or two '_', or any number of '-'.
    let mut separator_start = None;
    for (i, &b) in bytes.iter().enumerate() {
        if alnum(b) {
            if let Some(start) = separator_start.take() {
                let sep = &bytes[start..i];
                if !matches!(sep, b"." | b"_" | b"__") && !sep.iter().all(|&s| s == b'-') {
                    return Err("separators are '.', '_', '__' or dashes");
                }
            }
        } else {
            separator_start.get_or_insert(i);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (registry, repository, tag, digest, reference())
    type Parts<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>, &'a str);

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    /// `expected`: Ok((registry, repository, tag, digest, reference())) or Err(substring of message).
    fn check(input: &str, expected: Result<Parts, &str>) {
        match (Reference::parse(input), expected) {
            (Ok(r), Ok((registry, repo, tag, digest, reference))) => {
                assert_eq!(r.registry, registry, "{input}");
                assert_eq!(r.repository, repo, "{input}");
                assert_eq!(r.tag.as_deref(), tag, "{input}");
                assert_eq!(r.digest.as_ref().map(Digest::as_str), digest, "{input}");
                assert_eq!(r.reference(), reference, "{input}");
                // Display round-trips to the same reference.
                assert_eq!(Reference::parse(&r.to_string()).as_ref(), Ok(&r), "{input}");
            }
            (Err(e), Err(want)) => {
                assert_eq!(e.kind, OrasErrorKind::BadReference, "{input}");
                assert!(e.message.contains(want), "{input}: {:?} lacks {want:?}", e.message);
            }
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn valid_references() {
        let hub = DOCKER_HUB_REGISTRY;
        let cases: &[(&str, Parts)] = &[
            ("oras://localhost:5000/test/img:v1", ("localhost:5000", "test/img", Some("v1"), None, "v1")),
            ("oras://localhost/img", ("localhost", "img", None, None, "latest")),
            ("oras://127.0.0.1:5000/a/b/c:latest", ("127.0.0.1:5000", "a/b/c", Some("latest"), None, "latest")),
            ("oras://[::1]:5000/test/img:v1", ("[::1]:5000", "test/img", Some("v1"), None, "v1")),
            ("oras://[::1]/test/img", ("[::1]", "test/img", None, None, "latest")),
            ("oras://ghcr.io/owner/img:1.0_rc-2", ("ghcr.io", "owner/img", Some("1.0_rc-2"), None, "1.0_rc-2")),
            ("oras://Registry.Example.COM/x", ("registry.example.com", "x", None, None, "latest")),
            ("oras://reg.example:443/x", ("reg.example:443", "x", None, None, "latest")),
            ("ORAS://reg.example/x", ("reg.example", "x", None, None, "latest")),
            ("oras://alpine", (hub, "library/alpine", None, None, "latest")),
            ("oras://alpine:3.19", (hub, "library/alpine", Some("3.19"), None, "3.19")),
            ("oras://user/img:v1", (hub, "user/img", Some("v1"), None, "v1")),
            ("oras://docker.io/alpine", (hub, "library/alpine", None, None, "latest")),
            ("oras://index.docker.io/user/img", (hub, "user/img", None, None, "latest")),
            ("oras://a.b/x__y.z---w_v", ("a.b", "x__y.z---w_v", None, None, "latest")),
            ("oras://a.b/x:_T", ("a.b", "x", Some("_T"), None, "_T")),
        ];
        for (input, want) in cases {
            check(input, Ok(*want));
        }
        let with_digest = format!("oras://localhost:5000/test/img@{D}");
        check(&with_digest, Ok(("localhost:5000", "test/img", None, Some(D), D)));
        let tag_and_digest = format!("oras://ghcr.io/o/img:v1@{D}");
        check(&tag_and_digest, Ok(("ghcr.io", "o/img", Some("v1"), Some(D), D)));
        let hub_digest = format!("oras://alpine@{D}");
        check(&hub_digest, Ok((hub, "library/alpine", None, Some(D), D)));
        let long_tag = format!("oras://a.b/x:{}", "t".repeat(128));
        check(&long_tag, Ok(("a.b", "x", Some(&long_tag[13..]), None, &long_tag[13..])));
    }

    #[test]
    fn invalid_references() {
        let cases: &[(&str, &str)] = &[
            ("", "must start with oras://"),
            ("oras://", "names no repository"),
            ("localhost:5000/test/img", "must start with oras://"),
            ("https://localhost/test/img", "must start with oras://"),
            ("oras:/localhost/x", "must start with oras://"),
            ("oras://localhost:5000/Test/img", "must be lowercase"),
            ("oras://MyImage", "must be lowercase"),
            ("oras://localhost:5000/test/img@sha256:abc", "64 hex digits, has 3"),
            ("oras://localhost:5000/test/img@sha512:abc", "must start with \"sha256:\""),
            (
                "oras://localhost:5000/x@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                "lowercase hex",
            ),
            ("oras://localhost:5000/x@", "must start with \"sha256:\""),
            ("oras://localhost:5000/x:", "tag is empty"),
            ("oras://localhost:5000/x:-v1", "tag \"-v1\" is invalid"),
            ("oras://localhost:5000/x:v/1", "invalid"),
            ("oras://localhost:99999/x", "invalid port"),
            ("oras://localhost:0/x", "invalid port"),
            ("oras://localhost:/x", "invalid port"),
            ("oras://localhost:5x/x", "invalid port"),
            ("oras://[::1/x", "not a valid [IPv6]:port"),
            ("oras://[zz]:5000/x", "not a valid [IPv6]:port"),
            ("oras://[::1]x/x", "not a valid [IPv6]:port"),
            ("oras://bad_host.example/x", "host labels"),
            ("oras://-a.example/x", "host labels"),
            ("oras://a..b/x", "host labels"),
            ("oras://localhost/", "empty path component"),
            ("oras://localhost//x", "empty path component"),
            ("oras://localhost/x/", "empty path component"),
            ("oras://localhost/x.", "start and end"),
            ("oras://localhost/_x", "start and end"),
            ("oras://localhost/a..b", "separators"),
            ("oras://localhost/a___b", "separators"),
            ("oras://localhost/a._b", "separators"),
            ("oras://localhost/a b", "allowed characters"),
            ("oras://localhost/a?x=1", "allowed characters"),
            ("oras://localhost/é", "allowed characters"),
            ("oras://a.b/x@sha256:@sha256:", "64 hex digits"),
        ];
        for (input, want) in cases {
            check(input, Err(want));
        }
        check(&format!("oras://a.b/x:{}", "t".repeat(129)), Err("limit 128"));
        check(&format!("oras://a.b/{}", "x/".repeat(129).trim_end_matches('/')), Err("limit 255"));
        check(&format!("oras://a.b/{}", "x".repeat(3000)), Err("limit 2048"));
    }

    #[test]
    fn loopback_and_paths() {
        let check_loopback = |input: &str, want: bool| {
            let r = Reference::parse(input).unwrap();
            assert_eq!(r.is_loopback(), want, "{input}");
        };
        check_loopback("oras://localhost:5000/x", true);
        check_loopback("oras://localhost/x", true);
        check_loopback("oras://127.0.0.1:5000/x", true);
        check_loopback("oras://127.9.8.7/x", true);
        check_loopback("oras://[::1]:5000/x", true);
        check_loopback("oras://[::2]:5000/x", false);
        check_loopback("oras://128.0.0.1/x", false);
        check_loopback("oras://localhost.example.com/x", false);
        check_loopback("oras://x", false);

        let r = Reference::parse("oras://[::1]:5000/test/img:v1").unwrap();
        assert_eq!(r.host(), "::1");
        assert_eq!(r.manifest_path(), "/v2/test/img/manifests/v1");
        let d = Digest::parse_strict(D).unwrap();
        assert_eq!(r.blob_path(&d), format!("/v2/test/img/blobs/{D}"));
        assert_eq!(r.manifest_path_for(&d), format!("/v2/test/img/manifests/{D}"));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for input in [
            "oras://:",
            "oras://@",
            "oras://[",
            "oras://]",
            "oras://[]:1/x",
            "oras://:/x",
            "oras://a:b:c/x",
            "oras://é.x/y",
        ] {
            assert!(Reference::parse(input).is_err(), "{input}");
        }
    }
}
