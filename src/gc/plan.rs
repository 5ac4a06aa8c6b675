//! Pure GC planner: given a snapshot of the cache (tasks, filesystem usage) and the storage policy,
//! decide which tasks to evict and why. It never touches the disk; the GC loop executes the plan.
//!
//! Invariants of every plan: a task in use (downloading, being read or exported) is never evicted;
//! a task id appears at most once; the order is deterministic for a given input (expired tasks
//! first, then quota, then disk percentage, each least recently used first, ties broken by id).

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, SystemTime};

/// What the planner needs to know about one task; the GC loop builds these from the task index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskView {
    pub id: String,
    /// Bytes the task occupies on disk. The disk-percent step assumes removing the task frees
    /// exactly this much, so the caller should pass 0 for a file whose inode is still held by a
    /// hard-linked export (removing the cache name frees nothing then).
    pub len_bytes: u64,
    pub last_access: SystemTime,
    pub finished: bool,
    /// Active download, open reader or export: never evicted.
    pub in_use: bool,
}

/// Usage of the filesystem holding the data dir (from statvfs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub fs_total_bytes: u64,
    pub fs_used_bytes: u64,
}

/// The storage policy, resolved from `taskExpireTime`, `diskGCThreshold`, `diskGCThresholdPercent`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Idle time since last access after which a task expires.
    pub task_expire_time: Duration,
    /// Byte quota over all tasks; 0 = off.
    pub disk_gc_threshold_bytes: u64,
    /// Highest allowed used percentage of the filesystem; 0, >= 100 (or NaN) = off.
    pub disk_gc_threshold_percent: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Expired,
    Quota,
    DiskPercent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    pub id: String,
    pub reason: Reason,
    pub len_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub evictions: Vec<Eviction>,
    /// Bytes still over the quota after evicting everything evictable (in-use or unfinished tasks
    /// hold the rest); 0 when the quota is met or off.
    pub quota_shortfall_bytes: u64,
    /// Bytes still over the disk-percent limit after evicting everything evictable.
    pub disk_shortfall_bytes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdmitErrorKind {
    /// The task alone is larger than the whole quota: no eviction can make room.
    LargerThanQuota,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmitError {
    pub kind: AdmitErrorKind,
    pub new_len_bytes: u64,
    pub quota_bytes: u64,
}

impl fmt::Display for AdmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            AdmitErrorKind::LargerThanQuota => write!(
                f,
                "task of {} bytes is larger than the storage quota diskGCThreshold={} bytes; \
                 raise storage.diskGCThreshold or set it to 0",
                self.new_len_bytes, self.quota_bytes
            ),
        }
    }
}

impl std::error::Error for AdmitError {}

/// Admission check for a new task of known length. Only the quota can reject: anything that fits
/// the quota can be made room for by eviction, so the current fill level does not matter here.
pub fn admit(new_len_bytes: u64, policy: &Policy) -> Result<(), AdmitError> {
    let quota_bytes = policy.disk_gc_threshold_bytes;
    if quota_bytes != 0 && new_len_bytes > quota_bytes {
        return Err(AdmitError { kind: AdmitErrorKind::LargerThanQuota, new_len_bytes, quota_bytes });
    }
    Ok(())
}

/// Plans one GC round. See the module doc for the invariants; steps run in order and each sees
/// the evictions planned by the steps before it.
pub fn plan(tasks: &[TaskView], usage: Usage, now: SystemTime, policy: &Policy) -> Plan {
    let mut state = State {
        lru: lru_order(tasks),
        planned_ids: HashSet::new(),
        planned: vec![false; tasks.len()],
        evictions: Vec::new(),
        tasks,
    };
    plan_expired(&mut state, now, policy.task_expire_time);
    let quota_shortfall_bytes = plan_quota(&mut state, policy.disk_gc_threshold_bytes);
    let disk_shortfall_bytes = plan_disk_percent(&mut state, usage, policy.disk_gc_threshold_percent);
    Plan { evictions: state.evictions, quota_shortfall_bytes, disk_shortfall_bytes }
}

