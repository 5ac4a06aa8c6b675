//! The `dfget` side: command-line arguments, asking the daemon over its Unix socket for a download,
//! spawning a daemon when none answers, and showing progress.
//!
//! Invariant: the client never leaves a partial OUT: the daemon writes OUT atomically, and on any
//! failure the client reports one line and exits non-zero.

pub(crate) mod batch;
pub(crate) mod check;
pub(crate) mod direct;
pub(crate) mod list;
pub(crate) mod progress;
pub(crate) mod socket;

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

#[derive(Debug, Args)]
pub struct PrefetchArgs {
    /// URLs to fetch into the cache (http://, https://, oras://).
    #[arg(value_name = "URL", required_unless_present = "input_file")]
    pub urls: Vec<String>,
    /// A list in aria2c's input-file format (`-` = standard input); see `dfget --help`.
    #[arg(short = 'i', long = "input-file", value_name = "LIST", conflicts_with = "urls")]
    pub input_file: Option<PathBuf>,
    /// Entries in flight at once.
    #[arg(short = 'j', long = "jobs", value_name = "N")]
    pub jobs: Option<usize>,
    #[command(flatten)]
    pub request: RequestFlags,
}

/// What a download, a list and a prefetch share: how each request is made (headers, task-id
/// parts, time limit), where the daemon is, and the progress bar. With a list, the headers,
/// `--tag` and `--application` apply to every entry (an entry's own `tag=`/`application=` win).
#[derive(Debug, Args, Default)]
pub struct RequestFlags {
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
    /// Show the progress bar even when stderr is not a terminal.
    #[arg(short = 'b', long)]
    pub show_progress: bool,
    /// Never show a progress bar (default: shown when stderr is a terminal).
    #[arg(long, conflicts_with = "show_progress")]
    pub no_progress: bool,
    /// Never start a daemon: fail when none is running.
    #[arg(long)]
    pub no_spawn: bool,
}

impl RequestFlags {
    fn timeout(&self) -> Result<Option<Duration>, Failure> {
        let parsed = self.timeout.as_deref().map(crate::config::units::parse_duration).transpose();
        parsed.map_err(|e| usage(format!("--timeout: {e}")))
    }
}

#[derive(Debug, Args, Default)]
pub struct DownloadArgs {
    /// URL to download: http://, https://, or oras://[registry/]repo[:tag|@sha256:HEX] (a SIF image).
    #[arg(short = 'u', long = "url")]
    pub url: Option<String>,
    /// URL, as a positional argument.
    #[arg(value_name = "URL", conflicts_with = "url")]
    pub positional_url: Option<String>,
    /// Output file (with -i: the output directory for entries without dir=).
    #[arg(short = 'O', long = "output")]
    pub output: Option<PathBuf>,
    /// Download every entry of a list in aria2c's input-file format (`-` = standard input):
    /// URL lines, `#` comments, indented `out=`, `dir=`, `checksum=sha-256=HEX`,
    /// `digest=sha256:HEX`, `header=K: V`, `tag=`, `application=` lines.
    #[arg(short = 'i', long = "input-file", value_name = "LIST", conflicts_with_all = ["url", "positional_url"])]
    pub input_file: Option<PathBuf>,
    /// With -i: the output directory (same as -O DIR); default: the current directory.
    #[arg(long, value_name = "DIR", requires = "input_file", conflicts_with = "output")]
    pub dir: Option<PathBuf>,
    /// With -i: entries in flight at once.
    #[arg(short = 'j', long = "jobs", value_name = "N", requires = "input_file")]
    pub jobs: Option<usize>,
    /// Expected digest, `sha256:<hex>`; a mismatch fails the download and leaves no output.
    #[arg(long)]
    pub digest: Option<String>,
    #[command(flatten)]
    pub request: RequestFlags,
    /// Never download straight from the origin when no daemon can be reached.
    #[arg(long)]
    pub disable_back_source: bool,
    /// `oras://` image indexes: the platform to pick, `os/arch[/variant]` (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
}

