//! Clock helpers shared by the daemon and the client: "now" in unix milliseconds (the unit of
//! every stored access time), a monotonic millisecond count for holds and timeouts that a wall
//! clock step must not stretch, and Dragonfly's log timestamp layout.
//!
//! Invariant: pure functions of a `SystemTime` except `now_unix_ms`; a clock before 1970 reads as 0,
//! never a panic.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

pub fn now_unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Milliseconds on a monotonic clock (this process's first call + `MONO_BASE_MS`): for comparing
/// instants within the process, never stored or sent. The base keeps it far from 0 (which callers
/// use for "never") even after subtracting a hold.
pub fn mono_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    MONO_BASE_MS + START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

const MONO_BASE_MS: u64 = 1 << 32;

/// `YYYY-MM-DD HH:MM:SS.mmm` in UTC (zap's console-friendly layout Dragonfly uses).
pub fn timestamp(now: SystemTime) -> String {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, day) = civil_from_days(days);
    format!("{y:04}-{m:02}-{day:02} {:02}:{:02}:{:02}.{:03}", rem / 3600, rem % 3600 / 60, rem % 60, d.subsec_millis())
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn check_ts(unix_ms: u64, expected: &str) {
        assert_eq!(timestamp(UNIX_EPOCH + Duration::from_millis(unix_ms)), expected);
    }

    #[test]
    fn timestamps_match_dragonfly_layout() {
        check_ts(0, "1970-01-01 00:00:00.000");
        check_ts(1_662_552_266_485, "2022-09-07 12:04:26.485");
        check_ts(951_782_400_000, "2000-02-29 00:00:00.000");
        check_ts(4_102_444_799_999, "2099-12-31 23:59:59.999");
    }
}
