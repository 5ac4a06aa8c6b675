//! What the YAML says: serde structs mirroring the dfget.yaml keys this daemon uses (camelCase, as
//! in Dragonfly), the scalar kinds that validate *inside* serde's visitors (so every bad value is
//! reported with its YAML line and column), and the known-key tree behind the "ignoring key"
//! warnings. Invariant: every key of a file is either read by a struct below and marked `Used` in
//! `TOP_KEYS`, or reported exactly once by `ignored_keys` — never both, never neither (the tests
//! `every_used_key_is_honoured` and `sample_loads_without_warnings` hold the two sides together).

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::Deserialize;
use serde_yaml_ng::{Mapping, Value};

use super::units;
use super::Strategy;

/// Connection counts above this are a typo, not a tuning: one host has ~28k ephemeral ports.
pub const MAX_CONN_COUNT: u64 = 65_536;
/// `insecureRegistries` entries: a hand-written allow-list, not a database.
pub const MAX_INSECURE_REGISTRIES: usize = 256;
/// A DNS name (253) plus `:port`.
pub const MAX_HOST_PORT_BYTES: usize = 261;
/// Linux `sun_path` is 108 bytes including the terminating NUL.
pub const MAX_SOCKET_PATH_BYTES: usize = 107;
/// Longest path accepted for a directory or file key (Linux PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;

/// Characters of a key or value quoted in a message; a longer one is cut with `…`.
pub const MAX_QUOTED_CHARS: usize = 80;

