//! The `dfget` side: command-line arguments, asking the daemon over its Unix socket for a download,
//! spawning a daemon when none answers, and showing progress.
//!
//! Invariant: the client never leaves a partial OUT: the daemon writes OUT atomically, and on any
//! failure the client reports one line and exits non-zero.

pub mod direct;
pub mod socket;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::error::{Kind, Source};
use crate::proto::{ApiError, ApiRequest, DownloadRequest, Event, TaskInfo};

pub const EXIT_OK: u8 = 0;
/// The download failed (origin error, digest mismatch, disk error in the daemon).
pub const EXIT_DOWNLOAD: u8 = 1;
/// Bad arguments or request.
pub const EXIT_USAGE: u8 = 2;
/// No daemon could be reached or started.
pub const EXIT_DAEMON: u8 = 3;
/// `--timeout` elapsed.
pub const EXIT_TIMEOUT: u8 = 4;

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub action: TasksAction,
    /// The daemon's socket (default: from --config, else the per-user default).
    #[arg(long, global = true)]
    pub daemon_sock: Option<PathBuf>,
    /// Config file used to find the daemon's socket.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TasksAction {
    /// List tasks: id, state, size, last access, URL.
    Ls {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one task as JSON.
    Stat { id: String },
    /// Remove a task from the cache (refused while in use unless --force).
    Rm {
        id: String,
        #[arg(long)]
        force: bool,
    },
    /// Run a GC pass now.
    Gc,
}

#[derive(Debug, Args, Default)]
pub struct DownloadArgs {
    /// URL to download (http://, https://).
    #[arg(short = 'u', long = "url")]
    pub url: Option<String>,
    /// URL, as a positional argument.
    #[arg(value_name = "URL", conflicts_with = "url")]
    pub positional_url: Option<String>,
    /// Output file.
    #[arg(short = 'O', long = "output")]
    pub output: Option<PathBuf>,
    /// Expected digest, `sha256:<hex>`; a mismatch fails the download and leaves no output.
    #[arg(long)]
    pub digest: Option<String>,
    /// Extra request header, `'Key: Value'` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Tag: downloads of one URL with different tags are different tasks.
    #[arg(long, default_value = "")]
    pub tag: String,
    /// Application name, part of the task id.
    #[arg(long, default_value = "")]
    pub application: String,
    /// Query keys dropped from the URL when computing the task id, `'k1&k2'`.
    #[arg(long, default_value = "")]
    pub filter: String,
    /// Give up after this long (e.g. `30s`, `10m`); default: no limit.
    #[arg(long)]
    pub timeout: Option<String>,
    /// The daemon's socket (default: from --config, else the per-user default).
    #[arg(long)]
    pub daemon_sock: Option<PathBuf>,
    /// Config file used to find the daemon's socket.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Show a progress bar.
    #[arg(short = 'b', long)]
    pub show_progress: bool,
    /// Never start a daemon: fail when none is running.
    #[arg(long)]
    pub no_spawn: bool,
    /// Never download straight from the origin when no daemon can be reached.
    #[arg(long)]
    pub disable_back_source: bool,
    /// `oras://` image indexes: the platform to pick, `os/arch[/variant]` (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
}

pub fn run_download(args: DownloadArgs) -> ExitCode {
    match download(&args) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err((code, msg)) => {
            eprintln!("dfget: {msg}");
            ExitCode::from(code)
        }
    }
}

type Failure = (u8, String);

fn usage(msg: impl Into<String>) -> Failure {
    (EXIT_USAGE, msg.into())
}

