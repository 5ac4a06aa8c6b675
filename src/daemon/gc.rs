//! The daemon side of storage lifetime: restoring finished tasks at start, listing tasks, and the GC
//! loop that executes the pure planner's (`crate::gc::plan`) evictions every `gcInterval`.
//!
//! Invariant: a task with readers (an export in progress) or still running is never evicted; an
//! evicted task leaves the index before its files are removed, so no new request can be handed a
//! task whose file is disappearing.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::daemon::task::{Spec, State, Task};
use crate::daemon::Shared;
use crate::gc::plan::{self, Policy, TaskView, Usage};
use crate::piece::Layout;

#[derive(Debug, Serialize)]
pub struct TaskInfo {
    pub id: String,
    pub url: String,
    pub len_bytes: Option<u64>,
    pub completed_bytes: u64,
    pub state: &'static str,
    pub last_access_unix_ms: u64,
    pub readers: usize,
}

pub fn list_tasks(shared: &Shared) -> Vec<TaskInfo> {
    shared
        .index
        .values()
        .iter()
        .map(|t| TaskInfo {
            id: t.id.clone(),
            url: t.spec.display_url.clone(),
            len_bytes: t.geometry().map(|g| g.layout.content_len_bytes),
            completed_bytes: t.completed_bytes(),
            state: match t.state() {
                State::Running => "running",
                State::Done => "done",
                State::Failed => "failed",
            },
            last_access_unix_ms: t.last_access_unix_ms.load(Ordering::Acquire),
            readers: t.n_readers.load(Ordering::Acquire),
        })
        .collect()
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
    let (Some(len), true, Ok(url)) = (meta.content_len, meta.is_finished(), url::Url::parse(&meta.url)) else {
        return false;
    };
    let data_path = shared.store.data_path(id);
    if std::fs::metadata(&data_path).map(|m| m.len()).ok() != Some(len) {
        return false;
    }
    let layout = Layout { content_len_bytes: len, piece_len_bytes: meta.piece_len };
    let fetch = crate::source::Fetch { url, headers: Vec::new(), opts: shared.http_opts.clone(), auth: None };
    let spec = Spec { display_url: meta.url.clone(), fetch, digest: meta.digest.clone(), expected_len: Some(len) };
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
        in_use: t.state() == State::Running || t.n_readers.load(Ordering::Acquire) > 0,
    }
}

/// One GC pass: plan, then evict. Returns the number of evicted tasks.
pub fn collect(shared: &Shared) -> usize {
    let tasks = shared.index.values();
    let views: Vec<TaskView> = tasks.iter().map(|t| view(t)).collect();
    let plan = plan::plan(&views, usage(shared), SystemTime::now(), &policy(shared));
    let mut n = 0;
    for ev in &plan.evictions {
        let Some(task) = tasks.iter().find(|t| t.id == ev.id) else {
            continue;
        };
        if shared.index.remove_if_same(&task.id, task) {
            let _ = shared.store.remove_task(&task.id);
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

pub async fn run_loop(shared: Arc<Shared>) {
    let interval = shared.config.gc_interval.max(Duration::from_millis(100));
    loop {
        compio::time::sleep(interval).await;
        if shared.shutting_down.load(Ordering::Acquire) {
            return;
        }
        collect(&shared);
    }
}
