//! Who may have what: private content and cache management.
//!
//! A task fetched with credentials (Authorization, Cookie and the like, URL userinfo, registry
//! credentials) is *private*. Another request for it is served from the cache only after the
//! origin accepted that request's own credentials: a one-byte ranged GET with them (cheap, and
//! its `Content-Range` total and validator must match the cached content). `oras://` requests
//! resolve their manifest with the requester's credentials before they ever find the task, which
//! is the same proof. Public content keeps its cache hit with no origin request.
//!
//! Cache management (`tasks rm`, `gc`) is for root and the daemon's own user; another user may
//! remove a task only when it alone ever asked for it (since the daemon started). Listings are
//! filtered the same way: a user sees only the tasks it asked for (`sees`), and a task it did not
//! ask for is "no such task" to it, so nobody learns what the others download.
//!
//! Invariant: the decisions are pure functions of values (`carries_credentials`, `judge`, `sees`,
//! `may_remove`), table-tested; the IO around them is one request.

use crate::daemon::caller::Caller;
use crate::daemon::judge::strong_validator;
use crate::daemon::requesters::Noted;
use crate::daemon::task::Task;
use crate::error::{Error, Kind, Result};
use crate::http::redact::Shown;
use crate::source::Fetch;

/// Request headers that carry a credential. Beyond the standard three, the token headers of
/// common artifact servers (GitLab, Artifactory, API gateways, S3 session tokens).
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "cookie",
    "proxy-authorization",
    "private-token",
    "job-token",
    "x-api-key",
    "x-auth-token",
    "x-jfrog-art-api",
    "x-amz-security-token",
];

/// Whether a request's content must be treated as private: it carries credentials.
pub fn carries_credentials(url: &url::Url, headers: &[(String, String)]) -> bool {
    !url.username().is_empty() || url.password().is_some() || headers_carry_credentials(headers)
}

pub fn headers_carry_credentials(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(k, _)| CREDENTIAL_HEADERS.iter().any(|h| k.eq_ignore_ascii_case(h)))
}

/// What the origin said to a revalidation request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    /// The complete length: `Content-Range`'s total for a 206, `Content-Length` for a 200.
    pub total_len: Option<u64>,
    /// Strong ETag, else Last-Modified.
    pub validator: Option<String>,
}

/// Whether `answer` shows the requester may read the cached content (`cached_len` bytes when
/// known, fetched under `cached_validator`). `shown` is the redacted URL for messages.
pub fn judge(answer: &Answer, cached_len: Option<u64>, cached_validator: Option<&str>, shown: &str) -> Result<()> {
    match answer.status {
        200 | 206 => {}
        s @ (401 | 403 | 407) => {
            return Err(Error::origin(
                false,
                format!(
                    "{shown}: the origin refused this request's credentials ({s}); cached private content is \
                     given only to requesters the origin accepts"
                ),
            )
            .with_kind(Kind::Status(s)))
        }
        s => {
            return Err(Error::origin(
                s >= 500,
                format!("{shown}: checking access to cached private content: the origin answered {s}"),
            )
            .with_kind(Kind::Status(s)))
        }
    }
    let other_len = matches!((answer.total_len, cached_len), (Some(a), Some(b)) if a != b);
    let other_version = matches!((answer.validator.as_deref(), cached_validator), (Some(a), Some(b)) if a != b);
    if other_len || other_version {
        // Same URL, other content for these credentials (or it changed): not the cached file.
        return Err(Error::origin(
            true,
            format!("{shown}: the origin serves other content to these credentials than the cached copy; try again"),
        ));
    }
    Ok(())
}

/// Asks the origin, with the requester's own `fetch` (URL, headers), for the first byte of the
/// cached private `task`, and judges the answer.
/// A task still waiting for its first response has no length yet: then only the status counts.
pub async fn revalidate(task: &Task, fetch: &Fetch) -> Result<()> {
    let cached_len = task.geometry().map(|g| g.layout.content_len_bytes);
    let resp = if cached_len == Some(0) { fetch.get(None, None).await? } else { fetch.get(Some((0, 0)), None).await? };
    let total_len = match resp.status() {
        206 => resp
            .head
            .header("content-range")
            .and_then(|v| crate::http::range::parse_content_range(v).ok())
            .and_then(|cr| cr.complete_len),
        _ => resp.head.header_str("content-length").and_then(|v| v.trim().parse().ok()),
    };
    let answer = Answer { status: resp.status(), total_len, validator: strong_validator(&resp.head) };
    resp.discard(crate::limits::MAX_ERROR_BODY_BYTES).await;
    judge(&answer, cached_len, task.validator.get().map(String::as_str), &Shown(&fetch.url).to_string())
}

