//! Content that changes at the origin mid-download is never stitched (issue 10, finding 5), and a
//! redirect loop's error names the URL (finding 8).
//!
//! The origin here is the scriptable in-process one: a fake, because no real server can be made to
//! swap a file's version between two requests of one client at an exact moment *and* ignore
//! `If-Range` (nginx and Apache honour it, which would hide the bug this proves absent).

mod common;
#[allow(dead_code, unused_imports)]
mod support_transport;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{content, PIECE};
use support_transport::*;

/// Serves `old` with `old_headers` for the first request (piece 0, no If-Range yet) and `new` with
/// `new_headers` for every later one, always 206 for a Range: `If-Range` is ignored, as a
/// careless origin or cache does.
fn swapping_origin(
    old: Vec<u8>,
    new: Vec<u8>,
    old_headers: Vec<(&'static str, String)>,
    new_headers: Vec<(&'static str, String)>,
) -> ScriptOrigin {
    let calls = Arc::new(AtomicUsize::new(0));
    ScriptOrigin::start(move |req, ctx| {
        let first = calls.fetch_add(1, Ordering::SeqCst) == 0;
        let (body, extra) = if first { (&old, &old_headers) } else { (&new, &new_headers) };
        let len = body.len() as u64;
        let (a, b) = req.range.unwrap_or((0, len - 1));
        let b = b.min(len - 1);
        let slice = &body[a as usize..=b as usize];
        let mut headers: Vec<(&str, String)> =
            vec![("Content-Range", format!("bytes {a}-{b}/{len}")), ("Content-Length", slice.len().to_string())];
        headers.extend(extra.iter().cloned());
        ctx.respond(206, &headers, slice)?;
        Ok(Next::KeepAlive)
    })
}

fn assert_not_stitched(origin: &ScriptOrigin, path: &str) {
    let daemon = daemon_with(&[]);
    let reason = assert_download_fails(&daemon, &origin.url(path));
    assert_mentions(&reason, "content changed", "file replaced mid-download");
    assert_still_serves(&daemon);
}

#[test]
fn weak_etag_changing_mid_download_fails_instead_of_stitching() {
    let (old, new) = (content(3 * PIECE + 7, 1050), content(3 * PIECE + 7, 1051));
    let origin = swapping_origin(old, new, vec![("ETag", "W/\"A\"".into())], vec![("ETag", "W/\"B\"".into())]);
    assert_not_stitched(&origin, "/weak.bin");
}

#[test]
fn last_modified_changing_mid_download_fails_instead_of_stitching() {
    let (old, new) = (content(3 * PIECE + 7, 1052), content(3 * PIECE + 7, 1053));
    let origin = swapping_origin(
        old,
        new,
        vec![("Last-Modified", "Sun, 29 Nov 2026 16:21:40 GMT".into())],
        vec![("Last-Modified", "Sun, 29 Nov 2026 16:21:41 GMT".into())],
    );
    assert_not_stitched(&origin, "/dated.bin");
}

#[test]
fn strong_etag_dropped_mid_download_fails_instead_of_stitching() {
    // A piece without the ETag the first response had cannot be shown to be the same version.
    let (old, new) = (content(3 * PIECE + 7, 1054), content(3 * PIECE + 7, 1055));
    let origin = swapping_origin(old, new, vec![("ETag", "\"A\"".into())], vec![]);
    assert_not_stitched(&origin, "/dropped.bin");
}

#[test]
fn unchanged_weak_etag_and_date_download_succeeds() {
    let body = content(3 * PIECE + 7, 1056);
    let headers =
        vec![("ETag", "W/\"same\"".to_string()), ("Last-Modified", "Sun, 29 Nov 2026 16:21:40 GMT".to_string())];
    let origin = swapping_origin(body.clone(), body.clone(), headers.clone(), headers);
    let daemon = daemon_with(&[]);
    let dir = common::out_dir();
    download_exact(&daemon, &origin.url("/same.bin"), dir.path(), "same.bin", &body);
}

#[test]
fn redirect_loop_error_names_the_url() {
    let origin = ScriptOrigin::start(move |req, ctx| {
        let next = if req.target == "/loop-a" { "/loop-b" } else { "/loop-a" };
        ctx.respond(302, &[("Location", next.to_string()), ("Content-Length", "0".into())], b"")?;
        Ok(Next::KeepAlive)
    });
    let daemon = daemon_with(&[]);
    let url = origin.url("/loop-a");
    let reason = assert_download_fails(&daemon, &url);
    assert_mentions(&reason, "redirect", "a redirect loop");
    assert_mentions(&reason, &url, "a redirect loop");
}
