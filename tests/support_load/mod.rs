//! Many clients at once, speaking the daemon's socket protocol directly (what `dfget` does: one
//! `POST /download` per connection, then NDJSON events to the end), plus a `GET /healthy` prober
//! that times each answer. Shared by `tests/e2e_load.rs` and `benches/waiters.rs`, so it depends on
//! nothing else of the test harness.
//!
//! Invariant: every socket read and write has a timeout, so a hung daemon makes a client report
//! `Outcome::TimedOut` (or a prober `None`) instead of hanging the test; the raised open-file
//! limit applies to this process only.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How one client's download ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// A `done` event, after `started_after` (time to the `started` event).
    Done { started_after: Duration, finished_after: Duration },
    /// An `error` event, with its message.
    Error(String),
    /// The stream ended without `done` or `error` (the daemon closed it).
    Eof,
    /// A read or write timed out: the daemon stopped answering.
    TimedOut(String),
    /// Connecting or writing the request failed.
    Refused(String),
}

/// Raises this process's soft open-file limit to its hard limit (one socket per client thread).
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a zeroed struct we own.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        lim.rlim_cur
    }
}

/// `POST /download {url, output}` and reads events until `done`, `error` or the end.
pub fn download(socket: &Path, url: &str, out: &Path, io_timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => return Outcome::Refused(format!("connect: {e}")),
    };
    let _ = stream.set_read_timeout(Some(io_timeout));
    let _ = stream.set_write_timeout(Some(io_timeout));
    let body = serde_json::json!({"url": url, "output": out.to_string_lossy()}).to_string();
    let req = format!(
        "POST /download HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    if let Err(e) = stream.write_all(req.as_bytes()) {
        return Outcome::Refused(format!("write request: {e}"));
    }
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    // The response head, up to its blank line.
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Outcome::Eof,
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
            Err(e) => return timed_out_or_eof(e),
        }
    }
    let mut started_after = None;
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return Outcome::Eof,
            Ok(_) => {}
            Err(e) => return timed_out_or_eof(e),
        }
        let Ok(ev) = serde_json::from_str::<serde_json::Value>(line.trim()) else {
            return Outcome::Error(format!("not an event: {line:?}"));
        };
        match ev["event"].as_str() {
            Some("started") => started_after = Some(started.elapsed()),
            Some("done") => {
                let finished_after = started.elapsed();
                return Outcome::Done { started_after: started_after.unwrap_or(finished_after), finished_after };
            }
            Some("error") => return Outcome::Error(ev["message"].as_str().unwrap_or("").to_string()),
            _ => {}
        }
    }
}

fn timed_out_or_eof(e: std::io::Error) -> Outcome {
    match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => Outcome::TimedOut(e.to_string()),
        _ => Outcome::Eof,
    }
}

/// One `GET /healthy`: the time to a complete `200` status line, or None (no answer within
/// `limit`, or not 200).
pub fn healthy_latency(socket: &Path, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut stream = UnixStream::connect(socket).ok()?;
    stream.set_read_timeout(Some(limit)).ok()?;
    stream.set_write_timeout(Some(limit)).ok()?;
    stream.write_all(b"GET /healthy HTTP/1.1\r\nHost: localhost\r\n\r\n").ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    while !got.windows(2).any(|w| w == b"\r\n") {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got.starts_with(b"HTTP/1.1 200").then(|| t.elapsed())
}

/// Probes `/healthy` every `every` on a thread until stopped; `stop` returns every probe's
/// latency (None = no answer within `limit`).
pub struct HealthProbe {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Option<Duration>>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HealthProbe {
    pub fn start(socket: &Path, every: Duration, limit: Duration) -> HealthProbe {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let (s, out, socket) = (stop.clone(), samples.clone(), socket.to_path_buf());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                let got = healthy_latency(&socket, limit);
                out.lock().unwrap().push(got);
                std::thread::sleep(every);
            }
        });
        HealthProbe { stop, samples, thread: Some(thread) }
    }

    pub fn stop(mut self) -> Vec<Option<Duration>> {
        self.halt();
        self.samples.lock().unwrap().clone()
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for HealthProbe {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Starts `n` client threads downloading `url` to `out_dir/out-<i>`; `join` collects outcomes.
pub struct Clients {
    threads: Vec<std::thread::JoinHandle<Outcome>>,
    pub outputs: Vec<PathBuf>,
}

impl Clients {
    pub fn start(n: usize, socket: &Path, url: &str, out_dir: &Path, io_timeout: Duration) -> Clients {
        let mut threads = Vec::with_capacity(n);
        let mut outputs = Vec::with_capacity(n);
        for i in 0..n {
            let (socket, url, out) = (socket.to_path_buf(), url.to_string(), out_dir.join(format!("out-{i}")));
            outputs.push(out.clone());
            let t = std::thread::Builder::new()
                .stack_size(128 * 1024)
                .spawn(move || download(&socket, &url, &out, io_timeout))
                .expect("spawn client thread");
            threads.push(t);
        }
        Clients { threads, outputs }
    }

    pub fn join(self) -> Vec<Outcome> {
        self.threads.into_iter().map(|t| t.join().unwrap_or(Outcome::Error("client thread panicked".into()))).collect()
    }
}

/// The `q`-quantile (0..=1) of `xs` (sorted in place).
pub fn quantile(xs: &mut [Duration], q: f64) -> Duration {
    if xs.is_empty() {
        return Duration::ZERO;
    }
    xs.sort();
    let idx = ((xs.len() - 1) as f64 * q).round() as usize;
    xs[idx]
}
