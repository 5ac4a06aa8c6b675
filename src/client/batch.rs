//! `dfget -i LIST` and `dfget prefetch`: a whole list over one socket connection. A writer thread
//! reads the list one line at a time, turns each entry into a request and streams it to the
//! daemon's `POST /batch` (chunked NDJSON); the main thread reads one result per entry back,
//! prints failures with their line numbers, keeps the progress bar and ends with one summary.
//!
//! Invariant: memory is bounded whatever the list's length — one line and one entry are held at a
//! time, and the daemon reads the next entry only when it has a free slot, so a long list blocks
//! the writer on the socket instead of piling up in either process.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::list::{self, Entry, EntryError, Item};
use super::{socket, EXIT_DAEMON, EXIT_DOWNLOAD, EXIT_OK, EXIT_TIMEOUT, EXIT_USAGE};
use crate::limits;
use crate::proto::{BatchEntry, BatchEvent, DownloadRequest, Event};

/// Where the entries come from.
pub enum Input {
    File(PathBuf),
    Stdin,
    /// URLs given as arguments (`dfget prefetch URL...`), one entry each.
    Urls(Vec<String>),
}

impl Input {
    /// How failures name their place: `list.txt:7`, `stdin:7`, `argument 2`.
    fn place_prefix(&self) -> String {
        match self {
            Input::File(p) => format!("{}:", p.display()),
            Input::Stdin => "stdin:".into(),
            Input::Urls(_) => "argument ".into(),
        }
    }
}

/// Everything a list run needs, checked by the caller (`client::mod`) before any connection.
pub struct BatchOpts {
    pub input: Input,
    /// Absolute output directory for entries without `dir=`; `None` = prefetch (cache only).
    pub out_dir: Option<PathBuf>,
    /// Entries in flight; `None` = the daemon's default.
    pub jobs: Option<usize>,
    /// Headers added to every entry (before the entry's own).
    pub headers: Vec<(String, String)>,
    pub tag: String,
    pub application: String,
    pub filter: Vec<String>,
    /// `--platform` for `oras://` image indexes (checked); None = the host's.
    pub platform: Option<String>,
    pub sock: PathBuf,
    pub config: Option<PathBuf>,
    pub spawn: bool,
    pub progress: bool,
    pub timeout: Option<Duration>,
}

/// The counts of the summary line.
#[derive(Debug, Default)]
struct Tally {
    entries: u64,
    done: u64,
    cache_hits: u64,
    failed: u64,
    bytes: u64,
}

/// What the main thread and the writer thread share: the tally and the bar failures print above.
struct Shared {
    /// `list.txt:` etc.: what a line number follows in messages.
    place: String,
    tally: Mutex<Tally>,
    bar: Option<indicatif::ProgressBar>,
    started: Instant,
}

impl Shared {
    fn fail(&self, line: u64, url: Option<&str>, reason: &str) {
        if let Ok(mut t) = self.tally.lock() {
            t.failed += 1;
        }
        let place = &self.place;
        let line = match url {
            Some(u) => format!("dfget: {place}{line}: {u}: {reason}"),
            None => format!("dfget: {place}{line}: {reason}"),
        };
        match &self.bar {
            Some(bar) => {
                bar.suspend(|| eprintln!("{line}"));
                bar.inc(1);
            }
            None => eprintln!("{line}"),
        }
    }

    fn succeed(&self, len_bytes: u64, reused: bool) {
        let Ok(mut t) = self.tally.lock() else { return };
        t.done += 1;
        t.cache_hits += u64::from(reused);
        t.bytes += len_bytes;
        if let Some(bar) = &self.bar {
            let rate = t.bytes as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            bar.set_message(format!("{} at {}/s", indicatif::HumanBytes(t.bytes), indicatif::HumanBytes(rate as u64)));
            bar.inc(1);
        }
    }
}

