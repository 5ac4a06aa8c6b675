//! The engine's HTTP decisions, as data: how the first response shapes a task (ranged pieces, one
//! stream, a refetch, empty content) and whether a piece response is the piece that was asked for.
//! Functions of the response head and of what was asked; the IO around them (`first_response`,
//! `engine`) is a few lines, and the tables below are the specification.
//!
//! Invariant: pure — no IO, no task state; a verdict is a value, a refusal an `Error` whose kind and
//! retryability the callers act on without reading its message.

use crate::error::{Error, Kind, Result};
use crate::http::codec::{self, Framing, ResponseHead};
use crate::http::range;
use crate::http::status;
use crate::piece::{Layout, DEFAULT_PIECE_LEN_BYTES};
use crate::storage::meta::Validators;

/// The range of the first request: piece 0 of any file up to 1 GiB (4 MiB pieces).
pub const PROBE: (u64, u64) = (0, DEFAULT_PIECE_LEN_BYTES - 1);

/// What a task's first request must match.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The URL the user asked for, for messages.
    pub url: &'a str,
    /// Known in advance (an OCI descriptor's size): the origin's length must match.
    pub expected_len: Option<u64>,
    /// Keep the content's validator for `If-Range` on pieces. Not with a digest: the whole file is
    /// checked anyway, and per-backend ETags behind a load balancer would only add failures.
    pub want_validator: bool,
}

/// How the first response shapes the task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum First {
    /// A 206 for the probe: every core fetches ranged pieces. `piece0`: this body is piece 0
    /// (false when pieces are larger than the probe, files over 1 GiB).
    /// `validators`: every validator of this response, which each piece must show again (None
    /// when no validator is wanted).
    Ranged { layout: Layout, piece0: bool, validator: Option<String>, validators: Option<Validators> },
    /// A 206 without a complete length (`bytes 0-9/*`): ask again for the whole body.
    Refetch,
    /// One stream read by the home core (a 200: Range ignored); `None` = until the body ends.
    Stream { len_bytes: Option<u64> },
    /// A 416 with `*/0`: the content is empty.
    Empty,
}

/// Judges the answer to the probe (`PROBE`).
pub fn first(head: &ResponseHead, asked: &Asked<'_>) -> Result<First> {
    match head.status {
        206 => ranged_first(head, asked),
        416 => match head.header("content-range").and_then(range::parse_unsatisfied_range) {
            Some(0) => check_len(asked, 0).map(|()| First::Empty),
            _ => Err(Error::origin(false, format!("{}: 416 Range Not Satisfiable for bytes=0-", asked.url))),
        },
        _ => whole(head, asked).map(|len_bytes| First::Stream { len_bytes }),
    }
}

fn ranged_first(head: &ResponseHead, asked: &Asked<'_>) -> Result<First> {
    let cr = range::parse_content_range(head.header("content-range").unwrap_or(b""))
        .map_err(|e| Error::origin(false, format!("{}: {e}", asked.url)))?;
    let Some(total) = cr.complete_len else { return Ok(First::Refetch) };
    check_len(asked, total)?;
    let layout = Layout::for_len(total);
    let expected_last = layout.piece_range(0).map(|(_, e)| e - 1);
    if cr.first != 0 || Some(cr.last) > expected_last {
        return Err(Error::origin(
            false,
            format!(
                "{}: 206 with Content-Range {}-{}/{total} for a request of bytes={}-{}",
                asked.url, cr.first, cr.last, PROBE.0, PROBE.1
            ),
        ));
    }
    let validator = if asked.want_validator { strong_validator(head) } else { None };
    let validators = asked.want_validator.then(|| validators_of(head));
    Ok(First::Ranged { layout, piece0: Some(cr.last) == expected_last, validator, validators })
}

/// Judges a response that must carry the whole content (a 200): its length when the framing says.
pub fn whole(head: &ResponseHead, asked: &Asked<'_>) -> Result<Option<u64>> {
    if head.status != 200 {
        return Err(status::error(head, format!("{} returned {} {}", asked.url, head.status, head.reason)));
    }
    let len_bytes = match codec::framing(head, false) {
        Ok(Framing::Length(n)) => Some(n),
        Ok(Framing::Empty) => Some(0),
        _ => None,
    };
    if let Some(len) = len_bytes {
        check_len(asked, len)?;
    }
    Ok(len_bytes)
}

