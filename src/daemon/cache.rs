//! The cache's lifecycle on the daemon side: restoring tasks at start, admitting a new task against
//! the quota, the GC loop that executes the pure planner's (`crate::gc::plan`) evictions every
//! `gcInterval`, eviction and removal of one task, parking running tasks at stop, and listing.
//!
//! Invariant: a task with readers (an export in progress) or still running is never evicted; an
//! evicted task leaves the index before its files are removed, so no new request can be handed a
//! task whose file is disappearing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::now_unix_ms;
use crate::daemon::access;
use crate::daemon::caller::Caller;
use crate::daemon::serving::blocking;
use crate::daemon::shared::Shared;
use crate::daemon::task::{Spec, State, Task};
use crate::gc::plan::{self, Policy, TaskView, Usage};
use crate::piece::Layout;
use crate::proto::{TaskInfo, TaskState};

pub fn list_tasks(shared: &Shared) -> Vec<TaskInfo> {
    let parked = shared.partial.iter().map(|e| {
        let m = e.value();
        TaskInfo {
            id: m.task_id.clone(),
            url: m.url.clone(),
            len_bytes: m.content_len,
            completed_bytes: 0,
            state: TaskState::Parked,
            last_access_unix_ms: m.last_access_unix_ms,
            readers: 0,
        }
    });
    let mut all: Vec<TaskInfo> = parked.collect();
    all.extend(shared.index.values().iter().map(|t| TaskInfo {
        id: t.id.clone(),
        url: t.spec.display_url.clone(),
        len_bytes: t.geometry().map(|g| g.layout.content_len_bytes),
        completed_bytes: t.completed_bytes(),
        state: match t.state() {
            State::Running => TaskState::Running,
            State::Done => TaskState::Done,
            State::Failed => TaskState::Failed,
        },
        last_access_unix_ms: t.last_access_unix_ms.load(Ordering::Acquire),
        readers: t.n_readers(),
    }));
    all
}

/// Loads finished tasks from their metadata so they are cache hits after a restart. Unfinished or
/// unreadable ones are removed (their data cannot be trusted without the pieces' records).
pub fn restore(shared: &Arc<Shared>) {
    let started = std::time::Instant::now();
    let (mut n_restored, mut n_dropped) = (0usize, 0usize);
    let Ok(fans) = std::fs::read_dir(shared.store.root()) else {
        return;
    };
    for fan in fans.flatten() {
        let Ok(dirs) = std::fs::read_dir(fan.path()) else {
            continue;
        };
        for dir in dirs.flatten() {
            let id = dir.file_name().to_string_lossy().into_owned();
            if restore_one(shared, &id) {
                n_restored += 1;
            } else {
                n_dropped += 1;
                let _ = shared.store.remove_task(&id);
            }
        }
    }
    tracing::info!(
        restored = n_restored,
        dropped = n_dropped,
        cost_ms = started.elapsed().as_millis() as u64,
        "task index restored"
    );
}

fn restore_one(shared: &Arc<Shared>, id: &str) -> bool {
    let meta = match crate::storage::meta::read(&shared.store.meta_path(id)) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(task = id, "dropping task with unusable metadata: {e}");
            return false;
        }
    };
    let (Some(len), Ok(url)) = (meta.content_len, url::Url::parse(&meta.url)) else {
        return false;
    };
    let data_path = shared.store.data_path(id);
    if std::fs::metadata(&data_path).map(|m| m.len()).ok() != Some(len) {
        return false;
    }
    if !meta.is_finished() {
        // Resumed by the next request for this id (engine::resume), expired by the GC otherwise.
        shared.partial.insert(id.to_string(), meta);
        return true;
    }
    let layout = Layout { content_len_bytes: len, piece_len_bytes: meta.piece_len };
    let fetch = crate::source::Fetch { url, headers: Vec::new(), opts: shared.http_opts.clone(), auth: None };
    let spec = Spec {
        display_url: meta.url.clone(),
        fetch,
        digest: meta.digest.clone(),
        expected_len: Some(len),
        private: meta.private,
        access_shown: false,
        cluster_id: None,
    };
    let task = Task::finished(id.to_string(), shared.new_peer_id(), spec, data_path, layout, &meta.piece_crcs);
    task.last_access_unix_ms.store(meta.last_access_unix_ms, Ordering::Release);
    shared.index.get_or_create(id, || Arc::new(task));
    true
}