/// `text` quoted for a message, cut to `MAX_QUOTED_CHARS` so a huge scalar cannot flood the log.
fn quoted(text: &str) -> String {
    match text.char_indices().nth(MAX_QUOTED_CHARS) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Scalars that validate inside serde.

/// A YAML scalar kind. The conversions run inside the visitor, so an `Err` becomes a serde error
/// that serde_yaml_ng stamps with the scalar's position. Every default rejects that YAML type.
pub(crate) trait ScalarKind: Sized {
    const EXPECTING: &'static str;
    fn from_text(text: &str) -> Result<Self, String> {
        Err(format!("expected {}, found the string {}", Self::EXPECTING, quoted(text)))
    }
    fn from_int(n: i128) -> Result<Self, String> {
        Err(format!("expected {}, found the number {n}", Self::EXPECTING))
    }
    fn from_float(x: f64) -> Result<Self, String> {
        Err(format!("expected {}, found the number {x}", Self::EXPECTING))
    }
    fn from_bool(b: bool) -> Result<Self, String> {
        Err(format!("expected {}, found {b}", Self::EXPECTING))
    }
}

pub(crate) struct ScalarVisitor<T>(pub(crate) PhantomData<T>);

impl<'de, T: ScalarKind> Visitor<'de> for ScalarVisitor<T> {
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::from_text(v).map_err(E::custom)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<T, E> {
        T::from_bool(v).map_err(E::custom)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        T::from_int(i128::from(v)).map_err(E::custom)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        T::from_int(i128::from(v)).map_err(E::custom)
    }
    fn visit_i128<E: de::Error>(self, v: i128) -> Result<T, E> {
        T::from_int(v).map_err(E::custom)
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<T, E> {
        // Anything past i128 is far beyond every limit; saturating keeps the "too large" message.
        T::from_int(i128::try_from(v).unwrap_or(i128::MAX)).map_err(E::custom)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<T, E> {
        T::from_float(v).map_err(E::custom)
    }
}

macro_rules! scalar_deserialize {
    ($($kind:ty),* $(,)?) => {$(
        impl<'de> Deserialize<'de> for $kind {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserializer.deserialize_any(ScalarVisitor::<$kind>(PhantomData))
            }
        }
    )*};
}

pub(crate) use scalar_deserialize;

scalar_deserialize!(Dur, NonZeroDur, Size, Percent, Flag, Count, StrategyName);
scalar_deserialize!(AbsPath, SocketPath, ProxyUrl, ListenAddr, HostPort);

/// A Go-style duration. A bare integer is accepted only as `0`: Go's yaml.v2 reads other integers
/// as nanoseconds and yaml.v3 rejects them, so any reading of `gcInterval: 60` would surprise
/// someone.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Dur(pub Duration);

impl ScalarKind for Dur {
    const EXPECTING: &'static str = "a duration such as `30s`, `1m30s`, `500ms` or `6h`";
    fn from_text(text: &str) -> Result<Self, String> {
        units::parse_duration(text).map(Dur).map_err(|e| e.to_string())
    }
    fn from_int(n: i128) -> Result<Self, String> {
        match n {
            0 => Ok(Dur(Duration::ZERO)),
            _ => Err(format!("the duration {n} has no unit: write it with one, e.g. `{n}s` or `{n}ms`")),
        }
    }
}

/// A duration that must be positive (an interval: zero would spin).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NonZeroDur(pub Duration);

impl ScalarKind for NonZeroDur {
    const EXPECTING: &'static str = "a positive duration such as `30s`, `1m` or `1h`";
    fn from_text(text: &str) -> Result<Self, String> {
        Self::positive(Dur::from_text(text)?)
    }
    fn from_int(n: i128) -> Result<Self, String> {
        Self::positive(Dur::from_int(n)?)
    }
}

impl NonZeroDur {
    fn positive(d: Dur) -> Result<Self, String> {
        match d.0.is_zero() {
            true => Err("must be greater than 0".to_string()),
            false => Ok(NonZeroDur(d.0)),
        }
    }
}

/// A byte size: `50Gi`, `1.5G`, or a plain number of bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Size(pub u64);

impl ScalarKind for Size {
    const EXPECTING: &'static str = "a size such as `50Gi`, `100Mi` or a number of bytes";
    fn from_text(text: &str) -> Result<Self, String> {
        units::parse_size(text).map(Size).map_err(|e| e.to_string())
    }
    fn from_int(n: i128) -> Result<Self, String> {
        match u64::try_from(n) {
            Ok(bytes) => Ok(Size(bytes)),
            Err(_) if n < 0 => Err(format!("size {n} must not be negative")),
            Err(_) => Err(format!("size {n} is too large")),
        }
    }
    fn from_float(x: f64) -> Result<Self, String> {
        // 2^64 is exactly representable; anything at or past it does not fit.
        if x >= 0.0 && x.fract() == 0.0 && x < 18_446_744_073_709_551_616.0 {
            return Ok(Size(x as u64));
        }
        Err(format!("size {x} must be a whole, non-negative number of bytes"))
    }
}

/// A disk-usage percentage in (0, 100].
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Percent(pub f64);

impl ScalarKind for Percent {
    const EXPECTING: &'static str = "a percentage in (0, 100]";
    fn from_int(n: i128) -> Result<Self, String> {
        // Exact for every in-range value; out-of-range ones only need to stay out of range.
        Self::from_float(n as f64)
    }
    fn from_float(x: f64) -> Result<Self, String> {
        match x > 0.0 && x <= 100.0 {
            true => Ok(Percent(x)),
            false => Err(format!("percentage {x} is out of range: expected a value in (0, 100]")),
        }
    }
}

/// A boolean. YAML 1.1 spellings (`yes`/`no`/`on`/`off`) are accepted because Go's yaml.v3, which
/// Dragonfly uses, accepts them for boolean fields.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Flag(pub bool);

impl ScalarKind for Flag {
    const EXPECTING: &'static str = "true or false";
    fn from_bool(b: bool) -> Result<Self, String> {
        Ok(Flag(b))
    }
    fn from_text(text: &str) -> Result<Self, String> {
        match text.to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" => Ok(Flag(true)),
            "false" | "no" | "off" => Ok(Flag(false)),
            _ => Err(format!("expected true or false, found {}", quoted(text))),
        }
    }
}

/// A connection count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Count(pub usize);

impl ScalarKind for Count {
    const EXPECTING: &'static str = "a whole number from 0 to 65536";
    fn from_int(n: i128) -> Result<Self, String> {
        match u64::try_from(n) {
            Ok(count) if count <= MAX_CONN_COUNT => Ok(Count(count as usize)),
            _ => Err(format!("{n} is out of range: expected a whole number from 0 to {MAX_CONN_COUNT}")),
        }
    }
}

/// `storage.strategy`, remembering whether the seed's trailing dot had to be dropped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct StrategyName {
    pub strategy: Strategy,
    pub trailing_dot: bool,
}