pub fn run(opts: BatchOpts) -> ExitCode {
    let reader: Box<dyn BufRead + Send> = match &opts.input {
        Input::File(p) => match std::fs::File::open(p) {
            Ok(f) => Box::new(BufReader::new(f)),
            Err(e) => return fail_now(EXIT_USAGE, &format!("cannot read the list {}: {e}", p.display())),
        },
        Input::Stdin => Box::new(BufReader::new(std::io::stdin())),
        Input::Urls(urls) => {
            let lines: Vec<&str> = urls.iter().map(|u| u.trim()).collect();
            Box::new(std::io::Cursor::new(lines.join("\n").into_bytes()))
        }
    };
    let total = match &opts.input {
        Input::File(p) => count_entries(p),
        Input::Stdin => None,
        Input::Urls(u) => Some(u.len() as u64),
    };
    let stream = match socket::connect_or_spawn(&opts.sock, opts.config.as_deref(), opts.spawn) {
        Ok(s) => s,
        Err(e) => return fail_now(EXIT_DAEMON, &format!("{e} (lists are fetched by the daemon)")),
    };
    let shared = Arc::new(Shared {
        place: opts.input.place_prefix(),
        tally: Mutex::default(),
        bar: opts.progress.then(|| bar(total)),
        started: Instant::now(),
    });
    let outcome = exchange(stream, reader, opts, shared.clone());
    if let Some(bar) = &shared.bar {
        bar.finish_and_clear();
    }
    let code = summarize(&shared, &outcome);
    if let Err((_, msg)) = &outcome {
        eprintln!("dfget: {msg}");
    }
    ExitCode::from(code)
}

fn fail_now(code: u8, msg: &str) -> ExitCode {
    eprintln!("dfget: {msg}");
    ExitCode::from(code)
}

/// The summary line; returns the exit code: the run's own failure, else 1 if any entry failed.
fn summarize(shared: &Shared, outcome: &Result<(), (u8, String)>) -> u8 {
    let t = shared.tally.lock().map(|mut t| std::mem::take(&mut *t)).unwrap_or_default();
    eprintln!(
        "dfget: {} entries: {} done, {} cache hits, {} failed, {} bytes, {:.2}s",
        t.entries,
        t.done,
        t.cache_hits,
        t.failed,
        t.bytes,
        shared.started.elapsed().as_secs_f64()
    );
    match outcome {
        Err((code, _)) => *code,
        Ok(()) if t.failed > 0 => EXIT_DOWNLOAD,
        Ok(()) => EXIT_OK,
    }
}

fn bar(total: Option<u64>) -> indicatif::ProgressBar {
    let (b, template) = match total {
        Some(n) => (
            indicatif::ProgressBar::with_draw_target(Some(n), super::progress::stderr_target()),
            "{pos}/{len} entries [{bar:30}] {msg} eta {eta}",
        ),
        None => (
            indicatif::ProgressBar::with_draw_target(None, super::progress::stderr_target()),
            "{spinner} {pos} entries {msg}",
        ),
    };
    b.set_style(
        indicatif::ProgressStyle::with_template(template).unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    b.enable_steady_tick(limits::PROGRESS_BAR_TICK);
    b
}

/// Entries of a list file, for the bar's length (one cheap pass; `None` if it cannot be read).
fn count_entries(path: &Path) -> Option<u64> {
    let mut r = BufReader::new(std::fs::File::open(path).ok()?);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf).ok()? == 0 {
            return Some(n);
        }
        let starts_entry = buf.first().is_some_and(|&b| !matches!(b, b' ' | b'\t' | b'#' | b'\r' | b'\n'));
        n += u64::from(starts_entry);
    }
}

