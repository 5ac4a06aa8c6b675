//! Registry rate limits, the pure half: read a 429's `Retry-After` (RFC 9110 §10.2.3: delay
//! seconds or an HTTP-date) and decide whether to wait it out or give up. GHCR and Docker Hub
//! answer 429 on manifest and blob requests when a client pulls too fast; a short wait is what
//! their docs ask for, a wait of hours ("pull limit reached") is a clear failure instead.
//!
//! Invariant: a `Decision::Wait` is never longer than `MAX_RATE_LIMIT_WAIT` and there are never
//! more than `MAX_RATE_LIMIT_WAITS` of them per request, so a registry that never stops answering
//! 429 costs a bounded time and then fails.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::limits::{MAX_RATE_LIMIT_WAIT, MAX_RATE_LIMIT_WAITS, RATE_LIMIT_DEFAULT_WAIT};

/// What to do after the `n_waited`-th 429 for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Wait(Duration),
    /// Waiting would exceed the bounds: the registry asked for `asked` (None: no usable header).
    GiveUp {
        asked: Option<Duration>,
    },
}

/// `Retry-After` as a delay from `now`: delay-seconds, or an IMF-fixdate (the only HTTP-date
/// form servers may send); a date in the past is zero. Anything else is None.
pub fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value.parse::<u64>().ok().map(Duration::from_secs);
    }
    let at = parse_imf_fixdate(value)?;
    let now_secs = now.duration_since(UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now_secs)))
}

/// Waits for the 429s of one request: what the server asked (or a growing default when it did
/// not say), up to the bounds.
pub fn decide(n_waited: usize, asked: Option<Duration>) -> Decision {
    if n_waited >= MAX_RATE_LIMIT_WAITS {
        return Decision::GiveUp { asked };
    }
    match asked {
        Some(d) if d > MAX_RATE_LIMIT_WAIT => Decision::GiveUp { asked },
        Some(d) => Decision::Wait(d),
        None => Decision::Wait(RATE_LIMIT_DEFAULT_WAIT.saturating_mul(1 << n_waited.min(8)).min(MAX_RATE_LIMIT_WAIT)),
    }
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` → seconds since the epoch.
fn parse_imf_fixdate(text: &str) -> Option<u64> {
    let rest = text.split_once(", ")?.1;
    let parts: Vec<&str> = rest.split(' ').collect();
    let [day, month, year, time, "GMT"] = parts[..] else { return None };
    let day: u64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let month = MONTHS.iter().position(|m| *m == month)? as u64 + 1;
    let year: u64 = year.parse().ok().filter(|y| *y >= 1970 && *y < 10_000)?;
    let hms: Vec<u64> = time.split(':').map(|p| p.parse().ok()).collect::<Option<_>>()?;
    let [h, m, s] = hms[..] else { return None };
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_values() {
        // 1994-11-06T08:49:37Z is 784111777 s after the epoch (RFC 9110's example date).
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777 - 30);
        let cases: &[(&str, Option<u64>)] = &[
            ("0", Some(0)),
            ("5", Some(5)),
            (" 120 ", Some(120)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", Some(30)),
            ("Sun, 06 Nov 1994 08:49:00 GMT", Some(0)),
            ("Sun, 06 Nov 1994 08:49:37 UTC", None),
            ("Sunday, 06-Nov-94 08:49:37 GMT", None),
            ("-1", None),
            ("1.5", None),
            ("", None),
            ("soon", None),
            ("99999999999999999999999", None),
        ];
        for (input, want) in cases {
            assert_eq!(retry_after(input, now), want.map(Duration::from_secs), "{input:?}");
        }
        assert_eq!(parse_imf_fixdate("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(parse_imf_fixdate("Tue, 29 Feb 2000 12:00:00 GMT"), Some(951_825_600));
    }

    #[test]
    fn decisions_are_bounded() {
        let s = Duration::from_secs;
        assert_eq!(decide(0, Some(s(2))), Decision::Wait(s(2)));
        assert_eq!(decide(0, Some(MAX_RATE_LIMIT_WAIT)), Decision::Wait(MAX_RATE_LIMIT_WAIT));
        let too_long = MAX_RATE_LIMIT_WAIT + s(1);
        assert_eq!(decide(0, Some(too_long)), Decision::GiveUp { asked: Some(too_long) });
        assert_eq!(decide(MAX_RATE_LIMIT_WAITS, Some(s(1))), Decision::GiveUp { asked: Some(s(1)) });
        assert_eq!(decide(0, None), Decision::Wait(RATE_LIMIT_DEFAULT_WAIT));
        assert_eq!(decide(1, None), Decision::Wait(RATE_LIMIT_DEFAULT_WAIT * 2));
        for n in 0..MAX_RATE_LIMIT_WAITS {
            match decide(n, None) {
                Decision::Wait(d) => assert!(d <= MAX_RATE_LIMIT_WAIT),
                other => panic!("{n}: {other:?}"),
            }
        }
    }
}
