//! Task identity: Dragonfly's task id is `hex(sha256(filtered URL + digest + tag + application))`,
//! with empty parts skipped. Two requests with the same id share one download and one cache entry.
//!
//! Invariant: the id depends only on the URL with the `--filter` query keys removed and the three
//! optional parts; query order and other keys are kept byte-for-byte.

use sha2::{Digest, Sha256};

/// Removes the query parameters named in `filter` (Dragonfly's `--filter 'k1&k2'`), keeping the
/// others in their original order. The fragment is kept as is.
pub fn filter_url(url: &str, filter: &[String]) -> String {
    if filter.is_empty() {
        return url.to_string();
    }
    let (before_fragment, fragment) = match url.find('#') {
        Some(i) => (&url[..i], Some(&url[i..])),
        None => (url, None),
    };
    let Some(q) = before_fragment.find('?') else {
        return url.to_string();
    };
    let (base, query) = (&before_fragment[..q], &before_fragment[q + 1..]);
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| {
            let key = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && !filter.iter().any(|f| f == key)
        })
        .collect();
    let mut out = base.to_string();
    if !kept.is_empty() {
        out.push('?');
        out.push_str(&kept.join("&"));
    }
    if let Some(f) = fragment {
        out.push_str(f);
    }
    out
}

/// Parses Dragonfly's `--filter` syntax: keys separated by `&`.
pub fn parse_filter(spec: &str) -> Vec<String> {
    spec.split('&').map(str::trim).filter(|k| !k.is_empty()).map(String::from).collect()
}

pub fn task_id(url: &str, filter: &[String], digest: &str, tag: &str, application: &str) -> String {
    let mut h = Sha256::new();
    h.update(filter_url(url, filter).as_bytes());
    for part in [digest, tag, application] {
        if !part.is_empty() {
            h.update(part.as_bytes());
        }
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_filter(url: &str, filter: &str, expected: &str) {
        assert_eq!(filter_url(url, &parse_filter(filter)), expected, "url={url} filter={filter}");
    }

    #[test]
    fn filter_removes_only_named_keys() {
        check_filter("http://h/f", "", "http://h/f");
        check_filter("http://h/f?a=1&b=2", "", "http://h/f?a=1&b=2");
        check_filter("http://h/f?a=1&b=2", "a", "http://h/f?b=2");
        check_filter("http://h/f?a=1&b=2", "a&b", "http://h/f");
        check_filter("http://h/f?b=2&a=1&c", "a", "http://h/f?b=2&c");
        check_filter("http://h/f?X-Amz-Date=1&k=v#frag", "X-Amz-Date", "http://h/f?k=v#frag");
        check_filter("http://h/f?ab=1", "a", "http://h/f?ab=1");
    }

    fn sha(s: &str) -> String {
        hex::encode(Sha256::digest(s.as_bytes()))
    }

    #[test]
    fn task_id_concatenates_non_empty_parts() {
        let cases = [
            ("http://h/f", "", "", "", "", sha("http://h/f")),
            ("http://h/f?t=1", "t", "", "", "", sha("http://h/f")),
            ("http://h/f", "", "sha256:ab", "", "", sha("http://h/fsha256:ab")),
            ("http://h/f", "", "", "tag", "app", sha("http://h/ftagapp")),
            ("http://h/f", "", "d", "t", "a", sha("http://h/fdta")),
        ];
        for (url, filter, digest, tag, app, want) in cases {
            assert_eq!(task_id(url, &parse_filter(filter), digest, tag, app), want);
        }
        assert_eq!(task_id("http://h/f", &[], "", "", "").len(), 64);
    }
}