impl ScalarKind for StrategyName {
    const EXPECTING: &'static str = "`io.d7y.storage.v2.simple` or `io.d7y.storage.v2.advance`";
    fn from_text(text: &str) -> Result<Self, String> {
        let trimmed = text.strip_suffix('.').unwrap_or(text);
        let strategy = match trimmed {
            "io.d7y.storage.v2.simple" => Strategy::Simple,
            "io.d7y.storage.v2.advance" => Strategy::Advance,
            _ => return Err(format!("unknown storage strategy {}: expected {}", quoted(text), Self::EXPECTING)),
        };
        Ok(StrategyName { strategy, trailing_dot: trimmed.len() != text.len() })
    }
}

fn absolute(text: &str, max_bytes: usize) -> Result<Option<PathBuf>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    if text.len() > max_bytes {
        return Err(format!("path is longer than {max_bytes} bytes"));
    }
    if text.contains('\0') {
        return Err("path contains a NUL byte".to_string());
    }
    // The daemon may start from any directory (systemd, or spawned by dfget), so a relative path
    // would point somewhere different each time.
    if !text.starts_with('/') {
        return Err(format!("path {} must be absolute (start with `/`)", quoted(text)));
    }
    Ok(Some(PathBuf::from(text)))
}

/// An absolute path; the empty string means "unset".
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AbsPath(pub Option<PathBuf>);

impl ScalarKind for AbsPath {
    const EXPECTING: &'static str = "an absolute path";
    fn from_text(text: &str) -> Result<Self, String> {
        absolute(text, MAX_PATH_BYTES).map(AbsPath)
    }
}

/// A Unix socket path: absolute and short enough for `sun_path`; empty means "unset".
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SocketPath(pub Option<PathBuf>);

impl ScalarKind for SocketPath {
    const EXPECTING: &'static str = "an absolute socket path";
    fn from_text(text: &str) -> Result<Self, String> {
        if text.len() > MAX_SOCKET_PATH_BYTES {
            let limit = MAX_SOCKET_PATH_BYTES;
            return Err(format!("socket path is longer than {limit} bytes, the Unix socket limit"));
        }
        absolute(text, MAX_SOCKET_PATH_BYTES).map(SocketPath)
    }
}

/// An HTTP proxy URL (`http://host:port`, `https://...`); empty means "no proxy".
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ProxyUrl(pub Option<String>);

impl ScalarKind for ProxyUrl {
    const EXPECTING: &'static str = "a proxy URL such as `http://proxy.example:3128`";
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(ProxyUrl(None));
        }
        let url = url::Url::parse(text).map_err(|e| format!("invalid proxy URL {}: {e}", quoted(text)))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("invalid proxy URL {}: expected http://host:port or https://host:port", quoted(text)));
        }
        Ok(ProxyUrl(Some(text.to_string())))
    }
}

/// A TCP listen address `[host]:port` such as `:8000`; empty means "off".
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ListenAddr(pub Option<String>);

impl ScalarKind for ListenAddr {
    const EXPECTING: &'static str = "a listen address such as `:8000` or `127.0.0.1:8000`";
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(ListenAddr(None));
        }
        let port = text.rsplit_once(':').map(|(_, port)| port);
        match port.map(str::parse::<u16>) {
            Some(Ok(_)) if text.len() <= MAX_HOST_PORT_BYTES => Ok(ListenAddr(Some(text.to_string()))),
            _ => Err(format!("invalid listen address {}: expected {}", quoted(text), Self::EXPECTING)),
        }
    }
}

/// One `insecureRegistries` entry: `host` or `host:port`, no scheme or path.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HostPort(pub String);

impl ScalarKind for HostPort {
    const EXPECTING: &'static str = "a registry host such as `localhost:5000`";
    fn from_text(text: &str) -> Result<Self, String> {
        let bad = text.is_empty()
            || text.len() > MAX_HOST_PORT_BYTES
            || text.contains(|c: char| c == '/' || c.is_whitespace());
        match bad {
            true => Err(format!("invalid registry host {}: expected {}", quoted(text), Self::EXPECTING)),
            false => Ok(HostPort(text.to_string())),
        }
    }
}