/// Planning state shared by the three steps.
struct State<'a> {
    tasks: &'a [TaskView],
    /// Indexes into `tasks`, least recently used first, ties by id (then index, for duplicates).
    lru: Vec<usize>,
    planned: Vec<bool>,
    /// Guards "at most once per id" even if the caller passes duplicate ids.
    planned_ids: HashSet<&'a str>,
    evictions: Vec<Eviction>,
}

impl<'a> State<'a> {
    /// Plans the eviction of `tasks[idx]` unless it (or its id) is already planned or in use.
    /// Returns whether it was added.
    fn evict(&mut self, idx: usize, reason: Reason) -> bool {
        let task = &self.tasks[idx];
        if task.in_use || self.planned[idx] || !self.planned_ids.insert(task.id.as_str()) {
            return false;
        }
        self.planned[idx] = true;
        self.evictions.push(Eviction { id: task.id.clone(), reason, len_bytes: task.len_bytes });
        true
    }

    /// Finished, not in use, not yet planned: what the size-driven steps may take.
    fn size_evictable(&self, idx: usize) -> bool {
        let task = &self.tasks[idx];
        task.finished && !task.in_use && !self.planned[idx]
    }

    fn remaining_bytes(&self) -> u64 {
        self.tasks
            .iter()
            .zip(&self.planned)
            .filter(|(_, planned)| !**planned)
            .fold(0u64, |sum, (task, _)| sum.saturating_add(task.len_bytes))
    }

    fn planned_bytes(&self) -> u64 {
        self.evictions.iter().fold(0u64, |sum, e| sum.saturating_add(e.len_bytes))
    }
}

fn lru_order(tasks: &[TaskView]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&tasks[a], &tasks[b]);
        ta.last_access.cmp(&tb.last_access).then_with(|| ta.id.cmp(&tb.id)).then(a.cmp(&b))
    });
    order
}

/// Step 1: every idle task past its expiry goes, finished or not (an unfinished one is a stale
/// half download nobody resumed). A last access in the future (clock skew) is not expired.
fn plan_expired(state: &mut State<'_>, now: SystemTime, expire: Duration) {
    for pos in 0..state.lru.len() {
        let idx = state.lru[pos];
        let expired = match now.duration_since(state.tasks[idx].last_access) {
            Ok(idle) => idle > expire,
            Err(_) => false,
        };
        if expired {
            state.evict(idx, Reason::Expired);
        }
    }
}

/// Step 2: bring the bytes of all remaining tasks within the quota. Returns the shortfall.
fn plan_quota(state: &mut State<'_>, quota_bytes: u64) -> u64 {
    if quota_bytes == 0 {
        return 0;
    }
    let mut total_bytes = state.remaining_bytes();
    for pos in 0..state.lru.len() {
        if total_bytes <= quota_bytes {
            break;
        }
        let idx = state.lru[pos];
        if state.size_evictable(idx) && state.evict(idx, Reason::Quota) {
            total_bytes = total_bytes.saturating_sub(state.tasks[idx].len_bytes);
        }
    }
    total_bytes.saturating_sub(quota_bytes)
}

/// Step 3: bring the filesystem's used percentage under the limit, counting every planned
/// eviction (including the earlier steps') as freed bytes. Returns the shortfall.
fn plan_disk_percent(state: &mut State<'_>, usage: Usage, percent: f64) -> u64 {
    let Some(allowed_bytes) = allowed_used_bytes(usage.fs_total_bytes, percent) else {
        return 0;
    };
    let mut used_bytes = usage.fs_used_bytes.saturating_sub(state.planned_bytes());
    for pos in 0..state.lru.len() {
        if used_bytes <= allowed_bytes {
            break;
        }
        let idx = state.lru[pos];
        if state.size_evictable(idx) && state.evict(idx, Reason::DiskPercent) {
            used_bytes = used_bytes.saturating_sub(state.tasks[idx].len_bytes);
        }
    }
    used_bytes.saturating_sub(allowed_bytes)
}

