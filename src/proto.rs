//! The socket wire: every type that crosses the process boundary between `dfget` and its daemon
//! (requests, the NDJSON events of a download, task listings, answers of the control routes), and
//! `ApiRequest::parse`, the one router from an HTTP request line and body to a closed set of
//! requests. Both `client/` and `daemon/` import this module; neither imports the other.
//!
//! Invariant: `parse` is pure (bytes in, a request or a refusal out) and total: any method, path
//! and body give a value, never a panic; `ApiRequest::target` renders what `parse` reads back.

use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Kind, Source};

/// What `dfget` sends to start a download.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DownloadRequest {
    pub url: String,
    /// Absolute path; the client resolves it against its working directory. `None` = into the
    /// cache only (`dfget prefetch`).
    #[serde(default)]
    pub output: Option<String>,
    #[serde(default)]
    pub digest: Option<String>,
    #[serde(default)]
    pub tag: String,
    #[serde(default)]
    pub application: String,
    #[serde(default)]
    pub filter: Vec<String>,
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// For `oras://`: the registry's entry in the caller's own docker / Apptainer config, read by
    /// the client (which runs as the caller). The daemon's own config serves root only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_credential: Option<crate::source::oras::creds::Credential>,
    /// `oras://` only: the index platform, `os/arch[/variant]`; None = the host's.
    #[serde(default)]
    pub platform: Option<String>,
}

/// One NDJSON line of a download's progress stream.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        task: String,
        peer: String,
    },
    Progress {
        completed_bytes: u64,
        total_bytes: Option<u64>,
    },
    Done {
        task: String,
        output: String,
        reused: bool,
        export: String,
        len_bytes: u64,
        cost_ms: u64,
    },
    /// The download failed: where (`source`), what kind of failure (`kind`: integrity, timeout,
    /// an HTTP status...), and whether trying again could help.
    Error {
        source: Source,
        #[serde(default)]
        kind: Kind,
        retryable: bool,
        message: String,
    },
}

impl Event {
    pub fn error(e: crate::error::Error) -> Event {
        Event::Error { source: e.source, kind: e.kind, retryable: e.retryable, message: e.message }
    }
}

/// One entry of a list (`POST /batch`, one per NDJSON line of its chunked body): the list's line
/// number, for messages, and the download it asks for.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct BatchEntry {
    pub line: u64,
    pub request: DownloadRequest,
}

/// One NDJSON line of the answer to `POST /batch`. Every entry sent gets exactly one `Entry`,
/// carrying its line and URL, so the client needs to remember nothing about what it sent.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BatchEvent {
    /// One entry finished: `result` is the `done` or `error` a single download ends with.
    Entry { line: u64, url: String, result: Event },
    /// Every entry has answered. `error`: the request body broke off or was malformed.
    End { entries: u64, error: Option<String> },
}

/// A task's state as `dfget tasks` shows it. `Parked` = unfinished, found on disk at start and
/// waiting for a request to resume it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Parked,
    Running,
    Done,
    Failed,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Parked => "parked",
            TaskState::Running => "running",
            TaskState::Done => "done",
            TaskState::Failed => "failed",
        }
    }
}

/// One row of `GET /tasks` (and the answer of `GET /tasks/ID`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: String,
    pub url: String,
    pub len_bytes: Option<u64>,
    pub completed_bytes: u64,
    pub state: TaskState,
    pub last_access_unix_ms: u64,
    pub readers: usize,
}

/// The answer of `GET /healthy`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Health {
    pub ok: bool,
    pub driver: String,
    pub cores: usize,
    pub tasks: usize,
}

/// The body of every refused request (4xx) on the control routes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiError {
    pub error: String,
}

/// The answer of `DELETE /tasks/ID`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Removed {
    pub removed: String,
}

/// The answer of `POST /gc`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Evicted {
    pub evicted: usize,
}

/// Every request the socket API serves: a closed set, so the router is one `match`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiRequest {
    /// `GET /healthy`
    Healthy,
    /// `POST /download` with a JSON `DownloadRequest`; answered with an NDJSON event stream.
    Download(DownloadRequest),
    /// `POST /batch[?jobs=N]` with a chunked NDJSON body of `BatchEntry` lines, read by the route
    /// as it goes; answered with one `BatchEvent` line per entry. `jobs`: entries in flight.
    Batch { jobs: Option<usize> },
    /// `GET /tasks`
    ListTasks,
    /// `GET /tasks/ID`
    StatTask { id: String },
    /// `DELETE /tasks/ID[?force=true]`
    RemoveTask { id: String, force: bool },
    /// `POST /gc`
    Gc,
}

/// Why a request was not understood: the HTTP status to answer with and a message for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub message: String,
}

