//! Byte ranges on the wire: the `Range` request header we send and the `Content-Range` response
//! header we check (RFC 9110 §14).
//!
//! Invariant: a `ContentRange` returned from here is self-consistent (`first <= last`, and
//! `last < complete_len` when the length is known), and `check_partial` only passes a 206 whose
//! bytes are exactly the ones asked for — a piece is never written at an offset the server did
//! not promise.

use crate::http::codec::{parse_decimal, HttpError, HttpErrorKind};

/// `Content-Range: bytes first-last/complete_len`; `complete_len` is `None` for `/*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    pub first: u64,
    /// Inclusive.
    pub last: u64,
    pub complete_len: Option<u64>,
}

/// The header value asking for bytes `first..=last_inclusive` (a closed range: the only form
/// docker-registry honours).
pub fn range_header(first: u64, last_inclusive: u64) -> String {
    debug_assert!(first <= last_inclusive, "empty range {first}-{last_inclusive}");
    format!("bytes={first}-{last_inclusive}")
}

/// Parses a satisfied-range `Content-Range` (`bytes a-b/N` or `bytes a-b/*`).
pub fn parse_content_range(v: &[u8]) -> Result<ContentRange, HttpError> {
    let bad = |why: &str| HttpError::new(HttpErrorKind::BadContentRange, format!("{why}: {}", shown(v)));
    let spec = range_spec(v).ok_or_else(|| bad("not a bytes range"))?;
    let (range, complete) = split_once(spec, b'/').ok_or_else(|| bad("no '/'"))?;
    let (first, last) = split_once(range, b'-').ok_or_else(|| bad("no first-last"))?;
    let (first, last) = match (parse_decimal(first), parse_decimal(last)) {
        (Some(first), Some(last)) => (first, last),
        _ => return Err(bad("bad or overflowing position")),
    };
    let complete_len = match complete {
        b"*" => None,
        n => Some(parse_decimal(n).ok_or_else(|| bad("bad or overflowing length"))?),
    };
    if last < first {
        return Err(bad("last before first"));
    }
    // RFC 9110 §14.4: a range that reaches past the complete length is invalid.
    if complete_len.is_some_and(|len| last >= len) {
        return Err(bad("range past the complete length"));
    }
    Ok(ContentRange { first, last, complete_len })
}

/// The complete length from the unsatisfied-range form `bytes */N` (sent with a 416).
pub fn parse_unsatisfied_range(v: &[u8]) -> Option<u64> {
    parse_decimal(range_spec(v)?.strip_prefix(b"*/")?)
}

/// Checks a 206's `Content-Range` is exactly `first..=last` (and of `expected_total` bytes in
/// all when that is known; an unknown `/*` length then fails too).
pub fn check_partial(
    head_value: &[u8],
    first: u64,
    last: u64,
    expected_total: Option<u64>,
) -> Result<ContentRange, HttpError> {
    let got = parse_content_range(head_value)?;
    if got.first != first || got.last != last {
        return Err(HttpError::new(
            HttpErrorKind::BadContentRange,
            format!("asked for bytes {first}-{last}, got {}-{}", got.first, got.last),
        ));
    }
    if let Some(total) = expected_total {
        if got.complete_len != Some(total) {
            let len = got.complete_len.map_or("*".to_owned(), |n| n.to_string());
            return Err(HttpError::new(
                HttpErrorKind::BadContentRange,
                format!("expected a complete length of {total}, got {len}"),
            ));
        }
    }
    Ok(got)
}

/// What follows `bytes ` (unit compared case-insensitively, OWS trimmed).
fn range_spec(v: &[u8]) -> Option<&[u8]> {
    let v = v.trim_ascii();
    let (unit, rest) = split_once(v, b' ')?;
    unit.eq_ignore_ascii_case(b"bytes").then(|| rest.trim_ascii_start())
}

fn split_once(v: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
    let at = v.iter().position(|&b| b == sep)?;
    Some((&v[..at], &v[at + 1..]))
}