/// `insecureRegistries`: a bounded list of hosts.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HostList(pub Vec<String>);

impl<'de> Deserialize<'de> for HostList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;
        impl<'de> Visitor<'de> for ListVisitor {
            type Value = HostList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of registry hosts such as `[localhost:5000]`")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HostList, A::Error> {
                let mut hosts = Vec::new();
                while let Some(HostPort(host)) = seq.next_element()? {
                    if hosts.len() == MAX_INSECURE_REGISTRIES {
                        let limit = MAX_INSECURE_REGISTRIES;
                        return Err(de::Error::custom(format!("more than {limit} entries")));
                    }
                    hosts.push(host);
                }
                Ok(HostList(hosts))
            }
        }
        deserializer.deserialize_seq(ListVisitor)
    }
}

// ---------------------------------------------------------------------------------------------
// The structs. Every field is optional: absent and empty (`key:`) both mean "use the default".

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of dfget daemon settings")]
pub(crate) struct RawConfig {
    #[serde(rename = "aliveTime")]
    pub alive_time: Option<Dur>,
    #[serde(rename = "gcInterval")]
    pub gc_interval: Option<NonZeroDur>,
    pub metrics: Option<ListenAddr>,
    #[serde(rename = "workHome")]
    pub work_home: Option<AbsPath>,
    #[serde(rename = "cacheDir")]
    pub cache_dir: Option<AbsPath>,
    #[serde(rename = "logDir")]
    pub log_dir: Option<AbsPath>,
    #[serde(rename = "dataDir")]
    pub data_dir: Option<AbsPath>,
    #[serde(rename = "keepStorage")]
    pub keep_storage: Option<Flag>,
    pub verbose: Option<Flag>,
    pub console: Option<Flag>,
    pub storage: Option<RawStorage>,
    pub oras: Option<RawTransport>,
    pub download: Option<RawDownload>,
    pub scheduler: Option<super::p2p::RawScheduler>,
    pub host: Option<super::p2p::RawHost>,
    pub upload: Option<super::p2p::RawUpload>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of storage settings")]
pub(crate) struct RawStorage {
    #[serde(rename = "taskExpireTime")]
    pub task_expire_time: Option<Dur>,
    pub strategy: Option<StrategyName>,
    #[serde(rename = "diskGCThreshold")]
    pub disk_gc_threshold: Option<Size>,
    #[serde(rename = "diskGCThresholdPercent")]
    pub disk_gc_threshold_percent: Option<Percent>,
    pub multiplex: Option<Flag>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of download settings")]
pub(crate) struct RawDownload {
    #[serde(rename = "totalRateLimit")]
    pub total_rate_limit: Option<Size>,
    #[serde(rename = "downloadGRPC")]
    pub download_grpc: Option<RawDownloadGrpc>,
    #[serde(rename = "resourceClients")]
    pub resource_clients: Option<RawResourceClients>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping with `unixListen`")]
pub(crate) struct RawDownloadGrpc {
    #[serde(rename = "unixListen")]
    pub unix_listen: Option<RawUnixListen>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping with `socket`")]
pub(crate) struct RawUnixListen {
    pub socket: Option<SocketPath>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of resource clients (`oras`, `http`, `https`)")]
pub(crate) struct RawResourceClients {
    pub oras: Option<RawTransport>,
    pub http: Option<RawTransport>,
    pub https: Option<RawTransport>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of transport settings")]
pub(crate) struct RawTransport {
    pub proxy: Option<ProxyUrl>,
    #[serde(rename = "dialTimeout")]
    pub dial_timeout: Option<Dur>,
    #[serde(rename = "keepAlive")]
    pub keep_alive: Option<Dur>,
    #[serde(rename = "maxIdleConns")]
    pub max_idle_conns: Option<Count>,
    #[serde(rename = "maxIdleConnsPerHost")]
    pub max_idle_conns_per_host: Option<Count>,
    #[serde(rename = "maxConnsPerHost")]
    pub max_conns_per_host: Option<Count>,
    #[serde(rename = "idleConnTimeout")]
    pub idle_conn_timeout: Option<Dur>,
    #[serde(rename = "responseHeaderTimeout")]
    pub response_header_timeout: Option<Dur>,
    #[serde(rename = "tlsHandshakeTimeout")]
    pub tls_handshake_timeout: Option<Dur>,
    #[serde(rename = "expectContinueTimeout")]
    pub expect_continue_timeout: Option<Dur>,
    #[serde(rename = "insecureSkipVerify")]
    pub insecure_skip_verify: Option<Flag>,
    #[serde(rename = "caFile")]
    pub ca_file: Option<AbsPath>,
    #[serde(rename = "insecureRegistries")]
    pub insecure_registries: Option<HostList>,
}

// ---------------------------------------------------------------------------------------------
// The known-key tree.

/// What this daemon does with a key.
pub(crate) enum Key {
    /// Read by the structs above.
    Used,
    /// A mapping whose children are listed; keys not listed are unknown.
    Section(&'static [(&'static str, Key)]),
    /// A Dragonfly key this daemon does not implement: warned about, never read, never
    /// type-checked.
    Unused,
}

use Key::{Section, Unused, Used};

const TRANSPORT_KEYS: &[(&str, Key)] = &[
    ("proxy", Used),
    ("dialTimeout", Used),
    ("keepAlive", Used),
    ("maxIdleConns", Used),
    ("maxIdleConnsPerHost", Used),
    ("maxConnsPerHost", Used),
    ("idleConnTimeout", Used),
    ("responseHeaderTimeout", Used),
    ("tlsHandshakeTimeout", Used),
    ("expectContinueTimeout", Used),
    ("insecureSkipVerify", Used),
    ("caFile", Used),
    ("insecureRegistries", Used),
];

const STORAGE_KEYS: &[(&str, Key)] = &[
    ("taskExpireTime", Used),
    ("strategy", Used),
    ("diskGCThreshold", Used),
    ("diskGCThresholdPercent", Used),
    ("multiplex", Used),
    ("dataPath", Unused),
    ("writeBufferSize", Unused),
];

const DOWNLOAD_GRPC_KEYS: &[(&str, Key)] =
    &[("unixListen", Section(&[("socket", Used)])), ("security", Unused), ("tcpListen", Unused)];

const DOWNLOAD_KEYS: &[(&str, Key)] = &[
    ("totalRateLimit", Used),
    ("downloadGRPC", Section(DOWNLOAD_GRPC_KEYS)),
    (
        "resourceClients",
        Section(&[
            ("oras", Section(TRANSPORT_KEYS)),
            ("http", Section(TRANSPORT_KEYS)),
            ("https", Section(TRANSPORT_KEYS)),
        ]),
    ),
    ("perPeerRateLimit", Unused),
    ("trafficShaperType", Unused),
    ("pieceDownloadTimeout", Unused),
    ("grpcDialTimeout", Unused),
    ("peerGRPC", Unused),
    ("calculateDigest", Unused),
    ("transportOption", Unused),
    ("getPiecesMaxRetry", Unused),
    ("prefetch", Unused),
    ("watchdogTimeout", Unused),
    ("concurrent", Unused),
    ("syncPieceViaHTTPS", Unused),
    ("splitRunningTasks", Unused),
    ("recursiveConcurrent", Unused),
    ("cacheRecursiveMetadata", Unused),
];

/// Top-level keys: ours, then the rest of Dragonfly's `DaemonOption` (peer-to-peer, proxy,
/// security, telemetry), which a real dfget.yaml carries and this daemon leaves alone.
pub(crate) const TOP_KEYS: &[(&str, Key)] = &[
    ("aliveTime", Used),
    ("gcInterval", Used),
    ("metrics", Used),
    ("workHome", Used),
    ("cacheDir", Used),
    ("logDir", Used),
    ("dataDir", Used),
    ("keepStorage", Used),
    ("verbose", Used),
    ("console", Used),
    ("storage", Section(STORAGE_KEYS)),
    ("oras", Section(TRANSPORT_KEYS)),
    ("download", Section(DOWNLOAD_KEYS)),
    ("workHomeMode", Unused),
    ("cacheDirMode", Unused),
    ("dataDirMode", Unused),
    ("logMaxSize", Unused),
    ("logMaxAge", Unused),
    ("logMaxBackups", Unused),
    ("pluginDir", Unused),
    ("log-level", Unused),
    ("pprof-port", Unused),
    ("tracing", Unused),
    ("jaeger", Unused),
    ("security", Unused),
    ("scheduler", Section(super::p2p::SCHEDULER_KEYS)),
    ("host", Section(super::p2p::HOST_KEYS)),
    ("upload", Section(super::p2p::UPLOAD_KEYS)),
    ("proxy", Unused),
    ("objectStorage", Unused),
    ("health", Unused),
    ("reload", Unused),
    ("reloadOption", Unused),
    ("network", Unused),
    ("announcer", Unused),
    ("networkTopology", Unused),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IgnoredWhy {
    /// Not a key of this daemon nor of Dragonfly's dfget.yaml (a typo, or another program's key).
    Unknown,
    /// A Dragonfly key this daemon does not implement.
    Unused,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ignored {
    /// Dotted path from the root, e.g. `scheduler` or `storage.diskGcThreshold`.
    pub path: String,
    pub why: IgnoredWhy,
}

/// Every key of `document` that the structs do not read, each reported once. Ignored sections are
/// not entered: one report for `scheduler`, none for its children. Recursion depth is bounded by
/// the depth of `TOP_KEYS`, not by the document.
pub(crate) fn ignored_keys(document: &Value) -> Vec<Ignored> {
    let mut out = Vec::new();
    if let Value::Mapping(map) = document {
        walk(map, TOP_KEYS, "", &mut out);
    }
    out
}

fn walk(map: &Mapping, known: &'static [(&'static str, Key)], prefix: &str, out: &mut Vec<Ignored>) {
    for (key, value) in map {
        let name = key_text(key);
        let entry = known.iter().find(|(known_name, _)| *known_name == name);
        let path = match prefix {
            "" => name,
            _ => format!("{prefix}.{name}"),
        };
        match entry {
            None => out.push(Ignored { path, why: IgnoredWhy::Unknown }),
            Some((_, Unused)) => out.push(Ignored { path, why: IgnoredWhy::Unused }),
            Some((_, Used)) => {}
            Some((_, Section(children))) => {
                // A non-mapping here is a type error that the struct pass has already reported.
                if let Value::Mapping(child) = value {
                    walk(child, children, &path, out);
                }
            }
        }
    }
}

fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) if s.chars().count() > MAX_QUOTED_CHARS => {
            let cut: String = s.chars().take(MAX_QUOTED_CHARS).collect();
            format!("{cut}…")
        }
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".to_string(),
        _ => "<non-scalar key>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_scalar<T: for<'de> Deserialize<'de> + PartialEq + fmt::Debug>(yaml: &str, expected: Result<T, &str>) {
        let got: Result<T, String> = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string());
        match (&got, &expected) {
            (Ok(value), Ok(want)) => assert_eq!(value, want, "yaml {yaml:?}"),
            (Err(message), Err(fragment)) => {
                assert!(message.contains(fragment), "yaml {yaml:?}: {message:?} lacks {fragment:?}")
            }
            _ => panic!("yaml {yaml:?}: got {got:?}, expected {expected:?}"),
        }
    }

