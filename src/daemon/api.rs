//! The socket API: HTTP/1.1 + JSON over the daemon's Unix socket, one request per connection,
//! read by `serving` on the core that owns the connection and routed by `proto::ApiRequest::parse`.
//!
//! Routes (`route`, one `match` on `proto::ApiRequest`): `GET /healthy`, `POST /download` (NDJSON
//! progress stream: `started`, `progress`*, then one `done` or `error`), `POST /batch[?jobs=N]`
//! (a list as a chunked NDJSON body: `daemon::batch`, served in `serve`), `GET /tasks`,
//! `GET /tasks/ID`, `DELETE /tasks/ID[?force=true|1]`, `POST /gc`. Refusals: 400 (malformed
//! request, bad body or `jobs`), 404 (no route, no such task — or one the caller never asked for:
//! a non-root caller's listings hold only its own tasks), 403 (`gc`, or removing a task others
//! asked for too), 409 (a task in use); a connection over the daemon's cap never gets here
//! (`slots`: 503).
//! Invariant: a bad request gets a 4xx with a JSON error and touches no task; a failing download
//! ends its own stream and nothing else.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use compio::net::UnixStream;

use crate::clock::now_unix_ms;
use crate::daemon::caller::{self, Caller};
use crate::daemon::serving::{blocking, read_request_within, respond_json, send_line, write};
use crate::daemon::shared::{BatchJob, Shared};
use crate::daemon::task::{ReaderPin, Spec, State, Task};
use crate::daemon::{access, batch, cache, counters, engine, front};
use crate::error::{Error, Result};
use crate::limits;
use crate::proto::{ApiError, ApiRequest, BatchEvent, DownloadRequest, Event, Evicted, Removed};
use crate::source::Fetch;

fn refusal(message: impl Into<String>) -> ApiError {
    ApiError { error: message.into() }
}

pub async fn serve(shared: Arc<Shared>, mut stream: UnixStream) {
    let caller = match Caller::of_socket(&stream) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!("refusing a client connection: {e}");
            let _ = respond_json(&mut stream, 500, &refusal(e.message)).await;
            return;
        }
    };
    let req = match read_request_within(&mut stream).await {
        Ok(r) => r,
        Err(e) => {
            let _ = respond_json(&mut stream, 400, &refusal(e.message)).await;
            return;
        }
    };
    shared.last_request_unix_ms.store(now_unix_ms(), Ordering::Release);
    let result = match ApiRequest::parse(&req.method, &req.path, &req.body) {
        // Only a batch streams its body; it gets what the head's read took of it.
        Ok(ApiRequest::Batch { jobs }) if req.chunked => {
            batch::serve(&shared, &mut stream, jobs, req.body, &caller).await
        }
        Ok(_) | Err(_) if req.chunked => {
            respond_json(&mut stream, 400, &refusal("only POST /batch takes a chunked body")).await
        }
        Ok(ApiRequest::Batch { .. }) => {
            respond_json(&mut stream, 400, &refusal("POST /batch needs a chunked body of entries")).await
        }
        Ok(api_req) => route(&shared, &mut stream, api_req, &caller).await,
        Err(r) => respond_json(&mut stream, r.status, &refusal(r.message)).await,
    };
    if let Err(e) = result {
        tracing::debug!("client connection ended: {e}");
    }
}

