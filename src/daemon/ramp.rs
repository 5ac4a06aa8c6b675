//! How many ranged connections a task uses, decided from the throughput measured while it runs:
//! one piece worker beside the first response, then the count doubles while each doubling raised
//! the rate by at least `RAMP_GAIN`; when a doubling did not pay, the count steps back to the last
//! one that did and rests there for `RAMP_REST_WINDOWS` windows before it probes again (a busy
//! host's noise, or an origin that starts capping later, must not freeze a wrong count). Two steps
//! in a row whose gain was nearly their whole factor (≥ `RAMP_LINEAR` of it: each connection adds
//! a full connection's rate, the signature of a per-connection cap; one such step can be noise)
//! make the next steps ×4 instead of ×2, so a capped origin reaches 32 connections in four windows
//! (1 → 2 → 4 → 16 → 32), not five; any step that is not linear, or a step back, returns to ×2. An origin with no per-connection cap (loopback, a LAN server)
//! ends with one or two connections, the cost of which is no more than one stream's; an origin
//! capping each connection (a CDN, a shaped link) gets up to `cores × PIECE_WORKERS_PER_CORE`
//! (at most `MAX_PIECE_WORKERS_PER_TASK`; `Shared::max_workers`).
//!
//! Invariant: the limit is always in `1..=max`; `Ramp` (pure, table-tested) decides, `Workers`
//! (atomics shared by every core's workers) applies: a worker over the limit finishes its piece
//! and retires, so a step back never abandons a piece half-fetched.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::limits::{RAMP_GAIN, RAMP_LINEAR, RAMP_MAX_FACTOR, RAMP_REST_WINDOWS};

/// What the engine must do after one measurement window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep the current count (settled, resting, or already at the max).
    Hold,
    /// Raise the limit to this many workers (start the difference).
    Grow(usize),
    /// The last doubling did not pay: lower the limit to this many and rest.
    Settle(usize),
}

#[derive(Debug, Clone)]
pub struct Ramp {
    limit: usize,
    max: usize,
    /// Rate (bytes/s) measured at `prev_limit`, before the last doubling.
    prev: Option<(usize, f64)>,
    settled: bool,
    /// Windows left before probing again after a step back.
    rest: u32,
    /// Steps in a row that scaled (nearly) linearly; from two on, the next step is ×`RAMP_MAX_FACTOR`.
    linear_steps: u32,
}

impl Ramp {
    pub fn new(initial: usize, max: usize) -> Ramp {
        let max = max.max(1);
        Ramp { limit: initial.clamp(1, max), max, prev: None, settled: false, rest: 0, linear_steps: 0 }
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn settled(&self) -> bool {
        self.settled
    }

    /// Stops ramping for good where it is (e.g. fewer pieces are left than workers would be added).
    pub fn settle(&mut self) {
        self.settled = true;
    }

    /// One window's throughput at the current limit, in bytes per second.
    pub fn observe(&mut self, rate: f64) -> Step {
        if self.settled {
            return Step::Hold;
        }
        if self.rest > 0 {
            self.rest -= 1;
            if self.rest > 0 {
                return Step::Hold;
            }
        } else if let Some((prev_limit, prev_rate)) = self.prev {
            if rate < prev_rate * RAMP_GAIN {
                self.limit = prev_limit;
                self.prev = None;
                self.rest = RAMP_REST_WINDOWS;
                self.linear_steps = 0;
                return Step::Settle(prev_limit);
            }
            let stepped = self.limit as f64 / prev_limit.max(1) as f64;
            let linear = rate >= prev_rate * stepped * RAMP_LINEAR;
            self.linear_steps = if linear { self.linear_steps + 1 } else { 0 };
        }
        if self.limit >= self.max {
            self.settled = true;
            return Step::Hold;
        }
        let factor = if self.linear_steps >= 2 { RAMP_MAX_FACTOR } else { 2 };
        self.prev = Some((self.limit, rate));
        self.limit = (self.limit * factor).min(self.max);
        Step::Grow(self.limit)
    }
}

/// A task's piece workers, across cores: how many run and how many may. (The throughput `Ramp`
/// is fed with is the task's bytes written, counted per write so a window sees pieces in flight.)
#[derive(Debug, Default)]
pub struct Workers {
    active: AtomicUsize,
    limit: AtomicUsize,
    /// Round-robin cursor over cores for the next worker started.
    next_core: AtomicUsize,
}

impl Workers {
    pub fn enter(&self) {
        self.active.fetch_add(1, Ordering::AcqRel);
    }