fn policy(shared: &Shared) -> Policy {
    let s = &shared.config.storage;
    Policy {
        task_expire_time: s.task_expire_time,
        disk_gc_threshold_bytes: s.disk_gc_threshold_bytes,
        disk_gc_threshold_percent: s.disk_gc_threshold_percent,
    }
}

fn usage(shared: &Shared) -> Usage {
    match rustix::fs::statvfs(shared.store.root()) {
        Ok(st) => {
            let total = st.f_blocks * st.f_frsize;
            let free = st.f_bavail * st.f_frsize;
            Usage { fs_total_bytes: total, fs_used_bytes: total.saturating_sub(free) }
        }
        Err(_) => Usage { fs_total_bytes: 0, fs_used_bytes: 0 },
    }
}

fn view(t: &Task) -> TaskView {
    TaskView {
        id: t.id.clone(),
        len_bytes: t.geometry().map(|g| g.layout.content_len_bytes).unwrap_or(0),
        last_access: UNIX_EPOCH + Duration::from_millis(t.last_access_unix_ms.load(Ordering::Acquire)),
        finished: t.state() == State::Done,
        // Failed tasks belong to their `drive` until it has removed them: never the GC's.
        in_use: t.state() != State::Done || t.n_readers() > 0,
    }
}

fn partial_view(m: &crate::storage::meta::TaskMeta) -> TaskView {
    TaskView {
        id: m.task_id.clone(),
        len_bytes: m.content_len.unwrap_or(0),
        last_access: UNIX_EPOCH + Duration::from_millis(m.last_access_unix_ms),
        finished: false,
        in_use: false,
    }
}

/// One GC pass: plan, then evict. Returns the number of evicted tasks.
pub fn collect(shared: &Shared) -> usize {
    let tasks = shared.index.values();
    let mut views: Vec<TaskView> = tasks.iter().map(|t| view(t)).collect();
    views.extend(shared.partial.iter().map(|e| partial_view(e.value())));
    let plan = plan::plan(&views, usage(shared), SystemTime::now(), &policy(shared));
    let mut n = 0;
    for ev in &plan.evictions {
        if shared.partial.remove(&ev.id).is_some() {
            let _ = shared.store.remove_task(&ev.id);
            tracing::info!(task = %ev.id, reason = ?ev.reason, "gc evicted unfinished task");
            n += 1;
            continue;
        }
        let Some(task) = tasks.iter().find(|t| t.id == ev.id) else { continue };
        // A reader may have pinned it since the plan was made: then it stays.
        if evict(shared, task) {
            tracing::info!(task = %task.id, reason = ?ev.reason, len_bytes = ev.len_bytes, "gc evicted task");
            n += 1;
        }
    }
    if plan.quota_shortfall_bytes > 0 || plan.disk_shortfall_bytes > 0 {
        tracing::warn!(
            quota_shortfall_bytes = plan.quota_shortfall_bytes,
            disk_shortfall_bytes = plan.disk_shortfall_bytes,
            "gc could not get under its limits: the rest is in use"
        );
    }
    n
}

/// Runs GC every `gcInterval`, and watches the idle clock: with `aliveTime` set (or 5 minutes for a
/// daemon that `dfget` spawned), the daemon stops itself after that long with no request and no
/// running task.
pub async fn run_loop(shared: Arc<Shared>) {
    let gc_interval = shared.config.gc_interval.max(Duration::from_millis(100));
    let tick = gc_interval.min(Duration::from_secs(1));
    let alive = alive_time(&shared);
    let mut since_gc = Duration::ZERO;
    loop {
        compio::time::sleep(tick).await;
        if shared.shutting_down.load(Ordering::Acquire) {
            return;
        }
        since_gc += tick;
        if since_gc >= gc_interval {
            since_gc = Duration::ZERO;
            collect_off_core(&shared).await;
        }
        if let Some(limit) = alive {
            let idle_ms = now_unix_ms().saturating_sub(shared.last_request_unix_ms.load(Ordering::Acquire));
            let running = shared.index.values().iter().any(|t| t.state() == State::Running);
            if !running && Duration::from_millis(idle_ms) >= limit {
                tracing::info!(idle_ms, "no request for aliveTime ({limit:?}): stopping");
                // The main thread's sigwait turns this into the normal shutdown path.
                // SAFETY: kill(2) on our own pid with a signal we handle synchronously.
                unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
                return;
            }
        }
    }
}

