//! What the user typed, checked before anything is sent or spawned: the URL's scheme and host, a
//! `K: V` header, a `sha256:HEX` digest. Pure: strings in, values or one-line reasons out; used by
//! `dfget -u`, `dfget -i` lists and `dfget prefetch` alike, so the three accept the same inputs.
//!
//! Invariant: anything these accept is also accepted by the daemon's own checks of the request
//! (the daemon re-checks everything: it does not trust the client).

use crate::limits;
use crate::source::oras::reference::Reference;

/// Checks `url` is `http(s)://host...` or a valid `oras://` reference.
pub fn url(url: &str) -> Result<(), String> {
    if url.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("oras://")) {
        return Reference::parse(url).map(|_| ()).map_err(|e| e.message);
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL `{url}`: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("unsupported URL scheme `{}` in `{url}` (http, https, oras)", parsed.scheme()));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("URL has no host: {url}"));
    }
    Ok(())
}

/// `Key: Value` → `(Key, Value)`, both trimmed; the same rules the daemon applies to a header.
pub fn header(h: &str) -> Result<(String, String), String> {
    let (k, v) = h.split_once(':').ok_or_else(|| format!("header `{h}` is not `Key: Value`"))?;
    let (k, v) = (k.trim(), v.trim());
    if !crate::http::codec::valid_header(k, v) {
        return Err(format!(
            "invalid header `{k}` (a token name, no control bytes, under {} bytes)",
            limits::MAX_REQUEST_HEADER_BYTES
        ));
    }
    Ok((k.to_string(), v.to_string()))
}

/// `sha256:<64 hex>`, normalised to lowercase.
pub fn digest(d: &str) -> Result<String, String> {
    crate::digest::Digest::parse_user(d).map(|d| d.to_string()).map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_url(input: &str, ok: bool) {
        assert_eq!(url(input).is_ok(), ok, "{input}: {:?}", url(input));
    }

    #[test]
    fn urls() {
        check_url("http://h/f", true);
        check_url("HTTPS://h:8443/a/b?x=1", true);
        check_url("oras://reg.example:5000/a/b:v1", true);
        check_url("ORAS://localhost/x@sha256:0000000000000000000000000000000000000000000000000000000000000000", true);
        check_url("ftp://x/y", false);
        check_url("file:///etc/passwd", false);
        check_url("http://", false);
        check_url("not a url", false);
        check_url("oras://", false);
        check_url("oras://reg.example/UPPER", false);
    }

    #[test]
    fn headers() {
        assert_eq!(header("X-A:  b c "), Ok(("X-A".into(), "b c".into())));
        assert_eq!(header("Cookie: a=b: c"), Ok(("Cookie".into(), "a=b: c".into())));
        assert!(header("no colon").is_err());
        assert!(header("bad name: v").is_err());
        assert!(header("X: a\u{7}b").is_err());
    }

    #[test]
    fn digests() {
        let hex = "AB".repeat(32);
        assert_eq!(digest(&format!("sha256:{hex}")), Ok(format!("sha256:{}", hex.to_lowercase())));
        assert!(digest("md5:abc").is_err());
        assert!(digest("sha256:abc").is_err());
    }
}