async fn route(shared: &Arc<Shared>, stream: &mut UnixStream, req: ApiRequest, caller: &Caller) -> Result<()> {
    match req {
        // Usually answered by the front door; here when its head came too slowly for the front.
        ApiRequest::Healthy => respond_json(stream, 200, &front::health(shared)).await,
        ApiRequest::Download(req) => download(shared, stream, &req, caller).await,
        // Served in `serve`, where the chunked body is at hand.
        ApiRequest::Batch { .. } => Ok(()),
        // Each caller sees its own tasks (root and the daemon's user: all): `access::sees`.
        ApiRequest::ListTasks => respond_json(stream, 200, &cache::list_tasks(shared, caller)).await,
        ApiRequest::Gc => {
            if let Err(e) = access::may_collect(caller) {
                return respond_json(stream, 403, &refusal(e.message)).await;
            }
            let evicted = cache::collect_off_core(shared).await;
            respond_json(stream, 200, &Evicted { evicted }).await
        }
        ApiRequest::StatTask { id } => match cache::list_tasks(shared, caller).into_iter().find(|t| t.id == id) {
            Some(t) => respond_json(stream, 200, &t).await,
            None => respond_json(stream, 404, &refusal(format!("no task {id}"))).await,
        },
        ApiRequest::RemoveTask { id, force } => {
            let (sh, id2, who) = (shared.clone(), id.clone(), caller.clone());
            match blocking(move || cache::remove(&sh, &id2, force, &who)).await {
                Ok(true) => respond_json(stream, 200, &Removed { removed: id }).await,
                Ok(false) => respond_json(stream, 404, &refusal(format!("no task {id}"))).await,
                Err(e) if e.kind == crate::error::Kind::Denied => respond_json(stream, 403, &refusal(e.message)).await,
                Err(e) => respond_json(stream, 409, &refusal(e.message)).await,
            }
        }
    }
}

/// One event line of a download's stream.
async fn send_event(stream: &mut UnixStream, ev: &Event) -> Result<()> {
    send_line(stream, ev).await
}

async fn download(shared: &Arc<Shared>, stream: &mut UnixStream, req: &DownloadRequest, caller: &Caller) -> Result<()> {
    let head = "HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nConnection: close\r\n\r\n";
    write(stream, head.as_bytes().to_vec()).await?;
    let outcome = run_download(shared, stream, req, caller).await;
    let ev = match outcome {
        Ok(ev) => ev,
        Err(e) => Event::error(e),
    };
    send_event(stream, &ev).await
}

async fn run_download(
    shared: &Arc<Shared>,
    stream: &mut UnixStream,
    req: &DownloadRequest,
    caller: &Caller,
) -> Result<Event> {
    download_to(shared, Some(stream), req, caller).await
}

/// One entry of a batch, on the core it was sent to: a download whose only event is its result,
/// answered on the batch's channel, with the rights of the caller who sent the list.
pub async fn run_batch_job(shared: Arc<Shared>, job: Box<BatchJob>) {
    let BatchJob { entry, caller, reply } = *job;
    let result = download_to(&shared, None, &entry.request, &caller).await.unwrap_or_else(Event::error);
    let _ = reply.send(BatchEvent::Entry { line: entry.line, url: entry.request.url, result });
}

/// A download, streaming `started` and `progress` events to `stream` when there is one.
async fn download_to(
    shared: &Arc<Shared>,
    mut stream: Option<&mut UnixStream>,
    req: &DownloadRequest,
    caller: &Caller,
) -> Result<Event> {
    let started = Instant::now();
    let (spec, id) = prepare(shared, req, caller).await?;
    tracing::info!(
        uid = caller.uid,
        pid = caller.pid,
        task = %id,
        url = %spec.display_url,
        output = req.output.as_deref().unwrap_or("(cache only)"),
        private = spec.private,
        "download requested"
    );
    // The pin keeps the task's file from eviction until OUT is in place.
    let (task, reused, pin) = obtain_task(shared, &id, spec).await?;
    task.note_requester(caller.uid);
    if let Some(stream) = stream.as_deref_mut() {
        send_event(stream, &Event::Started { task: task.id.clone(), peer: task.peer_id.clone() }).await?;
    }
    if !reused {
        follow(&task, stream).await?;
    }
    let method = match &req.output {
        Some(out) => export_as(caller, &task, out).await?.as_str(),
        None => "none",
    };
    let len_bytes = task.geometry().map(|g| g.layout.content_len_bytes).unwrap_or(0);
    // The last reader of a finished task puts it to rest (`cache::rest`): the live task's memory
    // goes back, the cache entry stays.
    drop(pin);
    cache::rest(shared, &task);
    let cost_ms = started.elapsed().as_millis() as u64;
    if reused {
        counters::bump(&counters::CACHE_HITS, 1);
        tracing::info!(target: "PeerTask", peer = %task.peer_id, task = %task.id, component = "PeerTask", uid = caller.uid, "reuse file peer task done, cost: {cost_ms}ms");
    }
    Ok(Event::Done {
        task: task.id.clone(),
        output: req.output.clone().unwrap_or_default(),
        reused,
        export: method.into(),
        len_bytes,
        cost_ms,
    })
}