/// The origin's length must be storable and match a length known in advance.
fn check_len(asked: &Asked<'_>, len_bytes: u64) -> Result<()> {
    // Bounds the piece table before it is allocated: an origin claiming 2^64 bytes must get an
    // error, not make the daemon try to allocate terabytes of bitmap.
    if Layout::for_len(len_bytes).n_pieces() > crate::storage::meta::MAX_PIECES as u64 {
        return Err(Error::origin(
            false,
            format!("{}: content length {len_bytes} is larger than this daemon can store", asked.url),
        ));
    }
    match asked.expected_len {
        Some(want) if want != len_bytes => Err(Error::origin(
            false,
            format!("{}: origin has {len_bytes} bytes, the descriptor says {want}", asked.url),
        )
        .with_kind(Kind::Integrity)),
        _ => Ok(()),
    }
}

/// A validator usable with `If-Range` (RFC 9110 §13.1.5): a strong ETag, else Last-Modified.
/// Only when there is no ETag at all may a date be used (a weak ETag means "no strong validator").
/// Anything oversized or with control characters is treated as absent: it goes into a request
/// header and into meta.json.
pub fn strong_validator(head: &ResponseHead) -> Option<String> {
    let v = match head.header_str("etag").map(str::trim) {
        Some(etag) if etag.starts_with('"') => etag,
        Some(_) => return None,
        None => head.header_str("last-modified")?.trim(),
    };
    let sane = !v.is_empty()
        && v.len() <= crate::storage::meta::MAX_VALIDATOR_BYTES
        && v.bytes().all(|b| (0x20..0x7f).contains(&b));
    sane.then(|| v.to_string())
}

/// The validators a response head shows: its ETag (weak or strong) and Last-Modified, each
/// trimmed, absent when missing or not sane to keep (oversized, control characters).
pub fn validators_of(head: &ResponseHead) -> Validators {
    let sane = |name: &str| {
        let v = head.header_str(name)?.trim();
        let ok = !v.is_empty()
            && v.len() <= crate::storage::meta::MAX_VALIDATOR_BYTES
            && v.bytes().all(|b| (0x20..0x7f).contains(&b));
        ok.then(|| v.to_string())
    };
    Validators { etag: sane("etag"), last_modified: sane("last-modified") }
}

/// What a piece request asked for.
#[derive(Debug, Clone, Copy)]
pub struct PieceAsked<'a> {
    pub url: &'a str,
    /// Inclusive byte range of the piece.
    pub first: u64,
    pub last: u64,
    pub content_len_bytes: u64,
    /// The first response's validator, sent as `If-Range` (none: no If-Range was sent).
    pub if_range: Option<&'a str>,
    /// Every validator of the first response: an origin that ignores If-Range, or has only a weak
    /// ETag or a date, still shows different ones on a changed file. None: not compared.
    pub validators: Option<&'a Validators>,
}

/// Judges a piece response: `Ok` only for a 206 carrying exactly the asked range of the same
/// content. Messages do not name the piece: the caller adds that context once.
pub fn piece(head: &ResponseHead, asked: &PieceAsked<'_>) -> Result<()> {
    match head.status {
        206 => {
            let cr = head.header("content-range").unwrap_or(b"");
            range::check_partial(cr, asked.first, asked.last, Some(asked.content_len_bytes))
                .map_err(|e| Error::origin(false, format!("{}: {e}", asked.url)))?;
            if let Some(diff) = asked.validators.and_then(|first| first.differs(&validators_of(head))) {
                return Err(content_changed(asked, format!("content changed during the download ({diff})")));
            }
            // An origin that ignores If-Range still shows a new ETag on a changed file.
            let etag = head.header_str("etag").map(str::trim);
            match (asked.if_range.filter(|v| v.starts_with('"')), etag) {
                (Some(want), Some(got)) if want != got => {
                    Err(content_changed(asked, format!("content changed during the download (ETag {want} → {got})")))
                }
                _ => Ok(()),
            }
        }
        // With If-Range, a 200 means the content changed since the first response: mixing pieces of
        // two versions would make a file that never existed.
        200 if asked.if_range.is_some() => {
            Err(content_changed(asked, "content changed during the download (If-Range no longer matches)".into()))
        }
        200 => Err(Error::origin(false, format!("{}: origin ignored Range after honouring it", asked.url))),
        s => Err(status::error(head, format!("{} returned {s} {}", asked.url, head.reason))),
    }
}