/// Whether `caller` may know that a task exists (see it in `tasks ls`/`stat`, be told anything
/// about it by `tasks rm`): root and the daemon's user see every task; anyone else only those it
/// asked for itself since the daemon started. What other users download is theirs to know.
pub fn sees(caller: &Caller, requesters: &Noted) -> bool {
    caller.is_privileged() || requesters.includes(caller.uid)
}

/// `tasks rm` of a task `caller` sees (`sees`): root or the daemon's user always; anyone else
/// only when it is the task's sole requester.
pub fn may_remove(caller: &Caller, requesters: &Noted) -> Result<()> {
    if caller.is_privileged() || requesters.sole() == Some(caller.uid) {
        return Ok(());
    }
    Err(Error::client(format!(
        "permission denied: uid {} may remove only tasks that it alone downloaded; others asked for this one \
         too: ask root to remove it",
        caller.uid
    ))
    .with_kind(Kind::Denied))
}

/// `gc` by `caller`: root or the daemon's user.
pub fn may_collect(caller: &Caller) -> Result<()> {
    if caller.is_privileged() {
        return Ok(());
    }
    Err(Error::client(format!("permission denied: only root or the daemon's user may run gc, not uid {}", caller.uid))
        .with_kind(Kind::Denied))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::daemon::requesters::Requesters;

    fn check(
        answer: (u16, Option<u64>, Option<&str>),
        cached: (Option<u64>, Option<&str>),
        want: std::result::Result<(), Option<u16>>,
    ) {
        let a = Answer { status: answer.0, total_len: answer.1, validator: answer.2.map(String::from) };
        let got = judge(&a, cached.0, cached.1, "http://h/f");
        match (got, want) {
            (Ok(()), Ok(())) => {}
            (Err(e), Err(kind)) => {
                assert_eq!(kind.map(Kind::Status).unwrap_or(Kind::Other), e.kind, "{answer:?}: {e}");
                assert!(!e.message.contains("Basic"), "{e}");
            }
            (got, want) => panic!("{answer:?} vs {cached:?}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn revalidation_passes_only_an_accepted_request_for_the_same_content() {
        check((206, Some(10), Some("\"a\"")), (Some(10), Some("\"a\"")), Ok(()));
        check((200, Some(10), None), (Some(10), Some("\"a\"")), Ok(()));
        check((206, None, None), (Some(10), None), Ok(()));
        check((401, None, None), (Some(10), None), Err(Some(401)));
        check((403, None, None), (Some(10), None), Err(Some(403)));
        check((404, None, None), (Some(10), None), Err(Some(404)));
        check((500, None, None), (Some(10), None), Err(Some(500)));
        check((206, Some(11), None), (Some(10), None), Err(None));
        check((206, Some(10), Some("\"b\"")), (Some(10), Some("\"a\"")), Err(None));
        // Still waiting for its first response: no length to compare yet.
        check((206, Some(10), None), (None, None), Ok(()));
    }

    #[test]
    fn credentials_make_a_request_private() {
        let url = |s: &str| url::Url::parse(s).unwrap();
        let h = |k: &str| vec![(k.to_string(), "x".to_string())];
        assert!(!carries_credentials(&url("http://h/f"), &[]));
        assert!(!carries_credentials(&url("http://h/f"), &h("Accept")));
        assert!(carries_credentials(&url("http://h/f"), &h("AUTHORIZATION")));
        assert!(carries_credentials(&url("http://h/f"), &h("Cookie")));
        assert!(carries_credentials(&url("http://h/f"), &h("Private-Token")));
        assert!(carries_credentials(&url("http://u:p@h/f"), &[]));
        assert!(carries_credentials(&url("http://tok@h/f"), &[]));
    }

    #[test]
    fn only_root_the_daemon_or_the_sole_requester_may_remove_and_users_see_only_their_own_tasks() {
        let me = rustix::process::geteuid().as_raw();
        let user = Caller { uid: me.wrapping_add(4242), gid: 1, pid: 1 };
        let other = Caller { uid: me.wrapping_add(4243), ..user.clone() };
        let root = Caller { uid: 0, ..user.clone() };
        let asked = |uids: &[u32]| {
            let r = Requesters::default();
            uids.iter().for_each(|u| r.note(*u));
            r.snapshot()
        };
        let (nobody, users, both) = (asked(&[]), asked(&[user.uid]), asked(&[user.uid, other.uid]));
        assert!(sees(&root, &nobody) && sees(&user, &users) && sees(&user, &both) && sees(&other, &both));
        assert!(!sees(&user, &nobody) && !sees(&other, &users) && !sees(&user, &asked(&[0])));
        assert!(may_remove(&root, &nobody).is_ok());
        assert!(may_remove(&user, &users).is_ok());
        assert!(may_remove(&user, &both).unwrap_err().message.contains("permission denied"));
        assert!(may_remove(&other, &users).is_err());
        assert!(may_collect(&user).is_err() && may_collect(&root).is_ok());
    }
}
