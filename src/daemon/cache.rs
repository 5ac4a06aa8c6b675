//! The cache's lifecycle on the daemon side: restoring tasks at start, admitting a new task against
//! the quota, the GC loop that executes the pure planner's (`crate::gc::plan`) evictions every
//! `gcInterval`, eviction and removal of one task, parking running tasks at stop, and listing.
//! A finished task nobody reads rests in its compact `Resting` state outside the live index
//! (`rest`), and comes back as a full `Task` when a request wants it (`live_task`).
//!
//! Invariant: a task with readers (an export in progress) or still running is never evicted; an
//! evicted task leaves the index before its files are removed, so no new request can be handed a
//! task whose file is disappearing. An id is live, resting or parked (live and resting both only
//! for the instant of a move, inside its rest lock), and
//! `Shared::cache_bytes` is the sum of the lengths of all three: every way in or out updates it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::clock::now_unix_ms;
use crate::daemon::access;
use crate::daemon::caller::Caller;
use crate::daemon::serving::blocking;
use crate::daemon::shared::Shared;
use crate::daemon::task::{Resting, Spec, State, Task};
use crate::gc::plan::{self, Policy, TaskView, Usage};
use crate::piece::Layout;
use crate::proto::{TaskInfo, TaskState};

/// The tasks `caller` may see (`access::sees`): every task for root and the daemon's user, only
/// its own for anyone else. Parked tasks (left by an earlier run) were asked for by nobody since
/// the daemon started, so only root and the daemon's user see them.
pub fn list_tasks(shared: &Shared, caller: &Caller) -> Vec<TaskInfo> {
    let nobody = crate::daemon::requesters::Noted::default();
    let parked = shared.partial.iter().filter(|_| access::sees(caller, &nobody)).map(|e| {
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
    all.extend(shared.rested.iter().filter(|e| access::sees(caller, &e.value().requesters)).map(|e| {
        let r = e.value();
        TaskInfo {
            id: e.key().clone(),
            url: r.url.to_string(),
            len_bytes: Some(r.layout.content_len_bytes),
            completed_bytes: r.layout.content_len_bytes,
            state: TaskState::Done,
            last_access_unix_ms: r.last_access_unix_ms,
            readers: 0,
        }
    }));
    let live = shared.index.values();
    all.extend(live.iter().filter(|t| access::sees(caller, &t.requesters())).map(|t| TaskInfo {
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
        park(shared, meta);
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
    // Public tasks start at rest (nobody reads them yet); private ones stay live with their flag.
    if let Some(resting) = task.to_resting() {
        shared.cache_bytes.fetch_add(len, Ordering::AcqRel);
        shared.rested.insert(id.to_string(), resting);
        return true;
    }
    let (task, created) = shared.index.get_or_create(id, || Arc::new(task));
    if created {
        account(shared, &task);
    }
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

fn resting_view(id: &str, r: &Resting) -> TaskView {
    TaskView {
        id: id.to_string(),
        len_bytes: r.layout.content_len_bytes,
        last_access: UNIX_EPOCH + Duration::from_millis(r.last_access_unix_ms),
        finished: true,
        in_use: false,
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

/// One GC pass: finished tasks nobody reads go to rest, then plan, then evict. Returns the number
/// of evicted tasks.
pub fn collect(shared: &Shared) -> usize {
    for t in shared.index.values() {
        rest(shared, &t);
    }
    let tasks = shared.index.values();
    let mut views: Vec<TaskView> = tasks.iter().map(|t| view(t)).collect();
    views.extend(shared.partial.iter().map(|e| partial_view(e.value())));
    views.extend(shared.rested.iter().map(|e| resting_view(e.key(), e.value())));
    let plan = plan::plan(&views, usage(shared), SystemTime::now(), &policy(shared));
    let mut n = 0;
    for ev in &plan.evictions {
        if unpark(shared, &ev.id).is_some() {
            let _ = shared.store.remove_task(&ev.id);
            tracing::info!(task = %ev.id, reason = ?ev.reason, "gc evicted unfinished task");
            n += 1;
            continue;
        }
        if evict_rested(shared, &ev.id) {
            tracing::info!(task = %ev.id, reason = ?ev.reason, len_bytes = ev.len_bytes, "gc evicted task");
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

/// Admission of a laid-out task: refused outright when larger than the quota; otherwise it joins
/// the cache's running total, and if that crosses the quota a GC pass runs first to make room.
/// O(1): the total is kept by `account`/`unaccount`, never summed over the index.
pub async fn admit(shared: &Arc<Shared>, task: &Task) -> crate::error::Result<()> {
    let Some(g) = task.geometry() else { return Ok(()) };
    let pol = policy(shared);
    plan::admit(g.layout.content_len_bytes, &pol).map_err(|e| crate::error::Error::disk(e.to_string()))?;
    account(shared, task);
    if pol.disk_gc_threshold_bytes > 0 && shared.cache_bytes.load(Ordering::Acquire) > pol.disk_gc_threshold_bytes {
        collect_off_core(shared).await;
    }
    Ok(())
}

/// Counts a laid-out task's length in `Shared::cache_bytes`. Idempotent: the task remembers what
/// it added, so a second call (a streamed task whose length became known late) moves nothing.
pub fn account(shared: &Shared, task: &Task) {
    let len = task.geometry().map(|g| g.layout.content_len_bytes).unwrap_or(0);
    let before = task.accounted_bytes.swap(len, Ordering::AcqRel);
    if len >= before {
        shared.cache_bytes.fetch_add(len - before, Ordering::AcqRel);
    } else {
        shared.cache_bytes.fetch_sub(before - len, Ordering::AcqRel);
    }
}

/// Takes a task that left the index (evicted, removed, failed) out of the total; a second call
/// moves nothing.
pub fn unaccount(shared: &Shared, task: &Task) {
    let before = task.accounted_bytes.swap(0, Ordering::AcqRel);
    shared.cache_bytes.fetch_sub(before, Ordering::AcqRel);
}

/// Parks an unfinished task found at start (its file's bytes count until it is resumed or removed).
fn park(shared: &Shared, meta: crate::storage::meta::TaskMeta) {
    let len = meta.content_len.unwrap_or(0);
    let id = meta.task_id.clone();
    // A task dir is listed once; should an entry exist anyway, its bytes leave with it.
    let _ = unpark(shared, &id);
    shared.partial.insert(id, meta);
    shared.cache_bytes.fetch_add(len, Ordering::AcqRel);
}

/// Removes a parked task's entry (to resume it, evict it or remove it), taking it out of the total.
pub fn unpark(shared: &Shared, id: &str) -> Option<crate::storage::meta::TaskMeta> {
    let meta = shared.partial.remove(id).map(|e| e.value().clone())?;
    shared.cache_bytes.fetch_sub(meta.content_len.unwrap_or(0), Ordering::AcqRel);
    Some(meta)
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
    unaccount(shared, task);
    task.event.notify();
    true
}

/// Removes one task for `caller` (`access::may_remove`: root, or the task's sole requester). A
/// running one is refused unless `force` (then it is failed and its own `drive` cleans up); a
/// finished one is refused while it is being read or exported. A task the caller may not see
/// (`access::sees`) is "no such task" (false), as if it did not exist.
pub fn remove(shared: &Shared, id: &str, force: bool, caller: &Caller) -> crate::error::Result<bool> {
    use crate::error::Error;
    if shared.partial.contains_key(id) {
        // Left by an earlier run: nobody asked for it since, so only root may remove it.
        let nobody = crate::daemon::requesters::Noted::default();
        if !access::sees(caller, &nobody) {
            return Ok(false);
        }
        if unpark(shared, id).is_some() {
            shared.store.remove_task(id)?;
        }
        return Ok(true);
    }
    if let Some(e) = shared.rested.get(id) {
        if !access::sees(caller, &e.value().requesters) {
            return Ok(false);
        }
        access::may_remove(caller, &e.value().requesters)?;
        drop(e);
        if evict_rested(shared, id) {
            return Ok(true);
        }
        // Revived meanwhile: remove the live task below.
    }
    let Some(task) = shared.index.get(id) else { return Ok(false) };
    let requesters = task.requesters();
    if !access::sees(caller, &requesters) {
        return Ok(false);
    }
    access::may_remove(caller, &requesters)?;
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

fn rest_lock<'a>(shared: &'a Shared, id: &str) -> std::sync::MutexGuard<'a, ()> {
    // FNV-1a over the id: task ids are hex digests, any of their bytes spread well.
    let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let lock = &shared.rest_locks[(h % shared.rest_locks.len() as u64) as usize];
    // The lock guards no data of its own (only the order of map operations): a poisoned one is
    // as good as a clean one.
    lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The live task for `id`: found in the index, or revived from its resting state (finished, not
/// to be driven), or made by `make` and inserted (the bool is true: the caller starts its drive).
/// A miss in the index re-checks both maps under the id's rest lock, so of two racing requests
/// for a resting task both get the one revived task, and no request ever misses a task that is
/// moving between the maps.
pub fn live_task(shared: &Shared, id: &str, spec: &Spec, make: impl FnOnce() -> Arc<Task>) -> (Arc<Task>, bool) {
    if let Some(t) = shared.index.get(id) {
        return (t, false);
    }
    let _moving = rest_lock(shared, id);
    if let Some(e) = shared.rested.get(id) {
        let revived =
            Task::revived(id.to_string(), shared.new_peer_id(), spec.clone(), shared.store.data_path(id), e.value());
        // Still counted in `cache_bytes` from its rest: the live task takes that share over.
        revived.accounted_bytes.store(e.value().layout.content_len_bytes, Ordering::Release);
        let (task, _) = shared.index.get_or_create(id, || Arc::new(revived));
        e.remove();
        return (task, false);
    }
    shared.index.get_or_create(id, make)
}

/// Moves a finished task nobody reads to its resting state. Claimed first, like an eviction, so
/// a request still holding the live task can no longer pin it: it looks again and revives the
/// resting one. False (and nothing changes) while it is read, not done, or must stay live.
pub fn rest(shared: &Shared, task: &Arc<Task>) -> bool {
    if task.state() != State::Done || task.n_readers() > 0 {
        return false;
    }
    let Some(resting) = task.to_resting() else { return false };
    {
        let _moving = rest_lock(shared, &task.id);
        if !shared.index.get(&task.id).is_some_and(|t| Arc::ptr_eq(&t, task)) || !task.claim_eviction() {
            return false;
        }
        // Into the resting map before out of the index: a lookup finds it in one or the other.
        shared.rested.insert(task.id.clone(), resting);
        shared.index.remove_if_same(&task.id, task);
    }
    // Its bytes stay in the cache, now on the resting entry.
    task.accounted_bytes.store(0, Ordering::Release);
    task.event.notify();
    true
}

/// Evicts a resting task (nobody reads one): out of the resting map under its rest lock (so it
/// cannot be revived meanwhile), then its files. False when it is not at rest.
pub fn evict_rested(shared: &Shared, id: &str) -> bool {
    let len = {
        let _moving = rest_lock(shared, id);
        match shared.rested.remove(id) {
            Some(e) => e.value().layout.content_len_bytes,
            None => return false,
        }
    };
    shared.cache_bytes.fetch_sub(len, Ordering::AcqRel);
    let _ = shared.store.remove_task(id);
    true
}