/// Puts the task's file at `output` with the caller's rights (`caller::as_caller`): the task file
/// is opened as the daemon, everything on OUT's side is done as the caller. A link moves the file's
/// ctime and link count, which is no edit: after a link the job remembers the state it left
/// (`fstat` of the file it held: it needs no rights on the data dir) before it lets go of
/// `Task::links`.
async fn export_as(caller: &Caller, task: &Arc<Task>, output: &str) -> Result<crate::storage::export::Method> {
    let (src, out, t) = (task.data_path.clone(), std::path::PathBuf::from(output), task.clone());
    let open = move || std::fs::File::open(&src).map_err(|e| crate::storage::disk_err(e, &src, "open task file"));
    caller::as_caller(caller, open, move |file, rights| {
        let copy_mode = 0o666 & !rights.umask;
        let (method, links) = crate::storage::export::export_file(&file, &out, true, copy_mode, Some(&t.links))?;
        // Only a new link changed the file's state (a copy or an OUT already linked did not), and
        // that state is recorded while no other export can be half done.
        if let (Some(_links), Ok(now)) = (links, crate::storage::FileIdentity::of_file(&file)) {
            keep_identity_if_same(&t, now);
        }
        Ok(method)
    })
    .await
}

/// Finds or creates the task for `id`. Returns the task, whether it is a cache hit (a finished task
/// whose file was just re-verified), and a pin that keeps its file from eviction until dropped.
async fn obtain_task(shared: &Arc<Shared>, id: &str, spec: Spec) -> Result<(Arc<Task>, bool, ReaderPin)> {
    // Waiting for a failed task's cleanup or for other readers of a task being retired can take a
    // while (a large export); give up only after a deadline, not after a number of wake-ups.
    let deadline = Instant::now() + limits::TASK_RESOLVE_TIMEOUT;
    while Instant::now() < deadline {
        let (task, created) = cache::live_task(shared, id, &spec, || {
            Arc::new(Task::new(id.to_string(), shared.new_peer_id(), spec.clone(), shared.store.data_path(id)))
        });
        // Pinned before anything else: a task being checked for reuse must not look idle to the GC.
        let listener = task.event.listen();
        let Some(pin) = task.pin() else {
            // Claimed for eviction: its entry disappears once its files are gone.
            let _ = compio::time::timeout(limits::FAILED_TASK_CLEANUP_WAIT, listener).await;
            continue;
        };
        drop(listener);
        task.touch();
        if created {
            compio::runtime::spawn(engine::drive(shared.clone(), task.clone())).detach();
            return Ok((task, false, pin));
        }
        match task.state() {
            State::Running => {
                shown_access(&task, &spec).await?;
                return Ok((task, false, pin));
            }
            State::Done if shared.config.storage.multiplex && reusable(&task).await => {
                shown_access(&task, &spec).await?;
                return Ok((task, true, pin));
            }
            // multiplex off, or the cached file failed verification: retire it, then start afresh.
            State::Done => {
                drop(pin);
                retire(shared, &task).await;
            }
            // A failed task is removed by its own `drive`; wait for that, then start afresh. The
            // listener is made after our pin is dropped: dropping a pin notifies.
            State::Failed => {
                drop(pin);
                let listener = task.event.listen();
                if shared.index.get(id).is_some_and(|t| Arc::ptr_eq(&t, &task)) {
                    let _ = compio::time::timeout(limits::FAILED_TASK_CLEANUP_WAIT, listener).await;
                }
            }
        }
    }
    Err(Error::internal(format!(
        "task {id} stayed busy (failing, or being exported by others) for {:?}",
        limits::TASK_RESOLVE_TIMEOUT
    )))
}