pub fn run_download(args: DownloadArgs) -> ExitCode {
    if args.input_file.is_some() {
        return match list_opts(&args) {
            Ok(opts) => batch::run(opts),
            Err((code, msg)) => {
                eprintln!("dfget: {msg}");
                ExitCode::from(code)
            }
        };
    }
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
    let timeout = args.request.timeout()?;
    // Everything the user typed is checked here, before a daemon is reached or spawned.
    check::url(&url).map_err(usage)?;
    let headers = parse_headers(&args.request.headers).map_err(usage)?;
    let digest = args.digest.as_deref().map(check::digest).transpose().map_err(usage)?;
    let req = DownloadRequest {
        url,
        output: Some(output.to_string_lossy().into_owned()),
        digest,
        tag: args.request.tag.clone(),
        application: args.request.application.clone(),
        filter: crate::storage::task_id::parse_filter(&args.request.filter),
        headers,
        registry_credential: None,
        platform: args.platform.clone(),
    };
    check_platform(req.platform.as_deref())?;
    // This process runs as the caller: its docker config is the caller's own. (A bad reference
    // is the daemon's to report.)
    let req = DownloadRequest { registry_credential: own_registry_credential(&req.url), ..req };
    let sock = socket_path(args).map_err(usage)?;
    let stream = match socket::connect_or_spawn(&sock, args.request.config.as_deref(), !args.request.no_spawn) {
        Ok(s) => s,
        Err(e) if args.disable_back_source || args.request.no_spawn => return Err((EXIT_DAEMON, e)),
        Err(e) => return back_to_source(args, &req, &e),
    };
    let mut progress = Progress::new(show_progress(args.request.show_progress, args.request.no_progress));
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
pub(crate) fn own_registry_credential(url: &str) -> Option<crate::source::oras::creds::Credential> {
    let reference = crate::source::oras::reference::Reference::parse(url).ok()?;
    crate::source::oras::registry::load_credential(&reference.registry)
}

/// No daemon: fetch straight from the origin (one stream, no cache), as Dragonfly's dfget does
/// unless `--disable-back-source`.
fn back_to_source(args: &DownloadArgs, req: &DownloadRequest, why: &str) -> Result<(), Failure> {
    eprintln!("dfget: {why}; downloading directly from the source");
    let config = match &args.request.config {
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

/// `dfget -i LIST`: the list's options, checked before any connection.
fn list_opts(args: &DownloadArgs) -> Result<batch::BatchOpts, Failure> {
    if args.digest.is_some() {
        return Err(usage("--digest names one file's content: give each entry its own digest= line"));
    }
    let list = args.input_file.clone().ok_or_else(|| usage("no list given (-i LIST)"))?;
    let input = if list.as_os_str() == "-" { batch::Input::Stdin } else { batch::Input::File(list) };
    let out_dir = args.output.clone().or_else(|| args.dir.clone()).unwrap_or_else(|| PathBuf::from("."));
    let mut opts = batch_opts(&args.request, args.jobs, input, Some(absolute(&out_dir).map_err(usage)?))?;
    check_platform(args.platform.as_deref())?;
    opts.platform = args.platform.clone();
    Ok(opts)
}

/// `dfget prefetch`: the same run as a list, with no output files.
pub fn run_prefetch(args: PrefetchArgs) -> ExitCode {
    let input = match &args.input_file {
        Some(p) if p.as_os_str() == "-" => batch::Input::Stdin,
        Some(p) => batch::Input::File(p.clone()),
        None => batch::Input::Urls(args.urls.clone()),
    };
    match batch_opts(&args.request, args.jobs, input, None) {
        Ok(opts) => batch::run(opts),
        Err((code, msg)) => {
            eprintln!("dfget: {msg}");
            ExitCode::from(code)
        }
    }
}

/// The flags of a list run, checked.
fn batch_opts(
    flags: &RequestFlags,
    jobs: Option<usize>,
    input: batch::Input,
    out_dir: Option<PathBuf>,
) -> Result<batch::BatchOpts, Failure> {
    if let Some(j) = jobs.filter(|&j| j == 0 || j > crate::limits::MAX_BATCH_JOBS) {
        return Err(usage(format!("-j {j}: give 1 to {}", crate::limits::MAX_BATCH_JOBS)));
    }
    let timeout = flags.timeout()?;
    Ok(batch::BatchOpts {
        input,
        out_dir,
        jobs,
        headers: parse_headers(&flags.headers).map_err(usage)?,
        tag: flags.tag.clone(),
        application: flags.application.clone(),
        filter: crate::storage::task_id::parse_filter(&flags.filter),
        platform: None,
        sock: resolve_socket(flags.daemon_sock.as_deref(), flags.config.as_deref()).map_err(usage)?,
        config: flags.config.clone(),
        spawn: !flags.no_spawn,
        progress: show_progress(flags.show_progress, flags.no_progress),
        timeout,
    })
}

/// `dfget completions SHELL`: the script clap_complete derives from the argument definitions.
pub fn run_completions(cmd: &mut clap::Command, shell: clap_complete::Shell) -> ExitCode {
    clap_complete::generate(shell, cmd, "dfget", &mut std::io::stdout());
    ExitCode::from(EXIT_OK)
}

fn check_platform(platform: Option<&str>) -> Result<(), Failure> {
    let Some(p) = platform else { return Ok(()) };
    crate::source::oras::platform::Platform::parse(p)
        .map(|_| ())
        .map_err(|e| usage(format!("--platform: {}", e.message)))
}

/// `-H` values, checked and split.
fn parse_headers(raw: &[String]) -> Result<Vec<(String, String)>, String> {
    if raw.len() > crate::limits::MAX_REQUEST_HEADERS {
        return Err(format!("more than {} headers", crate::limits::MAX_REQUEST_HEADERS));
    }
    raw.iter().map(|h| check::header(h)).collect()
}

/// Progress bars are shown on a terminal (as curl, cargo and Dragonfly's Rust dfget do); `-b`
/// forces them on, `--no-progress` off.
fn show_progress(forced_on: bool, forced_off: bool) -> bool {
    use std::io::IsTerminal;
    decide_progress(forced_on, forced_off, std::io::stderr().is_terminal())
}

fn decide_progress(forced_on: bool, forced_off: bool, stderr_is_tty: bool) -> bool {
    !forced_off && (forced_on || stderr_is_tty)
}

fn absolute(p: &Path) -> Result<PathBuf, String> {
    if p.is_absolute() {
        return Ok(p.to_path_buf());
    }
    let cwd = std::env::current_dir().map_err(|e| format!("cannot resolve {}: {e}", p.display()))?;
    Ok(cwd.join(p))
}

fn socket_path(args: &DownloadArgs) -> Result<PathBuf, String> {
    resolve_socket(args.request.daemon_sock.as_deref(), args.request.config.as_deref())
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
            let b = indicatif::ProgressBar::with_draw_target(Some(0), progress::stderr_target());
            b.set_style(
                indicatif::ProgressStyle::with_template("{bytes}/{total_bytes} [{bar:40}] {bytes_per_sec} eta {eta}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.enable_steady_tick(crate::limits::PROGRESS_BAR_TICK);
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

    #[test]
    fn progress_is_on_for_a_terminal_unless_turned_off() {
        // (-b, --no-progress, stderr is a tty) -> shown
        for (on, off, tty, shown) in [
            (false, false, true, true),
            (false, false, false, false),
            (true, false, false, true),
            (false, true, true, false),
            (true, true, true, false),
        ] {
            assert_eq!(decide_progress(on, off, tty), shown, "-b {on} --no-progress {off} tty {tty}");
        }
    }
}
