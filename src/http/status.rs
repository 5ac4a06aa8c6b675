//! The one rule for an HTTP status that is not what was asked for: which error it is and whether a
//! retry can help, and how long the origin asked us to wait (`Retry-After`). Every caller that
//! refuses a status (first response, pieces, registry manifests and tokens, proxy CONNECT,
//! back-to-source) builds its error here, so the rule cannot diverge between them.
//!
//! Invariant: pure, a function of the response head only; the error's kind is `Status(code)`.

use std::time::Duration;

use crate::error::{Error, Kind};
use crate::http::codec::ResponseHead;
use crate::limits;

/// Whether trying the same request again can help: the origin was overloaded or failing (5xx) or
/// rate-limited us (429). Any other status is an answer, and asking again gets the same answer.
pub fn retryable(status: u16) -> bool {
    status >= 500 || status == 429
}

/// `Retry-After` in delta-seconds. An HTTP-date (rare on 429/503 from the origins we talk to) reads
/// as absent: the engine's own backoff applies.
pub fn retry_after(head: &ResponseHead) -> Option<Duration> {
    let v = head.header_str("retry-after")?.trim();
    v.parse::<u64>().ok().map(Duration::from_secs)
}

/// The error for a response with `head.status` that the caller cannot use; `message` says who
/// answered what, for people. Retryable per `retryable`, unless the origin asks for a wait longer
/// than `MAX_RETRY_AFTER`: then waiting would outlast any client's patience, and the error says so.
pub fn error(head: &ResponseHead, message: impl Into<String>) -> Error {
    let status = head.status;
    let mut message = message.into();
    let wait = retry_after(head).filter(|_| retryable(status));
    let within_cap = wait.is_none_or(|w| w <= limits::MAX_RETRY_AFTER);
    if !within_cap {
        message.push_str(&format!(" (Retry-After {}s is more than dfget waits)", wait.unwrap_or_default().as_secs()));
    }
    let mut e = Error::origin(retryable(status) && within_cap, message).with_kind(Kind::Status(status));
    e.retry_after = wait.filter(|_| within_cap);
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status,
            reason: String::new(),
            version_minor: 1,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
        }
    }

    fn check(status: u16, headers: &[(&str, &str)], retry: bool, wait_secs: Option<u64>) {
        let e = error(&head(status, headers), "m");
        assert_eq!(e.kind, Kind::Status(status), "{status} {headers:?}");
        assert_eq!(e.retryable, retry, "{status} {headers:?}");
        assert_eq!(e.retry_after, wait_secs.map(Duration::from_secs), "{status} {headers:?}");
    }

    #[test]
    fn one_status_rule_for_every_caller() {
        check(500, &[], true, None);
        check(502, &[], true, None);
        check(503, &[("Retry-After", "2")], true, Some(2));
        check(429, &[], true, None);
        check(429, &[("Retry-After", "1")], true, Some(1));
        check(429, &[("Retry-After", " 0 ")], true, Some(0));
        // A date is not a delay we parse: the engine's backoff applies.
        check(429, &[("Retry-After", "Wed, 21 Oct 2026 07:28:00 GMT")], true, None);
        // Longer than dfget waits: an error now, not a retry in an hour.
        check(429, &[("Retry-After", "3600")], false, None);
        check(404, &[], false, None);
        check(403, &[("Retry-After", "1")], false, None);
        check(401, &[], false, None);
        check(416, &[], false, None);
        check(200, &[], false, None);
    }

    #[test]
    fn a_refused_retry_after_says_why() {
        let e = error(&head(429, &[("Retry-After", "3600")]), "origin returned 429");
        assert!(e.message.contains("Retry-After 3600s"), "{}", e.message);
    }
}