/// A private task is shared only with a request whose own credentials the origin accepts; public
/// ones, and requests that proved access while being prepared (ORAS), pass at once.
async fn shown_access(task: &Task, spec: &Spec) -> Result<()> {
    if !task.spec.private || spec.access_shown {
        return Ok(());
    }
    access::revalidate(task, &spec.fetch).await
}

/// A finished task may be linked again only if its file still has the right length and crcs:
/// a hard-linked OUT edited in place would otherwise poison every later download.
async fn reusable(task: &Arc<Task>) -> bool {
    let Some(g) = task.geometry() else {
        return false;
    };
    let (path, crcs, t) = (task.data_path.clone(), task.crcs(), task.clone());
    let check = blocking(move || {
        // O(1): the file is in the state this run last saw (one stat), no export half done.
        let links = t.links.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if keep_identity_if_unchanged(&t) {
            return Ok(());
        }
        // Changed, or never seen by this run (restored after a restart, when a power loss may have
        // kept the record but not the bytes): read it all. The identity is taken before the read,
        // so an edit made during the read is caught by the next hit.
        let before = crate::storage::FileIdentity::of(&path).ok();
        drop(links);
        tracing::info!(task = %t.id, "cache hit reads the whole task file: its state is not the one this run last saw");
        crate::storage::verify_pieces(&path, g.layout, &crcs)?;
        t.set_identity(before);
        Ok(())
    })
    .await;
    match check {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(task = %task.id, "cached task failed verification, downloading again: {e}");
            false
        }
    }
}

/// True (and the current state remembered) when the task file is as this run last saw it.
/// Blocking (one stat).
fn keep_identity_if_unchanged(task: &Task) -> bool {
    crate::storage::FileIdentity::of(&task.data_path).is_ok_and(|now| keep_identity_if_same(task, now))
}

/// True (and `now` remembered) when `now` is the state this run last saw; else the identity is
/// forgotten, so the next hit reads the file. Pure.
fn keep_identity_if_same(task: &Task, now: crate::storage::FileIdentity) -> bool {
    let same = task.identity().is_some_and(|known| known.unchanged_in(&now));
    task.set_identity(same.then_some(now));
    same
}

/// Retires a finished task that cannot be reused (multiplex off, or its file failed verification).
/// Only once nobody reads it: files first, then the index entry, so a new task for the id is only
/// created after the old files are gone. While others still export it, waits briefly instead.
async fn retire(shared: &Arc<Shared>, task: &Arc<Task>) {
    let listener = task.event.listen();
    let (sh, t) = (shared.clone(), task.clone());
    if blocking(move || Ok(cache::evict(&sh, &t))).await.unwrap_or(false) {
        return;
    }
    let _ = compio::time::timeout(limits::FAILED_TASK_CLEANUP_WAIT, listener).await;
}

/// Waits until the task is done (Ok) or failed (Err with the task's error), streaming progress to
/// `stream` when there is one.
async fn follow(task: &Arc<Task>, mut stream: Option<&mut UnixStream>) -> Result<()> {
    let mut last_sent = Instant::now() - Duration::from_secs(1);
    let mut last_bytes = u64::MAX;
    loop {
        let listener = task.event.listen();
        match task.state() {
            State::Done => return Ok(()),
            State::Failed => {
                return Err(task.failure().cloned().unwrap_or_else(|| Error::internal("task failed")));
            }
            State::Running => {}
        }
        let done_bytes = task.completed_bytes();
        let due = done_bytes != last_bytes && last_sent.elapsed() >= limits::PROGRESS_INTERVAL;
        if let Some(stream) = stream.as_deref_mut().filter(|_| due) {
            let total = task.geometry().map(|g| g.layout.content_len_bytes);
            send_event(stream, &Event::Progress { completed_bytes: done_bytes, total_bytes: total }).await?;
            last_sent = Instant::now();
            last_bytes = done_bytes;
        }
        let _ = compio::time::timeout(limits::PROGRESS_INTERVAL, listener).await;
    }
}