impl ApiRequest {
    /// The router: method, request target (path and query) and body → a request, or the 4xx
    /// answer for it. Pure, so it is table-tested and fuzzed.
    pub fn parse(method: &str, target: &str, body: &[u8]) -> Result<ApiRequest, Refusal> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let force = query.split('&').any(|kv| kv == "force=true" || kv == "force=1");
        let task_id = path.strip_prefix("/tasks/");
        match (method, path, task_id) {
            ("GET", "/healthy", _) => Ok(ApiRequest::Healthy),
            ("POST", "/download", _) => match serde_json::from_slice::<DownloadRequest>(body) {
                // Cache-only fetches come as batch entries; a download without OUT is a mistake.
                Ok(req) if req.output.is_none() => {
                    Err(Refusal { status: 400, message: "bad download request: missing field `output`".into() })
                }
                Ok(req) => Ok(ApiRequest::Download(req)),
                Err(e) => Err(Refusal { status: 400, message: format!("bad download request: {e}") }),
            },
            ("POST", "/batch", _) => batch_jobs(query).map(|jobs| ApiRequest::Batch { jobs }),
            ("GET", "/tasks", _) => Ok(ApiRequest::ListTasks),
            ("POST", "/gc", _) => Ok(ApiRequest::Gc),
            ("GET", _, Some(id)) => Ok(ApiRequest::StatTask { id: id.to_string() }),
            ("DELETE", _, Some(id)) => Ok(ApiRequest::RemoveTask { id: id.to_string(), force }),
            (m, p, _) => Err(Refusal { status: 404, message: format!("no route {m} {p}") }),
        }
    }

    /// Method and request target that `parse` maps back to this request (the body of a download
    /// is its JSON, sent separately).
    pub fn target(&self) -> (&'static str, String) {
        match self {
            ApiRequest::Healthy => ("GET", "/healthy".into()),
            ApiRequest::Download(_) => ("POST", "/download".into()),
            ApiRequest::Batch { jobs: None } => ("POST", "/batch".into()),
            ApiRequest::Batch { jobs: Some(j) } => ("POST", format!("/batch?jobs={j}")),
            ApiRequest::ListTasks => ("GET", "/tasks".into()),
            ApiRequest::StatTask { id } => ("GET", format!("/tasks/{id}")),
            ApiRequest::RemoveTask { id, force } => {
                ("DELETE", format!("/tasks/{id}{}", if *force { "?force=true" } else { "" }))
            }
            ApiRequest::Gc => ("POST", "/gc".into()),
        }
    }
}

/// `jobs=N` of `POST /batch`: absent = the daemon's default.
fn batch_jobs(query: &str) -> Result<Option<usize>, Refusal> {
    let Some(v) = query.split('&').find_map(|kv| kv.strip_prefix("jobs=")) else {
        return Ok(None);
    };
    match v.parse::<usize>() {
        Ok(n) if (1..=crate::limits::MAX_BATCH_JOBS).contains(&n) => Ok(Some(n)),
        _ => Err(Refusal { status: 400, message: format!("jobs={v}: give 1 to {}", crate::limits::MAX_BATCH_JOBS) }),
    }
}

/// The bytes of the health probe, as both sides send it.
pub const HEALTH_PROBE: &[u8] = b"GET /healthy HTTP/1.1\r\nHost: dfdaemon\r\n\r\n";

