//! Logs in Dragonfly's JSON line format, so operators' greps keep working:
//! `{"level":"info","ts":"2022-09-07 12:04:26.485","caller":"daemon/engine.rs:30","msg":"peer task done, cost: 1ms","peer":"..","task":"..","component":"PeerTask"}`
//! written to `<logDir>/daemon/core.log` (and stderr when asked).
//!
//! Invariant: one event = one line = one JSON object with `level`, `ts`, `caller`, `msg` first, then
//! the event's fields in the order they were recorded. Timestamps are UTC. The file is its
//! owner's alone (0600): it names every caller's downloads.

use std::fmt::Write as _;
use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use anyhow::Context;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context as LayerCtx, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

/// Installs the global subscriber. Writes are synchronous, one `write` per line on an O_APPEND
/// file: log volume is a few lines per task, and a line logged before a client is told "done" is
/// on disk when that client returns — so `grep "peer task done" core.log` right after `dfget`
/// always finds it (a background writer could still be holding it).
pub fn init(log_dir: &Path, to_stderr: bool, level: &str) -> anyhow::Result<()> {
    let dir = log_dir.join("daemon");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create log dir {}", dir.display()))?;
    let level: Level =
        level.parse().map_err(|_| anyhow::anyhow!("unknown log level `{level}` (error, warn, info, debug, trace)"))?;
    open_private(&dir.join("core.log"))?;
    let file = tracing_appender::rolling::never(&dir, "core.log");
    let stderr = to_stderr.then_some(JsonLines { writer: std::io::stderr, max_level: level });
    tracing_subscriber::registry()
        .with(JsonLines { writer: file, max_level: level })
        .with(stderr)
        .try_init()
        .context("cannot install the logger")
}

/// Creates core.log owner-only (0600), or takes group and other rights off an existing one
/// (older runs made it 0644): it names every download's uid and URL, so on a shared host it would
/// tell every user what the others download. Dragonfly's own logs are 0600 too (lumberjack's mode).
fn open_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mode = file.metadata().with_context(|| format!("cannot stat {}", path.display()))?.permissions().mode();
    if mode & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(mode & 0o700))
            .with_context(|| format!("cannot make {} private (chmod 0600)", path.display()))?;
    }
    Ok(())
}

struct JsonLines<W> {
    writer: W,
    max_level: Level,
}

impl<S, W> Layer<S> for JsonLines<W>
where
    S: Subscriber,
    W: for<'a> tracing_subscriber::fmt::MakeWriter<'a> + 'static,
{
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: LayerCtx<'_, S>) -> bool {
        // Dependencies (rustls, compio) only speak up at warn and above unless we are tracing.
        let ours = meta.target().starts_with("dfget") || meta.target() == "PeerTask";
        *meta.level() <= self.max_level && (ours || *meta.level() <= Level::WARN || self.max_level == Level::TRACE)
    }

    fn on_event(&self, event: &Event<'_>, _: LayerCtx<'_, S>) {
        let line = format_event(event, SystemTime::now());
        let _ = self.writer.make_writer().write_all(line.as_bytes());
    }
}

fn format_event(event: &Event<'_>, now: SystemTime) -> String {
    let meta = event.metadata();
    let mut v = Fields::default();
    event.record(&mut v);
    let caller = match (meta.file(), meta.line()) {
        (Some(f), Some(l)) => format!("{}:{l}", f.trim_start_matches("src/")),
        _ => meta.target().to_string(),
    };
    let mut out = String::with_capacity(256);
    out.push_str("{\"level\":");
    out.push_str(&json_str(&meta.level().as_str().to_ascii_lowercase()));
    let _ = write!(
        out,
        ",\"ts\":{},\"caller\":{},\"msg\":{}",
        json_str(&crate::clock::timestamp(now)),
        json_str(&caller),
        json_str(&v.msg)
    );
    for (k, val) in v.fields {
        let _ = write!(out, ",{}:{}", json_str(&k), val);
    }
    out.push_str("}\n");
    out
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

#[derive(Default)]
struct Fields {
    msg: String,
    /// (name, JSON-encoded value)
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.msg = text;
        } else {
            self.fields.push((field.name().to_string(), json_str(&text)));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.msg = value.to_string();
        } else {
            self.fields.push((field.name().to_string(), json_str(value)));
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.push((field.name().to_string(), value.to_string()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.push((field.name().to_string(), value.to_string()));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.push((field.name().to_string(), value.to_string()));
    }
}