fn download(args: &DownloadArgs) -> Result<(), Failure> {
    let url = args.url.clone().or_else(|| args.positional_url.clone()).ok_or_else(|| usage("no URL given (-u URL)"))?;
    let output = args.output.as_ref().ok_or_else(|| usage("no output given (-O FILE)"))?;
    let output = absolute(output).map_err(usage)?;
    let timeout = args
        .timeout
        .as_deref()
        .map(crate::config::units::parse_duration)
        .transpose()
        .map_err(|e| usage(format!("--timeout: {e}")))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h.split_once(':').ok_or_else(|| usage(format!("header `{h}` is not `Key: Value`")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let req = DownloadRequest {
        url,
        output: output.to_string_lossy().into_owned(),
        digest: args.digest.clone(),
        tag: args.tag.clone(),
        application: args.application.clone(),
        filter: crate::storage::task_id::parse_filter(&args.filter),
        headers,
        registry_credential: None,
        platform: args.platform.clone(),
    };
    if let Some(p) = &req.platform {
        crate::source::oras::platform::Platform::parse(p).map_err(|e| usage(format!("--platform: {}", e.message)))?;
    }
    // This process runs as the caller: its docker config is the caller's own. (A bad reference
    // is the daemon's to report.)
    let req = DownloadRequest { registry_credential: own_registry_credential(&req.url), ..req };
    let sock = socket_path(args).map_err(usage)?;
    let stream = match socket::connect_or_spawn(&sock, args.config.as_deref(), !args.no_spawn) {
        Ok(s) => s,
        Err(e) if args.disable_back_source || args.no_spawn => return Err((EXIT_DAEMON, e)),
        Err(e) => return back_to_source(args, &req, &e),
    };
    let mut progress = Progress::new(args.show_progress);
    let result = socket::download(stream, &req, timeout, &mut |ev| progress.on_event(ev));
    progress.finish();
    match result {
        Ok(Event::Done { .. }) => Ok(()),
        Ok(Event::Error { source, kind, message, .. }) => {
            let code = if source == Source::Client { EXIT_USAGE } else { EXIT_DOWNLOAD };
            Err((code, describe(kind, message)))
        }
        Ok(other) => Err((EXIT_DAEMON, format!("daemon ended the stream unexpectedly with {other:?}"))),
        Err(socket::StreamError::Timeout(d)) => Err((EXIT_TIMEOUT, format!("timed out after {d:?} (--timeout)"))),
        Err(socket::StreamError::Other(e)) => Err((EXIT_DAEMON, e)),
    }
}

/// For `oras://`: the registry's entry in the caller's docker / Apptainer config.
fn own_registry_credential(url: &str) -> Option<crate::source::oras::creds::Credential> {
    let reference = crate::source::oras::reference::Reference::parse(url).ok()?;
    crate::source::oras::registry::load_credential(&reference.registry)
}

/// No daemon: fetch straight from the origin (one stream, no cache), as Dragonfly's dfget does
/// unless `--disable-back-source`.
fn back_to_source(args: &DownloadArgs, req: &DownloadRequest, why: &str) -> Result<(), Failure> {
    eprintln!("dfget: {why}; downloading directly from the source");
    let config = match &args.config {
        Some(p) => Config::load_path(p, true).map(|l| l.config).map_err(|e| usage(e.to_string()))?,
        None => {
            Config::load_path(&Config::default_path(), false).map(|l| l.config).unwrap_or_else(|_| Config::defaults())
        }
    };
    match direct::download(req, &config) {
        Ok(_) => Ok(()),
        Err(e) => {
            Err((if e.source == Source::Client { EXIT_USAGE } else { EXIT_DOWNLOAD }, describe(e.kind, e.message)))
        }
    }
}

/// The failure's kind in words, before its message: the kind travels on the wire
/// (`proto::Event::Error`), so a user (or a script grepping stderr) tells a corrupt download from a
/// slow origin from a refused credential without parsing the message.
fn describe(kind: Kind, message: String) -> String {
    let label = match kind {
        Kind::Integrity => "integrity check failed",
        Kind::Timeout => "timed out",
        Kind::Status(401 | 403) => "not authorized",
        Kind::TlsHandshake => "TLS handshake failed",
        Kind::Status(_) | Kind::StaleConnection | Kind::Denied | Kind::Other => return message,
    };
    format!("{label}: {message}")
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| format!("cannot resolve {}: {e}", p.display()))?;
    Ok(cwd.join(p))
}

fn socket_path(args: &DownloadArgs) -> Result<PathBuf, String> {
    resolve_socket(args.daemon_sock.as_deref(), args.config.as_deref())
}

fn resolve_socket(daemon_sock: Option<&Path>, config: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(s) = daemon_sock {
        return Ok(s.to_path_buf());
    }
    let (path, required) = match config {
        Some(p) => (p.to_path_buf(), true),
        None => (Config::default_path(), false),
    };
    Config::load_path(&path, required).map(|l| l.config.socket_path).map_err(|e| e.to_string())
}

/// Progress shown on stderr with `-b`: a bar when the length is known, a byte counter otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
}

