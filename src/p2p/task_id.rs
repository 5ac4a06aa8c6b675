//! The task id Dragonfly's Rust dfdaemon computes for a URL download (dragonfly-client-util's
//! `IDGenerator::task_id`, URL-based): `hex(sha256(filtered URL + tag + application + "STANDARD"))`.
//! Peers exchange pieces by this id, so it must match theirs byte for byte; the local cache keeps
//! its Go-style id (`storage::task_id`) and the daemon maps between the two.
//!
//! Invariant: the filtered URL is the `url` crate's serialization after dropping the filtered
//! query keys (re-encoded as `application/x-www-form-urlencoded`), without the trailing `/` of an
//! empty path — exactly the Rust client's steps; the digest is not part of this id.

use sha2::{Digest, Sha256};

/// The URL as the Rust client hashes it.
pub fn filtered_url(url: &url::Url, filter: &[String]) -> String {
    let kept: Vec<(String, String)> = url
        .query_pairs()
        .filter(|(k, _)| !filter.iter().any(|f| f == k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut u = url.clone();
    if kept.is_empty() {
        u.set_query(None);
    } else {
        u.query_pairs_mut().clear().extend_pairs(kept);
    }
    let s = u.to_string();
    if s.ends_with('/') && u.path() == "/" {
        s.trim_end_matches('/').to_string()
    } else {
        s
    }
}

/// Dragonfly's Rust task id for a standard (URL) task with no fixed piece length.
pub fn cluster_task_id(url: &url::Url, filter: &[String], tag: &str, application: &str) -> String {
    let mut h = Sha256::new();
    h.update(filtered_url(url, filter).as_bytes());
    h.update(tag.as_bytes());
    h.update(application.as_bytes());
    // `TaskType::Standard.as_str_name()`.
    h.update(b"STANDARD");
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(url: &str, filter: &[&str], want: &str) {
        let filter: Vec<String> = filter.iter().map(|s| s.to_string()).collect();
        assert_eq!(filtered_url(&url::Url::parse(url).unwrap(), &filter), want, "{url} {filter:?}");
    }

    #[test]
    fn urls_are_filtered_and_normalised_like_the_rust_client() {
        check("http://h/f?b=2&a=1", &[], "http://h/f?b=2&a=1");
        check("http://h/f?Expires=1&a=1&Signature=s", &["Expires", "Signature"], "http://h/f?a=1");
        check("http://h/f?Expires=1", &["Expires"], "http://h/f");
        check("http://h/", &[], "http://h");
        check("http://h", &[], "http://h");
        check("http://H:80/a/", &[], "http://h/a/");
        // Re-encoded as form data: a space becomes `+`, as in the Rust client.
        check("http://h/f?a=x%20y&z=1", &["z"], "http://h/f?a=x+y");
    }

    #[test]
    fn id_is_sha256_of_url_tag_application_and_type() {
        let url = url::Url::parse("http://127.0.0.1:8080/blob").unwrap();
        let mut h = Sha256::new();
        h.update(b"http://127.0.0.1:8080/blobtagappSTANDARD");
        assert_eq!(cluster_task_id(&url, &[], "tag", "app"), hex::encode(h.finalize()));
        assert_ne!(cluster_task_id(&url, &[], "", ""), cluster_task_id(&url, &[], "t", ""));
        assert_eq!(cluster_task_id(&url, &[], "", "").len(), 64);
    }
}