/// Highest used byte count that keeps `used/total*100 <= percent`, or None when the check is off.
/// For an integer `used`, `used > total*percent/100` iff `used > floor(total*percent/100)`, so
/// flooring loses nothing; f64 is exact for totals below 2^53 bytes (8 PiB).
fn allowed_used_bytes(total_bytes: u64, percent: f64) -> Option<u64> {
    if percent.is_nan() || percent <= 0.0 || percent >= 100.0 || total_bytes == 0 {
        return None;
    }
    // The float-to-int cast saturates; the product is below total_bytes anyway.
    Some((total_bytes as f64 * percent / 100.0).floor() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: u64 = 3600;
    const EXPIRE: Duration = Duration::from_secs(6 * HOUR);

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)
    }

    /// A task idle for `idle_secs` (negative = last access in the future).
    fn task(id: &str, len_bytes: u64, idle_secs: i64, finished: bool, in_use: bool) -> TaskView {
        let last_access = if idle_secs >= 0 {
            now() - Duration::from_secs(idle_secs as u64)
        } else {
            now() + Duration::from_secs(idle_secs.unsigned_abs())
        };
        TaskView { id: id.to_string(), len_bytes, last_access, finished, in_use }
    }

    /// Finished, idle, not in use.
    fn done(id: &str, len_bytes: u64, idle_secs: i64) -> TaskView {
        task(id, len_bytes, idle_secs, true, false)
    }

    fn policy(quota_bytes: u64, percent: f64) -> Policy {
        Policy { task_expire_time: EXPIRE, disk_gc_threshold_bytes: quota_bytes, disk_gc_threshold_percent: percent }
    }

    /// Plenty of free disk: the percent step stays quiet unless a case sets its own usage.
    const ROOMY: Usage = Usage { fs_total_bytes: 1_000_000, fs_used_bytes: 0 };

    struct Case {
        name: &'static str,
        tasks: Vec<TaskView>,
        usage: Usage,
        policy: Policy,
        /// Expected (id, reason) in plan order.
        evicted: Vec<(&'static str, Reason)>,
        quota_shortfall_bytes: u64,
        disk_shortfall_bytes: u64,
    }

    fn check(case: Case) {
        let got = plan(&case.tasks, case.usage, now(), &case.policy);
        let got_pairs: Vec<(&str, Reason)> = got.evictions.iter().map(|e| (e.id.as_str(), e.reason)).collect();
        assert_eq!(got_pairs, case.evicted, "{}: evictions", case.name);
        assert_eq!(got.quota_shortfall_bytes, case.quota_shortfall_bytes, "{}: quota shortfall", case.name);
        assert_eq!(got.disk_shortfall_bytes, case.disk_shortfall_bytes, "{}: disk shortfall", case.name);
        // Invariants that hold for every case, whatever it expects.
        let mut seen = HashSet::new();
        for e in &got.evictions {
            assert!(seen.insert(e.id.clone()), "{}: {} planned twice", case.name, e.id);
            let src = case.tasks.iter().find(|t| t.id == e.id).expect("known id");
            assert!(!src.in_use, "{}: in-use {} evicted", case.name, e.id);
            assert_eq!(src.len_bytes, e.len_bytes, "{}: len of {}", case.name, e.id);
        }
    }

    fn base(name: &'static str, tasks: Vec<TaskView>, policy: Policy) -> Case {
        Case { name, tasks, usage: ROOMY, policy, evicted: vec![], quota_shortfall_bytes: 0, disk_shortfall_bytes: 0 }
    }

    #[test]
    fn expiry() {
        use Reason::Expired as E;
        let h = HOUR as i64;
        let cases = vec![
            Case {
                evicted: vec![("old", E)],
                ..base("idle past expiry goes", vec![done("old", 10, 7 * h), done("new", 10, h)], policy(0, 0.0))
            },
            base("exactly at expiry stays", vec![done("edge", 10, 6 * h)], policy(0, 0.0)),
            Case {
                evicted: vec![("edge", E)],
                ..base("one second past expiry goes", vec![done("edge", 10, 6 * h + 1)], policy(0, 0.0))
            },
            Case {
                evicted: vec![("half", E)],
                ..base("stale unfinished download goes", vec![task("half", 10, 7 * h, false, false)], policy(0, 0.0))
            },
            base(
                "in-use expired task stays",
                vec![task("busy", 10, 7 * h, true, true), task("dl", 10, 9 * h, false, true)],
                policy(0, 0.0),
            ),
            base("future last access (clock skew) stays", vec![done("skew", 10, -100 * h)], policy(0, 0.0)),
            Case {
                evicted: vec![("b", E), ("a", E), ("c", E)],
                ..base(
                    "expired listed in LRU order, ties by id",
                    vec![done("c", 1, 8 * h), done("a", 1, 8 * h), done("b", 1, 9 * h)],
                    policy(0, 0.0),
                )
            },
            Case {
                evicted: vec![("zero", E)],
                ..base(
                    "zero expire time: anything idle at all goes",
                    vec![done("zero", 1, 1), done("now", 1, 0)],
                    Policy { task_expire_time: Duration::ZERO, ..policy(0, 0.0) },
                )
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn quota() {
        use Reason::{Expired as E, Quota as Q};
        let h = HOUR as i64;
        let cases = vec![
            base("under quota: nothing", vec![done("a", 40, 3), done("b", 60, 2)], policy(100, 0.0)),
            base("exactly at quota: nothing", vec![done("a", 50, 3), done("b", 50, 2)], policy(100, 0.0)),
            Case {
                evicted: vec![("a", Q)],
                ..base(
                    "over quota: LRU first, stop when within",
                    vec![done("b", 50, 2), done("a", 50, 3), done("c", 50, 1)],
                    policy(100, 0.0),
                )
            },
            Case {
                evicted: vec![("a", Q), ("b", Q)],
                ..base(
                    "evicts several until within",
                    vec![done("a", 60, 5), done("b", 60, 4), done("c", 60, 3)],
                    policy(100, 0.0),
                )
            },
            Case {
                evicted: vec![("b", Q)],
                ..base(
                    "skips in-use and unfinished, takes next LRU",
                    vec![
                        task("busy", 50, 9, true, true),
                        task("dl", 50, 8, false, false),
                        done("b", 50, 7),
                        done("c", 50, 1),
                    ],
                    policy(150, 0.0),
                )
            },
            Case {
                evicted: vec![("old", E)],
                ..base(
                    "expiry already brings it within quota",
                    vec![done("old", 100, 7 * h), done("a", 50, 2), done("b", 50, 1)],
                    policy(100, 0.0),
                )
            },
            Case {
                evicted: vec![("x", Q)],
                ..base(
                    "tie in last access broken by id",
                    vec![done("y", 50, 5), done("x", 50, 5), done("z", 50, 1)],
                    policy(100, 0.0),
                )
            },
            Case {
                evicted: vec![("a", Q)],
                quota_shortfall_bytes: 130,
                ..base(
                    "shortfall when in-use and unfinished tasks hold the rest",
                    vec![done("a", 50, 5), task("busy", 150, 4, true, true), task("dl", 80, 3, false, true)],
                    policy(100, 0.0),
                )
            },
            base("quota 0 is off", vec![done("a", u64::MAX / 2, 5), done("b", u64::MAX / 2, 4)], policy(0, 0.0)),
            Case {
                evicted: vec![("a", Q)],
                ..base(
                    "sums saturate instead of overflowing",
                    vec![done("a", u64::MAX, 5), done("b", 10, 4)],
                    policy(100, 0.0),
                )
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn disk_percent() {
        use Reason::{DiskPercent as D, Expired as E, Quota as Q};
        let h = HOUR as i64;
        let usage = |total, used| Usage { fs_total_bytes: total, fs_used_bytes: used };
        let three = || vec![done("a", 10, 3), done("b", 10, 2), done("c", 10, 1)];
        let cases = vec![
            Case { usage: usage(1000, 950), ..base("at the limit: nothing", three(), policy(0, 95.0)) },
            Case {
                usage: usage(1000, 951),
                evicted: vec![("a", D)],
                ..base("one byte over: LRU goes", three(), policy(0, 95.0))
            },
            Case {
                usage: usage(1000, 965),
                evicted: vec![("a", D), ("b", D)],
                ..base("each eviction counts as freed", three(), policy(0, 95.0))
            },
            Case {
                usage: usage(1000, 1000),
                evicted: vec![("a", D), ("b", D), ("c", D)],
                disk_shortfall_bytes: 20,
                ..base("shortfall when nothing left to evict", three(), policy(0, 95.0))
            },
            Case {
                usage: usage(1000, 960),
                evicted: vec![("old", E)],
                ..base(
                    "bytes planned by expiry count as freed",
                    vec![done("old", 10, 7 * h), done("a", 10, 3)],
                    policy(0, 95.0),
                )
            },
            Case {
                usage: usage(1000, 970),
                evicted: vec![("a", Q), ("b", D)],
                ..base("quota then percent, no id twice", three(), policy(25, 95.0))
            },
            Case {
                usage: usage(1000, 990),
                evicted: vec![("c", D)],
                disk_shortfall_bytes: 30,
                ..base(
                    "in-use and unfinished protected",
                    vec![task("busy", 10, 9, true, true), task("dl", 10, 8, false, false), done("c", 10, 1)],
                    policy(0, 95.0),
                )
            },
            Case { usage: usage(1000, 999), ..base("percent 0 is off", three(), policy(0, 0.0)) },
            Case { usage: usage(1000, 999), ..base("percent 100 is off", three(), policy(0, 100.0)) },
            Case { usage: usage(1000, 999), ..base("percent NaN is off", three(), policy(0, f64::NAN)) },
            Case { usage: usage(0, 0), ..base("zero-size filesystem is skipped", three(), policy(0, 95.0)) },
            Case {
                usage: usage(1000, 5),
                evicted: vec![("a", D)],
                ..base("fractional limit floors", vec![done("a", 5, 2)], policy(0, 0.1))
            },
        ];
        for case in cases {
            check(case);
        }
    }

    #[test]
    fn edge_inputs() {
        check(base("empty input", vec![], policy(100, 95.0)));
        check(Case {
            usage: Usage { fs_total_bytes: 1000, fs_used_bytes: 999 },
            disk_shortfall_bytes: 49,
            ..base("empty input over disk limit reports shortfall", vec![], policy(100, 95.0))
        });
        check(Case {
            evicted: vec![("dup", Reason::Expired)],
            ..base(
                "duplicate ids planned once",
                vec![done("dup", 10, 8 * HOUR as i64), done("dup", 10, 7 * HOUR as i64)],
                policy(0, 0.0),
            )
        });
    }

    #[test]
    fn admission() {
        fn check(len_bytes: u64, quota_bytes: u64, expected: Result<(), AdmitErrorKind>) {
            let got = admit(len_bytes, &policy(quota_bytes, 95.0)).map_err(|e| e.kind);
            assert_eq!(got, expected, "len={len_bytes} quota={quota_bytes}");
        }
        check(0, 0, Ok(()));
        check(u64::MAX, 0, Ok(()));
        check(100, 100, Ok(()));
        check(99, 100, Ok(()));
        check(101, 100, Err(AdmitErrorKind::LargerThanQuota));
        check(u64::MAX, 1, Err(AdmitErrorKind::LargerThanQuota));
    }
}