    #[test]
    fn durations_from_yaml() {
        let s = Duration::from_secs;
        check_scalar("30s", Ok(Dur(s(30))));
        check_scalar("1m0s", Ok(Dur(s(60))));
        check_scalar("\"6h\"", Ok(Dur(s(6 * 3600))));
        check_scalar("0", Ok(Dur(s(0))));
        check_scalar::<Dur>("60", Err("has no unit"));
        check_scalar::<Dur>("1.5", Err("expected a duration"));
        check_scalar::<Dur>("true", Err("expected a duration"));
        check_scalar::<Dur>("banana", Err("invalid duration \"banana\""));
        check_scalar::<Dur>("[1s]", Err("expected a duration"));
        check_scalar("1m", Ok(NonZeroDur(s(60))));
        check_scalar::<NonZeroDur>("0s", Err("greater than 0"));
        check_scalar::<NonZeroDur>("0", Err("greater than 0"));
    }

    #[test]
    fn sizes_from_yaml() {
        check_scalar("50Gi", Ok(Size(50 << 30)));
        check_scalar("1024", Ok(Size(1024)));
        check_scalar("1024.0", Ok(Size(1024)));
        check_scalar("0", Ok(Size(0)));
        check_scalar::<Size>("-1", Err("must not be negative"));
        check_scalar::<Size>("-1Gi", Err("must not be negative"));
        check_scalar::<Size>("1.5", Err("whole"));
        check_scalar::<Size>("99999999999999999999999", Err("too large"));
        check_scalar::<Size>("true", Err("expected a size"));
    }