/// Retryable: behind a load balancer another backend may answer with its own ETag; a file that
/// really changed fails every attempt.
fn content_changed(asked: &PieceAsked<'_>, what: String) -> Error {
    Error::origin(true, format!("{}: {what}", asked.url)).with_kind(Kind::Integrity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const URL: &str = "http://o/f";
    const MIB: u64 = 1024 * 1024;

    fn head(status: u16, headers: &[(&str, &str)]) -> ResponseHead {
        ResponseHead {
            status,
            reason: "R".into(),
            version_minor: 1,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
        }
    }

    fn asked(expected_len: Option<u64>) -> Asked<'static> {
        Asked { url: URL, expected_len, want_validator: true }
    }

    fn ranged(len: u64, piece0: bool, validator: Option<&str>, validators: Option<Validators>) -> First {
        First::Ranged { layout: Layout::for_len(len), piece0, validator: validator.map(String::from), validators }
    }

    fn vs(etag: Option<&str>, last_modified: Option<&str>) -> Option<Validators> {
        Some(Validators { etag: etag.map(String::from), last_modified: last_modified.map(String::from) })
    }

    /// `Err((retryable, kind, needle))` for a refusal.
    type Refused = (bool, Kind, &'static str);

    fn check_first(h: ResponseHead, a: Asked<'_>, expected: std::result::Result<First, Refused>) {
        let got = first(&h, &a);
        match (&got, &expected) {
            (Ok(g), Ok(e)) => assert_eq!(g, e, "{h:?}"),
            (Err(g), Err((retry, kind, needle))) => {
                assert_eq!((g.retryable, g.kind), (*retry, *kind), "{h:?}: {g:?}");
                assert!(g.message.contains(needle), "{h:?}: {:?} lacks {needle:?}", g.message);
            }
            _ => panic!("{h:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn first_response_table() {
        let cr = |v: &str| ("Content-Range", v.to_string());
        let h =
            |status, hs: &[(&str, String)]| head(status, &hs.iter().map(|(k, v)| (*k, v.as_str())).collect::<Vec<_>>());
        let probe_last = PROBE.1;
        // 206 for the probe: ranged, piece 0 on this body, strong ETag kept.
        let full = format!("bytes 0-{probe_last}/{}", 10 * MIB);
        check_first(
            h(206, &[cr(&full), ("ETag", "\"v1\"".into())]),
            asked(None),
            Ok(ranged(10 * MIB, true, Some("\"v1\""), vs(Some("\"v1\""), None))),
        );
        // A weak ETag is no validator, and the date may not be used either.
        let weak = [cr(&full), ("ETag", "W/\"v1\"".into()), ("Last-Modified", "Sun, 29 Nov 2026 16:21:40 GMT".into())];
        let weak_vs = vs(Some("W/\"v1\""), Some("Sun, 29 Nov 2026 16:21:40 GMT"));
        check_first(h(206, &weak), asked(None), Ok(ranged(10 * MIB, true, None, weak_vs)));
        // With a digest, no validator is kept at all.
        let no_validator = Asked { want_validator: false, ..asked(None) };
        check_first(
            h(206, &[cr(&full), ("ETag", "\"v1\"".into())]),
            no_validator,
            Ok(ranged(10 * MIB, true, None, None)),
        );
        // A small file: the whole of it is piece 0.
        check_first(h(206, &[cr("bytes 0-99/100")]), asked(None), Ok(ranged(100, true, None, vs(None, None))));
        // Over 1 GiB: pieces are bigger than the probe, so this body is not piece 0.
        let big = 2048 * MIB;
        check_first(
            h(206, &[cr(&format!("bytes 0-{probe_last}/{big}"))]),
            asked(None),
            Ok(ranged(big, false, None, vs(None, None))),
        );
        // 206 with a wrong Content-Range: not what was asked for.
        let shifted = format!("bytes 1-{}/{}", probe_last + 1, 10 * MIB);
        check_first(h(206, &[cr(&shifted)]), asked(None), Err((false, Kind::Other, "206 with Content-Range 1-")));
        check_first(h(206, &[cr("bytes 0-99/50")]), asked(None), Err((false, Kind::Other, URL)));
        check_first(h(206, &[]), asked(None), Err((false, Kind::Other, URL)));
        // 206 without a complete length: fetch the whole body instead.
        check_first(h(206, &[cr("bytes 0-99/*")]), asked(None), Ok(First::Refetch));
        // The descriptor's length must match.
        check_first(
            h(206, &[cr("bytes 0-99/100")]),
            asked(Some(101)),
            Err((false, Kind::Integrity, "descriptor says 101")),
        );
        // 416 `*/0`: empty content; any other 416 is refused.
        check_first(h(416, &[cr("bytes */0")]), asked(None), Ok(First::Empty));
        check_first(h(416, &[cr("bytes */0")]), asked(Some(5)), Err((false, Kind::Integrity, "descriptor")));
        check_first(h(416, &[cr("bytes */7")]), asked(None), Err((false, Kind::Other, "416")));
        // 200: Range ignored, one stream, its length from the framing.
        check_first(h(200, &[("Content-Length", "42".into())]), asked(None), Ok(First::Stream { len_bytes: Some(42) }));
        check_first(
            h(200, &[("Transfer-Encoding", "chunked".into())]),
            asked(None),
            Ok(First::Stream { len_bytes: None }),
        );
        // A 16 EiB claim is refused before anything is allocated.
        let huge = format!("bytes 0-{probe_last}/{}", u64::MAX);
        check_first(h(206, &[cr(&huge)]), asked(None), Err((false, Kind::Other, "larger than")));
        // Statuses: one rule (5xx and 429 retryable, with Retry-After).
        check_first(h(503, &[]), asked(None), Err((true, Kind::Status(503), "returned 503")));
        check_first(h(429, &[("Retry-After", "1".into())]), asked(None), Err((true, Kind::Status(429), "429")));
        check_first(h(404, &[]), asked(None), Err((false, Kind::Status(404), "returned 404")));
    }

    fn check_piece(h: ResponseHead, if_range: Option<&str>, expected: std::result::Result<(), Refused>) {
        let a = PieceAsked {
            url: URL,
            first: 4 * MIB,
            last: 8 * MIB - 1,
            content_len_bytes: 10 * MIB,
            if_range,
            validators: None,
        };
        let got = piece(&h, &a);
        match (&got, &expected) {
            (Ok(()), Ok(())) => {}
            (Err(g), Err((retry, kind, needle))) => {
                assert_eq!((g.retryable, g.kind), (*retry, *kind), "{h:?}: {g:?}");
                assert!(g.message.contains(needle), "{h:?}: {:?} lacks {needle:?}", g.message);
            }
            _ => panic!("{h:?} if_range={if_range:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn piece_response_table() {
        let good = format!("bytes {}-{}/{}", 4 * MIB, 8 * MIB - 1, 10 * MIB);
        let cr = good.as_str();
        check_piece(head(206, &[("Content-Range", cr)]), None, Ok(()));
        check_piece(head(206, &[("Content-Range", cr), ("ETag", "\"v1\"")]), Some("\"v1\""), Ok(()));
        // A date validator cannot be compared with an ETag: If-Range did its job.
        check_piece(
            head(206, &[("Content-Range", cr), ("ETag", "\"v2\"")]),
            Some("Sun, 29 Nov 2026 16:21:40 GMT"),
            Ok(()),
        );
        // 206 with a wrong Content-Range: shifted, wrong total, missing.
        let shifted = format!("bytes {}-{}/{}", 4 * MIB + 1, 8 * MIB, 10 * MIB);
        check_piece(head(206, &[("Content-Range", shifted.as_str())]), None, Err((false, Kind::Other, URL)));
        let other_total = format!("bytes {}-{}/{}", 4 * MIB, 8 * MIB - 1, 11 * MIB);
        check_piece(head(206, &[("Content-Range", other_total.as_str())]), None, Err((false, Kind::Other, URL)));
        check_piece(head(206, &[]), None, Err((false, Kind::Other, URL)));
        // A new ETag (strong or weak) on a 206: the content changed under us.
        check_piece(
            head(206, &[("Content-Range", cr), ("ETag", "\"v2\"")]),
            Some("\"v1\""),
            Err((true, Kind::Integrity, "ETag \"v1\" → \"v2\"")),
        );
        check_piece(
            head(206, &[("Content-Range", cr), ("ETag", "W/\"v1\"")]),
            Some("\"v1\""),
            Err((true, Kind::Integrity, "content changed")),
        );
        // 200 after If-Range: content changed; 200 without: Range ignored after honouring it.
        check_piece(head(200, &[]), Some("\"v1\""), Err((true, Kind::Integrity, "If-Range no longer matches")));
        check_piece(head(200, &[]), None, Err((false, Kind::Other, "ignored Range")));
        // Statuses: one rule.
        check_piece(head(429, &[("Retry-After", "2")]), None, Err((true, Kind::Status(429), "returned 429")));
        check_piece(head(500, &[]), None, Err((true, Kind::Status(500), "returned 500")));
        check_piece(head(416, &[]), None, Err((false, Kind::Status(416), "returned 416")));
        check_piece(head(404, &[]), None, Err((false, Kind::Status(404), "returned 404")));
    }

    /// A piece whose head shows `piece` against a first response that showed `first`.
    fn check_same_version(first: &[(&str, &str)], shown: &[(&str, &str)], same: bool) {
        let cr = format!("bytes {}-{}/{}", 4 * MIB, 8 * MIB - 1, 10 * MIB);
        let mut hs = vec![("Content-Range", cr.as_str())];
        hs.extend_from_slice(shown);
        let want = validators_of(&head(206, first));
        let a = PieceAsked {
            url: URL,
            first: 4 * MIB,
            last: 8 * MIB - 1,
            content_len_bytes: 10 * MIB,
            if_range: None,
            validators: Some(&want),
        };
        match piece(&head(206, &hs), &a) {
            Ok(()) => assert!(same, "{first:?} vs {shown:?}: accepted"),
            Err(e) => {
                assert!(!same, "{first:?} vs {shown:?}: {e:?}");
                assert_eq!((e.retryable, e.kind), (true, Kind::Integrity), "{e:?}");
                assert!(e.message.contains("content changed"), "{e:?}");
            }
        }
    }

    #[test]
    fn piece_validators_must_equal_the_first_responses() {
        let (d1, d2) = ("Sun, 29 Nov 2026 16:21:40 GMT", "Sun, 29 Nov 2026 16:21:41 GMT");
        check_same_version(&[("ETag", "W/\"A\"")], &[("ETag", "W/\"A\"")], true);
        check_same_version(&[("ETag", "W/\"A\"")], &[("ETag", "W/\"B\"")], false);
        check_same_version(&[("ETag", "\"A\"")], &[("ETag", "W/\"A\"")], false);
        check_same_version(&[("ETag", "\"A\"")], &[], false);
        check_same_version(&[], &[("ETag", "\"A\"")], false);
        check_same_version(&[("Last-Modified", d1)], &[("Last-Modified", d1)], true);
        check_same_version(&[("Last-Modified", d1)], &[("Last-Modified", d2)], false);
        check_same_version(
            &[("ETag", "\"A\""), ("Last-Modified", d1)],
            &[("ETag", "\"A\""), ("Last-Modified", d2)],
            false,
        );
        check_same_version(&[], &[], true);
        check_same_version(&[("ETag", " \"A\" ")], &[("ETag", "\"A\"")], true);
    }

    #[test]
    fn a_429s_retry_after_travels_with_the_error() {
        let a = PieceAsked { url: URL, first: 0, last: 9, content_len_bytes: 10, if_range: None, validators: None };
        let e = piece(&head(429, &[("Retry-After", "2")]), &a).unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
        let e = first(&head(503, &[("Retry-After", "1")]), &asked(None)).unwrap_err();
        assert_eq!(e.retry_after, Some(Duration::from_secs(1)));
    }

    fn check_validator(headers: &[(&str, &str)], expected: Option<&str>) {
        assert_eq!(strong_validator(&head(206, headers)).as_deref(), expected, "{headers:?}");
    }

    #[test]
    fn validators_follow_rfc_9110_if_range_rules() {
        let date = "Sun, 29 Nov 2026 16:21:40 GMT";
        check_validator(&[("ETag", "\"abc\"")], Some("\"abc\""));
        check_validator(&[("ETag", "\"abc\""), ("Last-Modified", date)], Some("\"abc\""));
        // A weak ETag means there is no strong validator: the date may not be used either.
        check_validator(&[("ETag", "W/\"abc\""), ("Last-Modified", date)], None);
        check_validator(&[("Last-Modified", date)], Some(date));
        check_validator(&[], None);
        check_validator(&[("ETag", "\"a\tb\"")], None);
        let huge = format!("\"{}\"", "x".repeat(2000));
        check_validator(&[("ETag", huge.as_str())], None);
    }
}