/// Turns a request into the task it asks for: `(spec, task id)`. For `oras://` this talks to the
/// registry (manifest, auth) so that the task id can come from the blob digest: two tags of one
/// blob share one cache entry.
async fn prepare(shared: &Shared, req: &DownloadRequest, caller: &Caller) -> Result<(Spec, String)> {
    if req.headers.len() > limits::MAX_REQUEST_HEADERS {
        return Err(Error::client(format!("more than {} request headers", limits::MAX_REQUEST_HEADERS)));
    }
    for (k, v) in &req.headers {
        if !crate::http::codec::valid_header(k, v) {
            return Err(Error::client(format!("invalid header `{k}`")));
        }
        // The daemon owns these: pieces are its ranges, validated against its first response.
        if ["range", "if-range", "if-match", "if-none-match", "if-modified-since", "if-unmodified-since"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
        {
            return Err(Error::client(format!("header `{k}` is set by dfget itself and cannot be given")));
        }
    }
    if let Some(out) = req.output.as_deref().filter(|o| !std::path::Path::new(o).is_absolute()) {
        return Err(Error::client(format!("output path must be absolute: {out}")));
    }
    let digest = req.digest.as_deref().map(crate::digest::Digest::parse_user).transpose()?;
    if req.url.starts_with("oras://") {
        return prepare_oras(shared, req, digest, caller).await;
    }
    let shown = crate::http::redact::redact_url(&req.url).into_owned();
    let url = url::Url::parse(&req.url).map_err(|e| Error::client(format!("invalid URL `{shown}`: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::client(format!("unsupported URL scheme `{}` (http, https, oras)", url.scheme())));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(Error::client(format!("URL has no host: {shown}")));
    }
    let id = crate::storage::task_id::task_id(
        &req.url,
        &req.filter,
        digest.as_ref().map_or("", crate::digest::Digest::as_str),
        &req.tag,
        &req.application,
    );
    let private = access::carries_credentials(&url, &req.headers);
    // Private content (fetched with credentials) never joins the cluster: another peer could not
    // prove it may read it.
    let cluster_id = if private {
        None
    } else {
        crate::p2p::task_id::cluster_task_id(&req.url, &req.filter, &req.tag, &req.application)
    };
    let fetch = Fetch { url, headers: req.headers.clone(), opts: shared.http_opts.clone(), auth: None };
    Ok((Spec { display_url: shown, fetch, digest, expected_len: None, private, access_shown: false, cluster_id }, id))
}

/// The manifest is fetched with the requester's registry credential: the caller's own (sent by
/// the client), and the daemon's config only for root. That request is the requester's proof of
/// access, so an existing task for the blob needs no other check (`access_shown`).
async fn prepare_oras(
    shared: &Shared,
    req: &DownloadRequest,
    digest: Option<crate::digest::Digest>,
    caller: &Caller,
) -> Result<(Spec, String)> {
    use crate::source::RegistryCredential;
    let insecure = &shared.config.oras.insecure_registries;
    let given = req.registry_credential.clone();
    let private = given.is_some() || access::headers_carry_credentials(&req.headers);
    let credential =
        if caller.is_root() { RegistryCredential::GivenOrOwn(given) } else { RegistryCredential::Given(given) };
    let (fetch, layer) = crate::source::oras_fetch(
        &req.url,
        &req.headers,
        &shared.oras_opts,
        insecure,
        digest.as_ref(),
        credential,
        req.platform.as_deref(),
    )
    .await?;
    let id = crate::storage::task_id::task_id(layer.digest.as_str(), &[], "", &req.tag, &req.application);
    let display_url = crate::http::redact::redact_url(&req.url).into_owned();
    let spec = Spec {
        display_url,
        fetch,
        digest: Some(layer.digest),
        expected_len: Some(layer.size),
        private,
        access_shown: true,
        cluster_id: None,
    };
    Ok((spec, id))
}
