//! URLs as people may see them: the userinfo's password (or a bare token in the user part) is
//! replaced by `***`, so a URL can go into a log line, an error, a task listing or metadata.
//!
//! Invariant: only the fetch path (`Fetch::url`, the request it writes) ever holds the secret;
//! everything shown or stored goes through [`redact_url`] or [`Shown`]. Pure and table-tested.

use std::borrow::Cow;
use std::fmt;

/// `scheme://user:secret@host/p` → `scheme://user:***@host/p`; `scheme://token@host/p` →
/// `scheme://***@host/p`; anything without userinfo is returned unchanged (borrowed).
pub fn redact_url(url: &str) -> Cow<'_, str> {
    let Some(scheme_end) = url.find("://") else { return Cow::Borrowed(url) };
    let authority_start = scheme_end + 3;
    let rest = &url[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    // The last '@' ends the userinfo: passwords may hold '@' unescaped in sloppy URLs.
    let Some(at) = rest[..authority_len].rfind('@') else { return Cow::Borrowed(url) };
    let userinfo = &rest[..at];
    let shown = match userinfo.split_once(':') {
        Some((user, _)) if !user.is_empty() => format!("{user}:***"),
        _ => "***".to_string(),
    };
    Cow::Owned(format!("{}{shown}{}", &url[..authority_start], &rest[at..]))
}

/// Displays a parsed URL redacted: `format!("{}", Shown(&url))` in messages instead of `{url}`.
pub struct Shown<'a>(pub &'a url::Url);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(self.0.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(redact_url(input), expected, "redact_url({input:?})");
    }

    #[test]
    fn passwords_and_tokens_are_hidden_and_the_rest_kept() {
        check("http://u:p@h/x", "http://u:***@h/x");
        check("https://user:s3cr%40t@host:8080/a/b?q=1#f", "https://user:***@host:8080/a/b?q=1#f");
        check("http://token@host/x", "http://***@host/x");
        check("http://:pw@host/", "http://***@host/");
        check("http://u:p@ss@host/x", "http://u:***@host/x");
        check("http://u:p@h", "http://u:***@h");
        check("http://h/x@y", "http://h/x@y");
        check("http://h/x?a=b@c", "http://h/x?a=b@c");
        check("http://h:80/", "http://h:80/");
        check("oras://reg:5000/repo:tag", "oras://reg:5000/repo:tag");
        check("not a url @ all", "not a url @ all");
        check("", "");
    }

    #[test]
    fn shown_redacts_a_parsed_url() {
        let u = url::Url::parse("http://alice:pw@127.0.0.1:81/f").unwrap();
        assert_eq!(Shown(&u).to_string(), "http://alice:***@127.0.0.1:81/f");
    }
}