    pub fn leave(&self) {
        self.active.fetch_sub(1, Ordering::AcqRel);
    }

    /// Leaves (and returns true) if more workers run than the limit allows: one step, so two
    /// workers can never both retire below the limit.
    pub fn retire_if_over(&self) -> bool {
        let limit = self.limit.load(Ordering::Acquire);
        self.active.fetch_update(Ordering::AcqRel, Ordering::Acquire, |a| (a > limit).then(|| a - 1)).is_ok()
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    pub fn active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    pub fn set_limit(&self, n: usize) {
        self.limit.store(n, Ordering::Release);
    }

    pub fn next_core(&self, n_cores: usize) -> usize {
        self.next_core.fetch_add(1, Ordering::Relaxed) % n_cores.max(1)
    }
}

/// How many consecutive pieces a worker asks for in its next request: about `SPAN_TARGET` of the
/// rate it last measured (one piece until it measured one), at most `MAX_SPAN_PIECES`, and at
/// most half its share of the pieces nobody took yet, so the last requests of a task are short and
/// no worker finishes long after the others. Pure.
pub fn span_pieces(rate_bytes_per_s: Option<f64>, piece_len_bytes: u64, untaken: u64, workers: usize) -> u64 {
    use crate::limits::{MAX_SPAN_PIECES, SPAN_TARGET};
    let Some(rate) = rate_bytes_per_s else { return 1 };
    let by_rate = (rate * SPAN_TARGET.as_secs_f64() / piece_len_bytes.max(1) as f64) as u64;
    let fair = untaken / (2 * workers.max(1) as u64);
    by_rate.min(fair).clamp(1, MAX_SPAN_PIECES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fast_worker_streams_long_runs_a_slow_one_single_pieces_and_the_tail_is_short() {
        const MIB: u64 = 1024 * 1024;
        // Nothing measured yet: one piece.
        assert_eq!(span_pieces(None, 4 * MIB, 255, 1), 1);
        // Loopback at ~1 GB/s, a 1 GiB task just begun: the cap (64 MiB).
        assert_eq!(span_pieces(Some(1e9), 4 * MIB, 250, 1), crate::limits::MAX_SPAN_PIECES);
        // 100 MB/s: 25 MB in 250 ms = 5 whole pieces.
        assert_eq!(span_pieces(Some(100e6), 4 * MIB, 250, 2), 5);
        // A 25 MiB/s per-connection cap: one piece at a time.
        assert_eq!(span_pieces(Some(25.0 * MIB as f64), 4 * MIB, 100, 32), 1);
        // Near the end: 12 pieces left for 2 workers, at most 3 each; then 1.
        assert_eq!(span_pieces(Some(1e9), 4 * MIB, 12, 2), 3);
        assert_eq!(span_pieces(Some(1e9), 4 * MIB, 3, 2), 1);
        assert_eq!(span_pieces(Some(1e9), 4 * MIB, 0, 0), 1);
    }

    /// Feeds `rates` (bytes/s measured at each successive limit) and returns the steps.
    fn run(max: usize, rates: &[f64]) -> (Vec<Step>, usize) {
        let mut r = Ramp::new(1, max);
        let steps = rates.iter().map(|rate| r.observe(*rate)).collect();
        (steps, r.limit())
    }

    #[test]
    fn uncapped_origin_settles_at_the_count_that_last_paid() {
        // 1 → 2 workers gave nothing: back to 1 and rest.
        let (steps, limit) = run(8, &[1000.0, 1050.0, 5000.0]);
        assert_eq!(steps, vec![Step::Grow(2), Step::Settle(1), Step::Hold]);
        assert_eq!(limit, 1);
        // 1 → 2 paid (1.5×), 2 → 4 did not: back to 2.
        let (steps, limit) = run(8, &[1000.0, 1500.0, 1600.0]);
        assert_eq!(steps, vec![Step::Grow(2), Step::Grow(4), Step::Settle(2)]);
        assert_eq!(limit, 2);
    }

    #[test]
    fn after_a_rest_the_ramp_probes_again_from_where_it_stepped_back() {
        let mut r = Ramp::new(1, 8);
        assert_eq!(r.observe(100.0), Step::Grow(2));
        // Noise: the doubling looked useless.
        assert_eq!(r.observe(100.0), Step::Settle(1));
        for _ in 1..RAMP_REST_WINDOWS {
            assert_eq!(r.observe(100.0), Step::Hold);
        }
        // The rest is over: double again, and this time it pays (by 1.5×, not linearly: doubling
        // again), so keep going.
        assert_eq!(r.observe(100.0), Step::Grow(2));
        assert_eq!(r.observe(150.0), Step::Grow(4));
        assert_eq!(r.observe(225.0), Step::Grow(8));
        assert_eq!(r.observe(340.0), Step::Hold);
        assert_eq!(r.limit(), 8);
    }

    #[test]
    fn capped_origin_grows_to_the_max_and_holds() {
        // Each connection adds a full connection's rate: after two linear doublings the steps are
        // ×4, so 32 is reached in four windows.
        let (steps, limit) = run(32, &[25.0, 50.0, 100.0, 400.0, 800.0, 800.0]);
        assert_eq!(steps, vec![Step::Grow(2), Step::Grow(4), Step::Grow(16), Step::Grow(32), Step::Hold, Step::Hold]);
        assert_eq!(limit, 32);
        // A max that is not a power of two is reached, never passed.
        let (steps, limit) = run(6, &[25.0, 50.0, 100.0, 150.0]);
        assert_eq!(steps, vec![Step::Grow(2), Step::Grow(4), Step::Grow(6), Step::Hold]);
        assert_eq!(limit, 6);
    }

    #[test]
    fn a_step_that_pays_but_not_linearly_goes_on_doubling_and_a_big_step_that_fails_steps_back() {
        // 4 → 16 paid 1.6× (more than RAMP_GAIN, far from the 4× of a per-connection cap): the
        // next step is ×2 again, and 32 gaining nothing steps back to 16.
        let (steps, limit) = run(64, &[25.0, 50.0, 100.0, 160.0, 170.0]);
        assert_eq!(steps, vec![Step::Grow(2), Step::Grow(4), Step::Grow(16), Step::Grow(32), Step::Settle(16)]);
        assert_eq!(limit, 16);
        // One linear doubling alone (noise can fake one) does not speed the ramp up.
        let (steps, _) = run(64, &[25.0, 50.0, 70.0]);
        assert_eq!(steps, vec![Step::Grow(2), Step::Grow(4), Step::Grow(8)]);
        // A ×4 step that gained nothing goes back to where it started, and the probe after the
        // rest is a doubling.
        let mut r = Ramp::new(1, 64);
        assert_eq!(r.observe(25.0), Step::Grow(2));
        assert_eq!(r.observe(50.0), Step::Grow(4));
        assert_eq!(r.observe(100.0), Step::Grow(16));
        assert_eq!(r.observe(110.0), Step::Settle(4));
        for _ in 1..RAMP_REST_WINDOWS {
            assert_eq!(r.observe(100.0), Step::Hold);
        }
        assert_eq!(r.observe(100.0), Step::Grow(8));
    }

    #[test]
    fn a_settled_ramp_and_a_max_of_one_never_change() {
        let (steps, limit) = run(1, &[10.0, 100.0]);
        assert_eq!(steps, vec![Step::Hold, Step::Hold]);
        assert_eq!(limit, 1);
        let mut r = Ramp::new(4, 8);
        r.settle();
        assert_eq!(r.observe(1e9), Step::Hold);
        assert_eq!(r.limit(), 4);
    }

    #[test]
    fn workers_over_the_limit_retire_one_at_a_time() {
        let w = Workers::default();
        w.set_limit(2);
        for _ in 0..3 {
            w.enter();
        }
        assert!(w.retire_if_over(), "3 running, limit 2: one retires");
        assert!(!w.retire_if_over(), "2 running, limit 2: nobody else");
        w.set_limit(1);
        assert!(w.retire_if_over());
        assert!(!w.retire_if_over());
    }
}