/// Sends the list and reads the results; Err = (exit code, why the run as a whole failed).
fn exchange(
    stream: UnixStream,
    reader: Box<dyn BufRead + Send>,
    opts: BatchOpts,
    shared: Arc<Shared>,
) -> Result<(), (u8, String)> {
    let daemon = |e: std::io::Error| (EXIT_DAEMON, format!("talking to the daemon: {e}"));
    let mut out = stream.try_clone().map_err(daemon)?;
    let target = match opts.jobs {
        Some(j) => format!("/batch?jobs={j}"),
        None => "/batch".to_string(),
    };
    let head = format!(
        "POST {target} HTTP/1.1\r\nHost: dfdaemon\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    out.write_all(head.as_bytes()).map_err(daemon)?;
    let deadline = opts.timeout.map(|t| Instant::now() + t);
    let writer_shared = shared.clone();
    let writer = std::thread::spawn(move || send_list(out, reader, &opts, &writer_shared));
    let results = read_results(stream, &shared, deadline);
    // The writer ends on its own: at the end of the list, or at its first failed write.
    let sent = writer.join().unwrap_or_else(|_| Err("the list reader panicked".into()));
    results?;
    sent.map_err(|e| (EXIT_USAGE, e))
}

/// The writer thread: list → requests → chunks. Returns Err only when the list cannot be read.
fn send_list(
    out: UnixStream,
    reader: Box<dyn BufRead + Send>,
    opts: &BatchOpts,
    shared: &Shared,
) -> Result<(), String> {
    let mut out = std::io::BufWriter::new(out);
    let cwd = std::env::current_dir().map_err(|e| format!("cannot resolve the current directory: {e}"))?;
    let mut parser = list::Parser::new();
    let mut lines = Lines { reader, buf: Vec::new() };
    let mut send = |item: Item| -> bool {
        if let Ok(mut t) = shared.tally.lock() {
            t.entries += 1;
        }
        let request = item.and_then(|e| request(&e, opts, &cwd).map(|r| (e.line, r)));
        match request {
            Ok((line, request)) => write_chunk(&mut out, &BatchEntry { line, request }).is_ok(),
            Err(e) => {
                shared.fail(e.line, e.url.as_deref(), &e.reason);
                true
            }
        }
    };
    let read = loop {
        let item = match lines.next() {
            Ok(Some(Line::Text(t))) => parser.line(&t),
            Ok(Some(Line::Bad { reason, indented })) => parser.bad_line(reason, indented),
            Ok(None) => break Ok(()),
            Err(e) => break Err(format!("cannot read the list at {}{}: {e}", shared.place, parser.n_lines() + 1)),
        };
        if let Some(item) = item {
            if !send(item) {
                // The daemon went away; the reader thread reports it.
                return Ok(());
            }
        }
    };
    if read.is_ok() {
        if let Some(item) = parser.finish() {
            send(item);
        }
    }
    let _ = out.write_all(b"0\r\n\r\n").and_then(|_| out.flush());
    read
}

/// One entry as one chunk of the request body, flushed so the daemon can start it at once.
fn write_chunk(out: &mut impl Write, entry: &BatchEntry) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write!(out, "{:x}\r\n", line.len())?;
    out.write_all(&line)?;
    out.write_all(b"\r\n")?;
    out.flush()
}

/// An entry plus the run's defaults → the request the daemon gets. Creates the output's
/// directory (as the caller, like aria2c does for `dir=`/`out=`).
fn request(entry: &Entry, opts: &BatchOpts, cwd: &Path) -> Result<DownloadRequest, EntryError> {
    let fail = |reason: String| EntryError { line: entry.line, url: Some(entry.url.clone()), reason };
    let output = match &opts.out_dir {
        None => None,
        Some(base) => {
            let path = list::output_path(entry, base, cwd).map_err(fail)?;
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| fail(format!("cannot create {}: {e}", parent.display())))?;
            }
            Some(path.to_string_lossy().into_owned())
        }
    };
    let mut headers = opts.headers.clone();
    headers.extend(entry.headers.iter().cloned());
    if headers.len() > limits::MAX_REQUEST_HEADERS {
        return Err(fail(format!("more than {} headers with -H", limits::MAX_REQUEST_HEADERS)));
    }
    Ok(DownloadRequest {
        url: entry.url.clone(),
        output,
        digest: entry.digest.clone(),
        tag: entry.tag.clone().unwrap_or_else(|| opts.tag.clone()),
        application: entry.application.clone().unwrap_or_else(|| opts.application.clone()),
        filter: opts.filter.clone(),
        headers,
        // The caller's own registry login, as for `dfget -u oras://...` (None for http entries).
        registry_credential: super::own_registry_credential(&entry.url),
        platform: opts.platform.clone(),
    })
}