    #[test]
    fn percents_flags_counts_from_yaml() {
        check_scalar("80", Ok(Percent(80.0)));
        check_scalar("99.5", Ok(Percent(99.5)));
        check_scalar("100", Ok(Percent(100.0)));
        check_scalar::<Percent>("0", Err("out of range"));
        check_scalar::<Percent>("100.1", Err("out of range"));
        check_scalar::<Percent>("-5", Err("out of range"));
        check_scalar::<Percent>(".nan", Err("out of range"));
        check_scalar::<Percent>("abc", Err("expected a percentage"));
        check_scalar::<Percent>("\"80\"", Err("expected a percentage"));
        check_scalar("true", Ok(Flag(true)));
        check_scalar("False", Ok(Flag(false)));
        check_scalar("yes", Ok(Flag(true)));
        check_scalar("off", Ok(Flag(false)));
        check_scalar::<Flag>("1", Err("expected true or false"));
        check_scalar::<Flag>("maybe", Err("expected true or false"));
        check_scalar("100", Ok(Count(100)));
        check_scalar("0", Ok(Count(0)));
        check_scalar::<Count>("-1", Err("out of range"));
        check_scalar::<Count>("65537", Err("out of range"));
        check_scalar::<Count>("ten", Err("expected a whole number"));
    }

