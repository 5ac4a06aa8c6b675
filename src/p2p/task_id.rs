//! The task id Dragonfly's Rust dfdaemon (1.5.x) computes for a URL download (dragonfly-client-util's
//! `IDGenerator::task_id`, URL-based): `hex(sha256(canonical URL + tag + application + "STANDARD"))`.
//! Peers exchange pieces by this id, so it must match theirs byte for byte; the local cache keeps
//! its Go-style id (`storage::task_id`) and the daemon maps between the two.
//!
//! Invariant: with no filtered query keys the URL is hashed exactly as the client sent it. With
//! some, it is canonicalised as the Rust client and the Go scheduler do it: the `url` crate's
//! serialization, the query split on `&` (segments holding `;` dropped), the filtered keys removed,
//! the rest sorted by key (values of one key keep their order) and re-escaped as Go's
//! `url.QueryEscape`; a URL written with an empty path keeps it empty. The digest is not part of
//! this id.

use sha2::{Digest, Sha256};

/// Go's `url.QueryEscape`: unreserved bytes as they are, a space as `+`, the rest `%XX`.
fn query_escape(s: &str, out: &mut String) {
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
}

/// True when the URL as written has no path (`http://h`, `http://h?q`): the authority runs to the
/// query, the fragment or the end. The `url` crate would serialize it with a `/` path.
fn written_without_path(raw: &str) -> bool {
    let Some((_, rest)) = raw.split_once("://") else { return false };
    let authority = rest.split(['?', '#']).next().unwrap_or("");
    !authority.contains('/')
}

/// The URL as the Rust client hashes it; `Err` when `filter` is not empty and the URL does not parse.
pub fn canonical_url(raw: &str, filter: &[String]) -> Result<String, url::ParseError> {
    if filter.is_empty() {
        return Ok(raw.to_string());
    }
    let mut url = url::Url::parse(raw)?;
    let mut kept: Vec<(String, String)> = url
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|segment| !segment.contains(';'))
        .flat_map(|segment| url::form_urlencoded::parse(segment.as_bytes()))
        .filter(|(k, _)| !filter.iter().any(|f| f == k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    kept.sort_by(|a, b| a.0.cmp(&b.0));
    if kept.is_empty() {
        url.set_query(None);
    } else {
        let mut q = String::new();
        for (i, (k, v)) in kept.iter().enumerate() {
            if i > 0 {
                q.push('&');
            }
            query_escape(k, &mut q);
            q.push('=');
            query_escape(v, &mut q);
        }
        url.set_query(Some(&q));
    }
    if written_without_path(raw) {
        return Ok(format!("{}{}", &url[..url::Position::BeforePath], &url[url::Position::AfterPath..]));
    }
    Ok(url.to_string())
}

/// Dragonfly's Rust task id for a standard (URL) task with no fixed piece length; `None` when the
/// URL cannot be canonicalised (the task then stays out of the cluster).
pub fn cluster_task_id(raw_url: &str, filter: &[String], tag: &str, application: &str) -> Option<String> {
    let mut h = Sha256::new();
    h.update(canonical_url(raw_url, filter).ok()?.as_bytes());
    h.update(tag.as_bytes());
    h.update(application.as_bytes());
    // `TaskType::Standard.as_str_name()`.
    h.update(b"STANDARD");
    Some(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, filter: &[&str], want: &str) {
        let filter: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
        assert_eq!(canonical_url(url, &filter).unwrap(), want, "{url} {filter:?}");
    }

    #[test]
    fn without_a_filter_the_url_is_hashed_as_sent() {
        for raw in ["http://h/f?b=2&a=1", "http://H:80/a/", "http://h", "http://h/", "http://h/f?a=x%20y"] {
            check(raw, &[], raw);
        }
    }

    #[test]
    fn filtered_urls_are_sorted_and_escaped_like_the_rust_client() {
        check("http://h/f?z=9&b=2&a=1", &["z"], "http://h/f?a=1&b=2");
        // Values of one key keep their order; the sort is by key only.
        check("http://h/f?b=2&a=1&b=1", &["c"], "http://h/f?a=1&b=2&b=1");
        check("http://h/f?Expires=1&a=1&Signature=s", &["Expires", "Signature"], "http://h/f?a=1");
        check("http://h/f?Expires=1", &["Expires"], "http://h/f");
        // Go's QueryEscape: space as `+`, `*` escaped, `~` kept.
        check("http://h/f?a=x%20y*~&z=1", &["z"], "http://h/f?a=x+y%2A~");
        // A segment holding `;` is dropped (Go's url.ParseQuery refuses it).
        check("http://h/f?a=1;b=2&c=3", &["z"], "http://h/f?c=3");
        // The url crate's normalisation applies once the URL is parsed.
        check("http://H:80/a/?z=1", &["z"], "http://h/a/");
    }

    #[test]
    fn an_empty_path_stays_empty_once_filtered() {
        check("https://example.com?foo=foo", &["foo"], "https://example.com");
        check("https://example.com?foo=foo&bar=bar", &["foo"], "https://example.com?bar=bar");
        check("https://example.com?foo=foo#size", &["foo"], "https://example.com#size");
        check("https://example.com/?foo=foo", &["foo"], "https://example.com/");
    }

    #[test]
    fn id_is_sha256_of_url_tag_application_and_type() {
        let url = "http://127.0.0.1:8080/blob";
        let mut h = Sha256::new();
        h.update(b"http://127.0.0.1:8080/blobtagappSTANDARD");
        assert_eq!(cluster_task_id(url, &[], "tag", "app").unwrap(), hex::encode(h.finalize()));
        assert_ne!(cluster_task_id(url, &[], "", ""), cluster_task_id(url, &[], "t", ""));
        assert_eq!(cluster_task_id(url, &[], "", "").unwrap().len(), 64);
        assert_eq!(cluster_task_id("not a url", &["a".into()], "", ""), None);
        // Ids dragonfly-client-util 1.5.10 publishes for these inputs (its own test expectations).
        let known = [
            ("foo", "bar", "06408fbf247ddaca478f8cb9565fe5591c28efd0994b8fea80a6a87d3203c5ca"),
            ("foo", "", "3c3f230ef9f191dd2821510346a7bc138e4894bee9aee184ba250a3040701d2a"),
        ];
        for (tag, app, id) in known {
            assert_eq!(cluster_task_id("https://example.com", &[], tag, app).unwrap(), id, "{tag} {app}");
        }
    }
}
