//! `download.totalRateLimit`: one token bucket for the whole daemon, shared by every core's piece
//! workers. Lock-free: each chunk reserves its slot on a shared timeline with one atomic update and
//! sleeps until the slot starts, so cores never wait on each other, only on the clock.
//!
//! Invariant: over any window, bytes admitted ≤ rate × window + one burst (`BURST`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Bytes that may pass at once without waiting: one read chunk, so a limit never stalls mid-read.
const BURST: Duration = Duration::from_millis(50);

pub struct RateLimiter {
    bytes_per_sec: u64,
    epoch: Instant,
    /// Nanoseconds since `epoch` at which the timeline is next free.
    next_free_ns: AtomicU64,
}

static GLOBAL: OnceLock<RateLimiter> = OnceLock::new();

/// Sets the daemon-wide limit (once, at start). `None` = unlimited.
pub fn install(bytes_per_sec: Option<u64>) {
    if let Some(bps) = bytes_per_sec.filter(|b| *b > 0) {
        let _ = GLOBAL.set(RateLimiter::new(bps));
    }
}

/// Waits until `n_bytes` may pass under the daemon-wide limit.
pub async fn take(n_bytes: usize) {
    if let Some(rl) = GLOBAL.get() {
        let wait = rl.reserve(n_bytes as u64, Instant::now());
        if !wait.is_zero() {
            compio::time::sleep(wait).await;
        }
    }
}

impl RateLimiter {
    pub fn new(bytes_per_sec: u64) -> RateLimiter {
        RateLimiter { bytes_per_sec: bytes_per_sec.max(1), epoch: Instant::now(), next_free_ns: AtomicU64::new(0) }
    }

    /// Reserves `n` bytes' worth of time; returns how long the caller must wait before using it.
    pub fn reserve(&self, n: u64, now: Instant) -> Duration {
        let cost_ns = (n as u128 * 1_000_000_000 / self.bytes_per_sec as u128) as u64;
        let now_ns = now.saturating_duration_since(self.epoch).as_nanos() as u64;
        let burst_ns = BURST.as_nanos() as u64;
        let prev = self
            .next_free_ns
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |next| {
                Some(next.max(now_ns.saturating_sub(burst_ns)).saturating_add(cost_ns))
            })
            .unwrap_or(0);
        let start = prev.max(now_ns.saturating_sub(burst_ns));
        Duration::from_nanos(start.saturating_sub(now_ns))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_follow_the_rate() {
        let rl = RateLimiter::new(1_000_000); // 1 MB/s
        let t0 = rl.epoch + Duration::from_secs(10);
        // Within the burst, the first chunks pass at once.
        assert_eq!(rl.reserve(50_000, t0), Duration::ZERO);
        // Then each 100 KB costs 100 ms of timeline.
        let w1 = rl.reserve(100_000, t0);
        let w2 = rl.reserve(100_000, t0);
        assert_eq!(w1, Duration::ZERO);
        assert_eq!(w2, Duration::from_millis(100));
        // Later, idle time does not accumulate beyond the burst.
        let later = t0 + Duration::from_secs(5);
        assert_eq!(rl.reserve(10_000, later), Duration::ZERO);
        let w = rl.reserve(1_000_000, later);
        assert!(w <= Duration::from_millis(10), "{w:?}");
        assert_eq!(rl.reserve(1, later), Duration::from_millis(960));
    }
}