/// The main thread: reads the status, then one event per entry until `end`.
fn read_results(stream: UnixStream, shared: &Shared, deadline: Option<Instant>) -> Result<(), (u8, String)> {
    let daemon = |e: String| (EXIT_DAEMON, e);
    let mut reader = BufReader::new(stream);
    let status = socket::read_status(&mut reader).map_err(daemon)?;
    if status != 200 {
        let mut rest = String::new();
        let _ = reader.take(64 * 1024).read_to_string(&mut rest);
        return Err((EXIT_USAGE, format!("daemon refused the list ({status}): {}", rest.trim())));
    }
    let mut line = String::new();
    loop {
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err((EXIT_TIMEOUT, "timed out (--timeout)".into()));
            }
            let _ = reader.get_ref().set_read_timeout(Some(left));
        }
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(daemon("the daemon closed the connection mid-list (see core.log)".into())),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                return Err((EXIT_TIMEOUT, "timed out (--timeout)".into()))
            }
            Err(e) => return Err(daemon(format!("reading from the daemon: {e}"))),
        }
        let ev: BatchEvent =
            serde_json::from_str(line.trim()).map_err(|e| daemon(format!("bad event from the daemon: {e}")))?;
        match ev {
            BatchEvent::End { error: None, .. } => return Ok(()),
            BatchEvent::End { error: Some(e), .. } => {
                return Err((EXIT_DAEMON, format!("the daemon ended the list: {e}")))
            }
            BatchEvent::Entry { line, url, result } => on_result(shared, line, &url, result),
        }
    }
}

fn on_result(shared: &Shared, line: u64, url: &str, result: Event) {
    match result {
        Event::Done { len_bytes, reused, .. } => shared.succeed(len_bytes, reused),
        Event::Error { message, .. } => shared.fail(line, Some(url), &message),
        other => shared.fail(line, Some(url), &format!("unexpected result {other:?}")),
    }
}

/// One physical line of a list, read with a bound on its length.
enum Line {
    Text(String),
    /// Not UTF-8, or longer than `MAX_LIST_LINE_BYTES` (the rest of it is skipped unread).
    Bad {
        reason: String,
        indented: bool,
    },
}

struct Lines {
    reader: Box<dyn BufRead + Send>,
    buf: Vec<u8>,
}

impl Lines {
    fn next(&mut self) -> std::io::Result<Option<Line>> {
        self.buf.clear();
        let limit = limits::MAX_LIST_LINE_BYTES as u64 + 1;
        let n = (&mut self.reader).take(limit).read_until(b'\n', &mut self.buf)?;
        if n == 0 {
            return Ok(None);
        }
        let indented = self.buf.first().is_some_and(|&b| b == b' ' || b == b'\t');
        if self.buf.last() != Some(&b'\n') && n as u64 == limit {
            skip_line(&mut self.reader)?;
            let reason = format!("line longer than {} bytes", limits::MAX_LIST_LINE_BYTES);
            return Ok(Some(Line::Bad { reason, indented }));
        }
        if self.buf.last() == Some(&b'\n') {
            self.buf.pop();
        }
        match std::str::from_utf8(&self.buf) {
            Ok(t) => Ok(Some(Line::Text(t.to_string()))),
            Err(_) => Ok(Some(Line::Bad { reason: "line is not UTF-8".into(), indented })),
        }
    }
}

/// Consumes input up to and including the next `\n`, without buffering it.
fn skip_line(r: &mut dyn BufRead) -> std::io::Result<()> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(());
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                r.consume(i + 1);
                return Ok(());
            }
            None => {
                let n = buf.len();
                r.consume(n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8]) -> Vec<String> {
        let mut l = Lines { reader: Box::new(std::io::Cursor::new(input.to_vec())), buf: Vec::new() };
        let mut out = Vec::new();
        while let Some(line) = l.next().expect("read") {
            out.push(match line {
                Line::Text(t) => format!("text {t}"),
                Line::Bad { reason, indented } => format!("bad {indented} {reason}"),
            });
        }
        out
    }

    #[test]
    fn lines_are_bounded_and_checked() {
        assert_eq!(lines(b"a\n  b\r\nc"), ["text a", "text   b\r", "text c"]);
        let mut long = vec![b'x'; limits::MAX_LIST_LINE_BYTES + 10];
        long.extend_from_slice(b"\nnext\n");
        assert_eq!(
            lines(&long),
            [format!("bad false line longer than {} bytes", limits::MAX_LIST_LINE_BYTES), "text next".into()]
        );
        let exact = vec![b'y'; limits::MAX_LIST_LINE_BYTES];
        assert_eq!(lines(&exact).len(), 1);
        assert_eq!(lines(b" \xff\xfe\nz"), ["bad true line is not UTF-8", "text z"]);
    }
}