    #[test]
    fn strategies_from_yaml() {
        let name = |strategy, trailing_dot| Ok(StrategyName { strategy, trailing_dot });
        check_scalar("io.d7y.storage.v2.simple", name(Strategy::Simple, false));
        check_scalar("io.d7y.storage.v2.advance", name(Strategy::Advance, false));
        check_scalar("io.d7y.storage.v2.advance.", name(Strategy::Advance, true));
        check_scalar::<StrategyName>("io.d7y.storage.v2.advance..", Err("unknown storage strategy"));
        check_scalar::<StrategyName>("io.d7y.storage.v1", Err("unknown storage strategy"));
        check_scalar::<StrategyName>("5", Err("expected `io.d7y.storage.v2.simple`"));
    }

    #[test]
    fn paths_and_addresses_from_yaml() {
        let path = |p: &str| Some(PathBuf::from(p));
        check_scalar("/var/lib/dragonfly", Ok(AbsPath(path("/var/lib/dragonfly"))));
        check_scalar("\"\"", Ok(AbsPath(None)));
        check_scalar::<AbsPath>("data/dir", Err("must be absolute"));
        check_scalar::<AbsPath>("~/dragonfly", Err("must be absolute"));
        check_scalar("/run/d.sock", Ok(SocketPath(path("/run/d.sock"))));
        let long = format!("/{}", "s".repeat(MAX_SOCKET_PATH_BYTES));
        check_scalar::<SocketPath>(&long, Err("107 bytes"));
        check_scalar::<SocketPath>("rel.sock", Err("must be absolute"));
        check_scalar(":8000", Ok(ListenAddr(Some(":8000".into()))));
        check_scalar("127.0.0.1:8000", Ok(ListenAddr(Some("127.0.0.1:8000".into()))));
        check_scalar("\"[::1]:8000\"", Ok(ListenAddr(Some("[::1]:8000".into()))));
        check_scalar::<ListenAddr>("8000", Err("expected a listen address"));
        check_scalar::<ListenAddr>("localhost", Err("invalid listen address"));
        check_scalar::<ListenAddr>(":http", Err("invalid listen address"));
        check_scalar("http://p.example:3128", Ok(ProxyUrl(Some("http://p.example:3128".into()))));
        check_scalar("\"\"", Ok(ProxyUrl(None)));
        check_scalar::<ProxyUrl>("p.example:3128", Err("invalid proxy URL"));
        check_scalar::<ProxyUrl>("ftp://p.example", Err("invalid proxy URL"));
    }