/// A header value for an error message: lossy UTF-8, cut so a hostile value stays short.
fn shown(v: &[u8]) -> String {
    const MAX_SHOWN_BYTES: usize = 80;
    let cut = &v[..v.len().min(MAX_SHOWN_BYTES)];
    let more = if v.len() > MAX_SHOWN_BYTES { "..." } else { "" };
    format!("{:?}{more}", String::from_utf8_lossy(cut))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_content_range(v: &str, expected: Option<(u64, u64, Option<u64>)>) {
        let got = parse_content_range(v.as_bytes());
        match expected {
            Some((first, last, complete_len)) => {
                assert_eq!(got, Ok(ContentRange { first, last, complete_len }), "{v:?}")
            }
            None => assert_eq!(got.map_err(|e| e.kind), Err(HttpErrorKind::BadContentRange), "{v:?}"),
        }
    }

    #[test]
    fn content_range_table() {
        let max = u64::MAX;
        check_content_range("bytes 0-9/100", Some((0, 9, Some(100))));
        check_content_range("bytes 0-0/1", Some((0, 0, Some(1))));
        check_content_range("bytes 99-99/100", Some((99, 99, Some(100))));
        check_content_range("bytes 5-9/*", Some((5, 9, None)));
        check_content_range("  Bytes  5-9/*  ", Some((5, 9, None)));
        check_content_range(&format!("bytes 0-{}/{max}", max - 1), Some((0, max - 1, Some(max))));
        check_content_range(&format!("bytes {max}-{max}/*"), Some((max, max, None)));
        // Malformed.
        check_content_range("", None);
        check_content_range("bytes", None);
        check_content_range("bytes=0-9/100", None);
        check_content_range("items 0-9/100", None);
        check_content_range("bytes 0-9", None);
        check_content_range("bytes 0-9/", None);
        check_content_range("bytes -9/100", None);
        check_content_range("bytes 0-/100", None);
        check_content_range("bytes 0 - 9/100", None);
        check_content_range("bytes +0-9/100", None);
        check_content_range("bytes 0-9/100/3", None);
        check_content_range("bytes 0-9/1e3", None);
        check_content_range("bytes */100", None);
        check_content_range("bytes 0-9,20-29/100", None);
        // Overflow.
        check_content_range("bytes 0-18446744073709551616/*", None);
        check_content_range("bytes 18446744073709551616-1/*", None);
        check_content_range("bytes 0-9/18446744073709551616", None);
        // Inconsistent.
        check_content_range("bytes 9-0/100", None);
        check_content_range("bytes 0-100/100", None);
        check_content_range("bytes 100-100/100", None);
        check_content_range("bytes 0-0/0", None);
    }

    fn check_unsatisfied(v: &str, expected: Option<u64>) {
        assert_eq!(parse_unsatisfied_range(v.as_bytes()), expected, "{v:?}");
    }

    #[test]
    fn unsatisfied_range_table() {
        check_unsatisfied("bytes */100", Some(100));
        check_unsatisfied("bytes */0", Some(0));
        check_unsatisfied(" BYTES */7 ", Some(7));
        check_unsatisfied("bytes 0-9/100", None);
        check_unsatisfied("bytes */*", None);
        check_unsatisfied("bytes */", None);
        check_unsatisfied("bytes */-1", None);
        check_unsatisfied("bytes */18446744073709551616", None);
        check_unsatisfied("bytes*/100", None);
        check_unsatisfied("", None);
    }

    #[test]
    fn range_header_format() {
        assert_eq!(range_header(0, 9), "bytes=0-9");
        assert_eq!(range_header(4_194_304, 8_388_607), "bytes=4194304-8388607");
        assert_eq!(range_header(u64::MAX, u64::MAX), format!("bytes={0}-{0}", u64::MAX));
    }

    fn check_partial_case(v: &str, asked: (u64, u64, Option<u64>), expected: Result<(), &str>) {
        let (first, last, total) = asked;
        let got = check_partial(v.as_bytes(), first, last, total);
        match expected {
            Ok(()) => assert_eq!(got.map(|c| (c.first, c.last)), Ok((first, last)), "{v:?}"),
            Err(detail) => {
                let e = got.expect_err(v);
                assert_eq!(e.kind, HttpErrorKind::BadContentRange);
                assert!(e.detail.contains(detail), "{v:?}: {e}");
            }
        }
    }

    #[test]
    fn check_partial_table() {
        check_partial_case("bytes 0-9/100", (0, 9, Some(100)), Ok(()));
        check_partial_case("bytes 0-9/100", (0, 9, None), Ok(()));
        check_partial_case("bytes 0-9/*", (0, 9, None), Ok(()));
        check_partial_case("bytes 0-9/*", (0, 9, Some(100)), Err("got *"));
        check_partial_case("bytes 0-9/101", (0, 9, Some(100)), Err("got 101"));
        check_partial_case("bytes 1-9/100", (0, 9, Some(100)), Err("got 1-9"));
        check_partial_case("bytes 0-8/100", (0, 9, Some(100)), Err("got 0-8"));
        check_partial_case("bytes 0-99/100", (0, 9, Some(100)), Err("got 0-99"));
        check_partial_case("bytes 0-9/5", (0, 9, Some(5)), Err("past the complete length"));
        check_partial_case("nonsense", (0, 9, None), Err("not a bytes range"));
    }

    #[test]
    fn long_values_are_cut_in_errors() {
        let v = format!("bytes {}", "9".repeat(10_000));
        let e = parse_content_range(v.as_bytes()).unwrap_err();
        assert!(e.detail.len() < 200, "{}", e.detail);
    }
}