/// How long the health probe waits for an answer.
const HEALTH_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// True when a daemon answers `GET /healthy` on `sock` with 200. A bare successful connect is
/// not proof of life: after a SIGKILL, a dead daemon's io_uring teardown can keep its listener
/// accepting briefly. Blocking std IO: both callers (the client, the daemon before its cores
/// start) run outside any runtime.
pub fn healthy(sock: &Path) -> bool {
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(HEALTH_PROBE_TIMEOUT));
    if s.write_all(HEALTH_PROBE).is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[..12] == b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, target: &str, body: &str, expected: Result<ApiRequest, (u16, &str)>) {
        let got = ApiRequest::parse(method, target, body.as_bytes());
        match (&got, &expected) {
            (Ok(g), Ok(e)) => assert_eq!(g, e, "{method} {target}"),
            (Err(r), Err((status, needle))) => {
                assert_eq!(r.status, *status, "{method} {target}: {r:?}");
                assert!(r.message.contains(needle), "{method} {target}: {r:?} lacks {needle:?}");
            }
            _ => panic!("{method} {target} {body:?}: got {got:?}, expected {expected:?}"),
        }
    }

    fn download(url: &str, output: &str) -> ApiRequest {
        ApiRequest::Download(DownloadRequest { url: url.into(), output: Some(output.into()), ..Default::default() })
    }

    #[test]
    fn requests_parse_to_their_route() {
        check("GET", "/healthy", "", Ok(ApiRequest::Healthy));
        check("GET", "/healthy?x=1", "", Ok(ApiRequest::Healthy));
        check("GET", "/tasks", "", Ok(ApiRequest::ListTasks));
        check("POST", "/gc", "", Ok(ApiRequest::Gc));
        check("GET", "/tasks/abc", "", Ok(ApiRequest::StatTask { id: "abc".into() }));
        check("GET", "/tasks/", "", Ok(ApiRequest::StatTask { id: "".into() }));
        check("DELETE", "/tasks/abc", "", Ok(ApiRequest::RemoveTask { id: "abc".into(), force: false }));
        check("DELETE", "/tasks/abc?force=true", "", Ok(ApiRequest::RemoveTask { id: "abc".into(), force: true }));
        check("DELETE", "/tasks/abc?a=b&force=1", "", Ok(ApiRequest::RemoveTask { id: "abc".into(), force: true }));
        check("DELETE", "/tasks/abc?force=no", "", Ok(ApiRequest::RemoveTask { id: "abc".into(), force: false }));
        check("POST", "/download", r#"{"url":"http://h/f","output":"/o"}"#, Ok(download("http://h/f", "/o")));
        check("POST", "/batch", "", Ok(ApiRequest::Batch { jobs: None }));
        check("POST", "/batch?jobs=16", "", Ok(ApiRequest::Batch { jobs: Some(16) }));
    }

    #[test]
    fn bad_requests_are_refused_with_a_status_and_a_reason() {
        check("POST", "/download", "not json!", Err((400, "bad download request")));
        check("POST", "/download", r#"{"output":"/o"}"#, Err((400, "url")));
        check("POST", "/download", r#"{"url":"http://h/"}"#, Err((400, "output")));
        check("POST", "/batch?jobs=0", "", Err((400, "jobs=0")));
        check("POST", "/batch?jobs=x", "", Err((400, "jobs=x")));
        check("GET", "/batch", "", Err((404, "no route")));
        check("POST", "/download", r#"{"url":"u","output":"/o","extra":1}"#, Err((400, "unknown field")));
        check("POST", "/download", "", Err((400, "bad download request")));
        check("GET", "/nope", "", Err((404, "no route GET /nope")));
        check("GET", "/download", "", Err((404, "no route")));
        check("POST", "/healthy", "", Err((404, "no route")));
        check("PUT", "/tasks/abc", "", Err((404, "no route PUT /tasks/abc")));
        check("DELETE", "/tasks", "", Err((404, "no route")));
        check("", "", "", Err((404, "no route")));
    }

    #[test]
    fn target_renders_what_parse_reads_back() {
        let all = [
            ApiRequest::Healthy,
            ApiRequest::ListTasks,
            ApiRequest::Gc,
            ApiRequest::Batch { jobs: None },
            ApiRequest::Batch { jobs: Some(3) },
            ApiRequest::StatTask { id: "0a1b".into() },
            ApiRequest::RemoveTask { id: "0a1b".into(), force: false },
            ApiRequest::RemoveTask { id: "0a1b".into(), force: true },
        ];
        for req in all {
            let (method, target) = req.target();
            assert_eq!(ApiRequest::parse(method, &target, b""), Ok(req.clone()), "{method} {target}");
        }
    }

    #[test]
    fn error_events_carry_typed_source_and_kind_on_the_wire() {
        let ev = Event::error(crate::error::Error::origin(true, "slow").with_kind(Kind::Timeout));
        let line = serde_json::to_string(&ev).unwrap();
        assert_eq!(line, r#"{"event":"error","source":"origin","kind":"timeout","retryable":true,"message":"slow"}"#);
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), ev);
        let status = Event::error(crate::error::Error::origin(false, "gone").with_kind(Kind::Status(404)));
        let line = serde_json::to_string(&status).unwrap();
        assert!(line.contains(r#""kind":{"status":404}"#), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), status);
        // An older daemon sent no kind: it reads as Other.
        let old = r#"{"event":"error","source":"client","retryable":false,"message":"m"}"#;
        let parsed: Event = serde_json::from_str(old).unwrap();
        assert!(matches!(parsed, Event::Error { source: Source::Client, kind: Kind::Other, .. }), "{parsed:?}");
    }

    #[test]
    fn task_listings_round_trip() {
        let t = TaskInfo {
            id: "ab".into(),
            url: "http://h/f".into(),
            len_bytes: None,
            completed_bytes: 3,
            state: TaskState::Parked,
            last_access_unix_ms: 7,
            readers: 0,
        };
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.contains(r#""state":"parked""#), "{json}");
        assert_eq!(serde_json::from_str::<TaskInfo>(&json).unwrap(), t);
    }
}