    #[test]
    fn long_values_are_cut_in_messages() {
        let long = "x".repeat(10 * MAX_QUOTED_CHARS);
        let message = serde_yaml_ng::from_str::<Dur>(&long).unwrap_err().to_string();
        assert!(message.len() < 4 * MAX_QUOTED_CHARS, "{message}");
        let message = serde_yaml_ng::from_str::<Percent>(&long).unwrap_err().to_string();
        assert!(message.contains(&format!("\"{}\"…", "x".repeat(MAX_QUOTED_CHARS))), "{message}");
        let document: Value = serde_yaml_ng::from_str(&format!("{long}: 1")).unwrap();
        let ignored = ignored_keys(&document);
        assert_eq!(ignored[0].path, format!("{}…", "x".repeat(MAX_QUOTED_CHARS)));
    }

    #[test]
    fn host_lists_from_yaml() {
        let hosts = |h: &[&str]| Ok(HostList(h.iter().map(|s| s.to_string()).collect()));
        check_scalar("[localhost:5000, reg.example]", hosts(&["localhost:5000", "reg.example"]));
        check_scalar("[]", hosts(&[]));
        check_scalar::<HostList>("[\"http://reg.example\"]", Err("invalid registry host"));
        check_scalar::<HostList>("localhost:5000", Err("a list of registry hosts"));
        let many = format!("[{}]", vec!["h"; MAX_INSECURE_REGISTRIES + 1].join(","));
        check_scalar::<HostList>(&many, Err("more than 256 entries"));
    }

    fn check_ignored(yaml: &str, expected: &[(&str, IgnoredWhy)]) {
        let document: Value = serde_yaml_ng::from_str(yaml).unwrap();
        let got = ignored_keys(&document);
        let got: Vec<(&str, IgnoredWhy)> = got.iter().map(|i| (i.path.as_str(), i.why)).collect();
        assert_eq!(got, expected, "yaml {yaml:?}");
    }

    #[test]
    fn ignored_keys_reported_once_each() {
        use IgnoredWhy::{Unknown, Unused};
        check_ignored("gcInterval: 1m\nstorage: {multiplex: true}", &[]);
        check_ignored("scheduler: {manager: {netAddrs: [{addr: 'a:1'}]}}", &[]);
        check_ignored(
            "scheduler: {scheduleTimeout: 1s, netAddr: []}",
            &[("scheduler.scheduleTimeout", Unused), ("scheduler.netAddr", Unknown)],
        );
        check_ignored("security: {autoIssueCert: true}", &[("security", Unused)]);
        check_ignored("schedulr: {a: {b: c}}", &[("schedulr", Unknown)]);
        check_ignored(
            "storage: {diskGcThreshold: 1Gi, dataPath: /x, multiplex: true}",
            &[("storage.diskGcThreshold", Unknown), ("storage.dataPath", Unused)],
        );
        check_ignored(
            "download: {downloadGRPC: {security: {insecure: true}, unixListen: {mode: 1}}}",
            &[("download.downloadGRPC.security", Unused), ("download.downloadGRPC.unixListen.mode", Unknown)],
        );
        check_ignored(
            "download: {resourceClients: {oras: {dialTimeout: 1s, dialTimout: 1s}, s3: {}}}",
            &[("download.resourceClients.oras.dialTimout", Unknown), ("download.resourceClients.s3", Unknown)],
        );
        check_ignored("oras: {insecure: true}", &[("oras.insecure", Unknown)]);
        check_ignored("5: x\ntrue: y", &[("5", Unknown), ("true", Unknown)]);
        check_ignored("storage:\noras: 5", &[]);
        check_ignored("[1, 2]", &[]);
    }
}