fn alive_time(shared: &Shared) -> Option<Duration> {
    let configured = shared.config.alive_time;
    if !configured.is_zero() {
        return Some(configured);
    }
    std::env::var_os("DFGET_SPAWNED").map(|_| crate::limits::SPAWNED_ALIVE_TIME)
}

/// Admission of a new task of `len_bytes`: refused outright when larger than the quota; otherwise,
/// if it would push the cache over the quota, a GC pass runs first to make room.
pub async fn admit(shared: &Arc<Shared>, len_bytes: u64) -> crate::error::Result<()> {
    let pol = policy(shared);
    plan::admit(len_bytes, &pol).map_err(|e| crate::error::Error::disk(e.to_string()))?;
    if pol.disk_gc_threshold_bytes > 0 {
        let used: u64 =
            shared.index.values().iter().filter_map(|t| t.geometry()).map(|g| g.layout.content_len_bytes).sum();
        if used.saturating_add(len_bytes) > pol.disk_gc_threshold_bytes {
            collect_off_core(shared).await;
        }
    }
    Ok(())
}

/// A GC pass on the blocking pool: directory removals must not stall a core's IO.
pub async fn collect_off_core(shared: &Arc<Shared>) -> usize {
    let shared = shared.clone();
    blocking(move || Ok(collect(&shared))).await.unwrap_or(0)
}

/// At shutdown (cores stopped): record each running task's pieces so the next start resumes it.
pub fn park_all(shared: &Shared) {
    let mut n = 0;
    for task in shared.index.values() {
        if task.state() != State::Running || !task.geometry().is_some_and(|g| g.ranged) {
            continue;
        }
        let meta = task.to_meta();
        match crate::storage::persist_meta(&shared.store.meta_path(&task.id), &meta) {
            Ok(()) => n += 1,
            Err(e) => tracing::warn!(task = %task.id, "cannot park task: {e}"),
        }
    }
    tracing::info!(parked = n, "unfinished tasks parked for resume");
}

/// Evicts a finished task nobody reads: claims it (pins fail from then on), removes its files,
/// then its index entry. False when it is pinned or already claimed.
pub fn evict(shared: &Shared, task: &Arc<Task>) -> bool {
    // Done is terminal, so checking it before the claim cannot race; a failed task is its own
    // `drive`'s to clean up, a running one is not finished.
    if task.state() != State::Done || !task.claim_eviction() {
        return false;
    }
    if let Some(node) = &shared.p2p {
        node.forget(task);
    }
    let _ = shared.store.remove_task(&task.id);
    shared.index.remove_if_same(&task.id, task);
    task.event.notify();
    true
}

/// Removes one task for `caller` (`access::may_remove`: root, or the task's sole requester). A
/// running one is refused unless `force` (then it is failed and its own `drive` cleans up); a
/// finished one is refused while it is being read or exported.
pub fn remove(shared: &Shared, id: &str, force: bool, caller: &Caller) -> crate::error::Result<bool> {
    use crate::error::Error;
    if shared.partial.contains_key(id) {
        // Left by an earlier run: nobody asked for it since, so only root may remove it.
        access::may_remove(caller, None)?;
        if shared.partial.remove(id).is_some() {
            shared.store.remove_task(id)?;
        }
        return Ok(true);
    }
    let Some(task) = shared.index.get(id) else { return Ok(false) };
    access::may_remove(caller, task.sole_requester())?;
    if task.state() == State::Running {
        if !force {
            return Err(Error::client(format!("task {id} is running; use --force to cancel and remove it")));
        }
        if task.fail(Error::client("task removed by an operator")) {
            return Ok(true);
        }
        // It finished meanwhile: remove it like any finished task.
    }
    if task.state() == State::Failed {
        return Ok(true); // its drive is removing it
    }
    if !evict(shared, &task) {
        return Err(Error::client(format!("task {id} is being read or exported right now; try again")));
    }
    Ok(true)
}
