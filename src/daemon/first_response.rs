//! The first response of a task, as IO around `judge::first`: send the probe GET (piece 0's
//! range), let the pure judge say how the answer shapes the task, refetch the whole body when the
//! origin gave no complete length, and lay the task out accordingly.
//!
//! Invariant: the task's geometry is set here, once, before any piece worker starts; a response that
//! is not what was asked for fails the task instead of shaping it.

use crate::daemon::judge::{self, Asked, First};
use crate::daemon::task::{Geometry, Task};
use crate::error::{Error, Result};
use crate::http::client;
use crate::piece::Layout;

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

/// Sends the first GET (piece 0's range), judges the answer and lays the task out.
pub async fn first_request(task: &Task) -> Result<FirstResponse> {
    let asked = Asked {
        url: &task.spec.display_url,
        expected_len: task.spec.expected_len,
        want_validator: task.spec.digest.is_none(),
    };
    let mut resp = task.spec.fetch.get(Some(judge::PROBE), None).await?;
    let mut verdict = judge::first(&resp.head, &asked)?;
    if verdict == First::Refetch {
        drop(resp);
        resp = task.spec.fetch.get(None, None).await?;
        verdict = First::Stream { len_bytes: judge::whole(&resp.head, &asked)? };
    }
    lay_out(task, verdict, resp)
}

fn lay_out(task: &Task, verdict: First, resp: client::Response) -> Result<FirstResponse> {
    match verdict {
        First::Ranged { layout, piece0, validator, validators } => {
            task.set_geometry(Geometry { layout, ranged: true });
            if let Some(v) = validator {
                let _ = task.validator.set(v);
            }
            if let Some(v) = validators {
                let _ = task.validators.set(v);
            }
            task.start_cursor_at(u64::from(piece0));
            Ok(FirstResponse::Ranged { resp, piece0 })
        }
        First::Stream { len_bytes } => {
            if let Some(len) = len_bytes {
                task.set_geometry(Geometry { layout: Layout::for_len(len), ranged: false });
            }
            Ok(FirstResponse::Stream { resp, len_bytes })
        }
        First::Empty => {
            task.set_geometry(Geometry { layout: Layout::for_len(0), ranged: true });
            Ok(FirstResponse::Empty)
        }
        First::Refetch => Err(Error::internal("a refetch verdict reached lay_out")),
    }
}
