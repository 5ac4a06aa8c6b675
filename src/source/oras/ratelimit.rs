//! Registry rate limits, the pure half: given the `Retry-After` of a 429 (read by
//! `http::status::retry_after`, the project's one reader of it), wait it out or give up. GHCR and
//! Docker Hub answer 429 on manifest and blob requests when a client pulls too fast; a short wait
//! is what their docs ask for, a wait of hours ("pull limit reached") is a clear failure instead.
//!
//! Invariant: a `Decision::Wait` is never longer than `MAX_RETRY_AFTER` (the cap every Retry-After
//! wait in the project has) and there are never more than `MAX_RATE_LIMIT_WAITS` of them per
//! request, so a registry that never stops answering 429 costs a bounded time and then fails.

use std::time::Duration;

use crate::limits::{MAX_RATE_LIMIT_WAITS, MAX_RETRY_AFTER, RATE_LIMIT_DEFAULT_WAIT};

/// What to do after the `n_waited`-th 429 for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Wait(Duration),
    /// Waiting would exceed the bounds: the registry asked for `asked` (None: no usable header).
    GiveUp {
        asked: Option<Duration>,
    },
}

/// Waits for the 429s of one request: what the server asked (or a growing default when it did
/// not say), up to the bounds.
pub fn decide(n_waited: usize, asked: Option<Duration>) -> Decision {
    if n_waited >= MAX_RATE_LIMIT_WAITS {
        return Decision::GiveUp { asked };
    }
    match asked {
        Some(d) if d > MAX_RETRY_AFTER => Decision::GiveUp { asked },
        Some(d) => Decision::Wait(d),
        None => Decision::Wait(RATE_LIMIT_DEFAULT_WAIT.saturating_mul(1 << n_waited.min(8)).min(MAX_RETRY_AFTER)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisions_are_bounded() {
        let s = Duration::from_secs;
        assert_eq!(decide(0, Some(s(2))), Decision::Wait(s(2)));
        assert_eq!(decide(0, Some(MAX_RETRY_AFTER)), Decision::Wait(MAX_RETRY_AFTER));
        let too_long = MAX_RETRY_AFTER + s(1);
        assert_eq!(decide(0, Some(too_long)), Decision::GiveUp { asked: Some(too_long) });
        assert_eq!(decide(MAX_RATE_LIMIT_WAITS, Some(s(1))), Decision::GiveUp { asked: Some(s(1)) });
        assert_eq!(decide(0, None), Decision::Wait(RATE_LIMIT_DEFAULT_WAIT));
        assert_eq!(decide(1, None), Decision::Wait(RATE_LIMIT_DEFAULT_WAIT * 2));
        for n in 0..MAX_RATE_LIMIT_WAITS {
            match decide(n, None) {
                Decision::Wait(d) => assert!(d <= MAX_RETRY_AFTER),
                other => panic!("{n}: {other:?}"),
            }
        }
    }
}