impl Progress {
    fn new(show: bool) -> Progress {
        let bar = show.then(|| {
            let b = indicatif::ProgressBar::new(0);
            b.set_style(
                indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        Progress { bar }
    }

    fn on_event(&mut self, ev: &Event) {
        let Some(bar) = &self.bar else { return };
        match ev {
            Event::Progress { completed_bytes, total_bytes } => {
                if let Some(t) = total_bytes {
                    bar.set_length(*t);
                }
                bar.set_position(*completed_bytes);
            }
            Event::Done { len_bytes, .. } => {
                bar.set_length(*len_bytes);
                bar.set_position(*len_bytes);
            }
            _ => {}
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish();
        }
    }
}

/// `dfget tasks ...`: one request to the daemon, printed as a table or JSON.
pub fn run_tasks(args: TasksArgs) -> ExitCode {
    let sock = match resolve_socket(args.daemon_sock.as_deref(), args.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("dfget: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let req = match &args.action {
        TasksAction::Ls { .. } => ApiRequest::ListTasks,
        TasksAction::Stat { id } => ApiRequest::StatTask { id: id.clone() },
        TasksAction::Rm { id, force } => ApiRequest::RemoveTask { id: id.clone(), force: *force },
        TasksAction::Gc => ApiRequest::Gc,
    };
    let (method, path) = req.target();
    match socket::request(&sock, method, &path) {
        Ok((200, body)) => {
            match args.action {
                TasksAction::Ls { json: false } => print_task_table(&body),
                _ => println!("{body}"),
            }
            ExitCode::from(EXIT_OK)
        }
        Ok((status, body)) => {
            let msg = serde_json::from_str::<ApiError>(&body).map(|e| e.error).unwrap_or(body);
            eprintln!("dfget: {msg}");
            ExitCode::from(if matches!(status, 403 | 404 | 409) { EXIT_USAGE } else { EXIT_DAEMON })
        }
        Err(e) => {
            eprintln!("dfget: {e}");
            ExitCode::from(EXIT_DAEMON)
        }
    }
}

fn print_task_table(body: &str) {
    let Ok(tasks) = serde_json::from_str::<Vec<TaskInfo>>(body) else {
        println!("{body}");
        return;
    };
    println!("{:<16} {:<8} {:>14} {:>24}  URL", "TASK", "STATE", "BYTES", "LAST ACCESS (UTC)");
    for t in tasks {
        let ts = crate::clock::timestamp(std::time::UNIX_EPOCH + Duration::from_millis(t.last_access_unix_ms));
        let len = t.len_bytes.map(|n| n.to_string()).unwrap_or_else(|| "?".into());
        println!("{:<16} {:<8} {:>14} {:>24}  {}", t.id.get(..16).unwrap_or(&t.id), t.state.as_str(), len, ts, t.url);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_their_kind() {
        let check = |kind, expected: &str| assert_eq!(describe(kind, "m".into()), expected, "{kind:?}");
        check(Kind::Integrity, "integrity check failed: m");
        check(Kind::Timeout, "timed out: m");
        check(Kind::Status(401), "not authorized: m");
        check(Kind::Status(403), "not authorized: m");
        check(Kind::TlsHandshake, "TLS handshake failed: m");
        check(Kind::Status(404), "m");
        check(Kind::Other, "m");
    }
}
