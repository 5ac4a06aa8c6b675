//! The first response of a task: the home core's first GET asks for piece 0's range, and its answer
//! decides how the task is read — ranged pieces from every core, one stream from the home core, or
//! nothing at all (empty content) — and what the content must match (length, validator).
//!
//! Invariant: the task's geometry is set here, once, before any piece worker starts; a response that
//! is not what was asked for (a wrong Content-Range, a length over what the daemon can store, a
//! length other than the descriptor's) fails the task instead of shaping it.

use crate::daemon::task::{Geometry, Task};
use crate::error::{Error, Kind, Result};
use crate::http::client;
use crate::piece::{Layout, DEFAULT_PIECE_LEN_BYTES};

/// The outcome of the first request: either the task is now laid out and (maybe) ranged, or it is
/// being read as a single stream.
pub enum FirstResponse {
    /// Piece 0's body follows on this response when `piece0` is true.
    Ranged {
        resp: client::Response,
        piece0: bool,
    },
    Stream {
        resp: client::Response,
        len_bytes: Option<u64>,
    },
    Empty,
}

/// Sends the first GET (piece 0's range) and classifies the answer.
pub async fn first_request(task: &Task) -> Result<FirstResponse> {
    let resp = task.spec.fetch.get(Some((0, DEFAULT_PIECE_LEN_BYTES - 1))).await?;
    match resp.status() {
        206 => {
            let cr = resp.head.header("content-range").unwrap_or(b"");
            let cr = crate::http::range::parse_content_range(cr)
                .map_err(|e| Error::origin(false, format!("{}: {e}", task.spec.display_url)))?;
            let Some(total) = cr.complete_len else {
                drop(resp);
                let resp = task.spec.fetch.get(None).await?;
                return stream_or_error(task, resp);
            };
            check_len(task, total)?;
            let layout = Layout::for_len(total);
            let expected_last = layout.piece_range(0).map(|(_, e)| e - 1);
            if cr.first != 0 || Some(cr.last) > expected_last {
                return Err(Error::origin(
                    false,
                    format!(
                        "{}: 206 with Content-Range {}-{}/{total} for a request of bytes=0-{}",
                        task.spec.display_url,
                        cr.first,
                        cr.last,
                        DEFAULT_PIECE_LEN_BYTES - 1
                    ),
                ));
            }
            task.set_geometry(Geometry { layout, ranged: true });
            // With a digest the content is checked end to end anyway; If-Range would only add
            // failures (per-backend ETags behind a load balancer), so it is used without one.
            if task.spec.digest.is_none() {
                if let Some(v) = strong_validator(&resp.head) {
                    let _ = task.validator.set(v);
                }
            }
            // Piece 0 is on this response unless piece length is larger than the probe (files > 1 GiB).
            let piece0 = Some(cr.last) == expected_last;
            task.start_cursor_at(if piece0 { 1 } else { 0 });
            Ok(FirstResponse::Ranged { resp, piece0 })
        }
        416 => {
            let total = resp.head.header("content-range").and_then(crate::http::range::parse_unsatisfied_range);
            if total == Some(0) {
                check_len(task, 0)?;
                task.set_geometry(Geometry { layout: Layout::for_len(0), ranged: true });
                return Ok(FirstResponse::Empty);
            }
            Err(Error::origin(false, format!("{}: 416 Range Not Satisfiable for bytes=0-", task.spec.display_url)))
        }
        _ => stream_or_error(task, resp),
    }
}

/// A validator usable with `If-Range` (RFC 9110 §13.1.5): a strong ETag, else Last-Modified.
/// Only when there is no ETag at all may a date be used (a weak ETag means "no strong validator").
/// Anything oversized or with control characters is treated as absent: it goes into a request
/// header and into meta.json.
pub fn strong_validator(head: &crate::http::codec::ResponseHead) -> Option<String> {
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

/// The origin's length must match a length known in advance (an OCI descriptor's size).
fn check_len(task: &Task, len_bytes: u64) -> Result<()> {
    // Bounds the piece table before it is allocated: an origin claiming 2^64 bytes must get an
    // error, not make the daemon try to allocate terabytes of bitmap.
    if Layout::for_len(len_bytes).n_pieces() > crate::storage::meta::MAX_PIECES as u64 {
        return Err(Error::origin(
            false,
            format!("{}: content length {len_bytes} is larger than this daemon can store", task.spec.display_url),
        ));
    }
    match task.spec.expected_len {
        Some(want) if want != len_bytes => Err(Error::origin(
            false,
            format!("{}: origin has {len_bytes} bytes, the descriptor says {want}", task.spec.display_url),
        )
        .with_kind(Kind::Integrity)),
        _ => Ok(()),
    }
}

fn stream_or_error(task: &Task, resp: client::Response) -> Result<FirstResponse> {
    let status = resp.status();
    if status != 200 {
        let retryable = status >= 500 || status == 429;
        return Err(Error::origin(
            retryable,
            format!("{} returned {status} {}", task.spec.display_url, resp.head.reason),
        )
        .with_kind(Kind::Status(status)));
    }
    let len_bytes = match crate::http::codec::framing(&resp.head, false) {
        Ok(crate::http::codec::Framing::Length(n)) => Some(n),
        Ok(crate::http::codec::Framing::Empty) => Some(0),
        _ => None,
    };
    if let Some(len) = len_bytes {
        check_len(task, len)?;
        task.set_geometry(Geometry { layout: Layout::for_len(len), ranged: false });
    }
    Ok(FirstResponse::Stream { resp, len_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_validator(headers: &[(&str, &str)], expected: Option<&str>) {
        let head = crate::http::codec::ResponseHead {
            status: 206,
            reason: "Partial Content".into(),
            version_minor: 1,
            headers: headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect(),
        };
        assert_eq!(strong_validator(&head).as_deref(), expected, "{headers:?}");
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
