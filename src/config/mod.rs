//! The daemon's configuration: Dragonfly's `dfget.yaml` read into a typed `Config`. `raw` says what
//! the YAML holds, `resolve` turns it into what the code uses, `units` parses durations and sizes.
//! Invariant: loading never fails on a key it does not know (one warning per ignored key) and
//! always fails — with file, line and column — on a known key holding a bad value; a `Config`
//! handed out is complete (every field resolved against the per-user defaults) and needs no further
//! checking. Loading is blocking `std::fs` on purpose: it runs once, before any runtime starts.

mod p2p;
mod raw;
mod resolve;
pub mod units;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use p2p::{P2pConfig, MAX_SCHEDULERS};

/// A dfget.yaml larger than this is not a config file (Dragonfly's packaged one is ~4 KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub data_dir: PathBuf,
    pub log_dir: PathBuf,
    pub work_home: PathBuf,
    pub cache_dir: PathBuf,
    /// `download.downloadGRPC.unixListen.socket`, else the per-user default.
    pub socket_path: PathBuf,
    /// How often the GC loop runs (default 1m; never zero).
    pub gc_interval: Duration,
    /// Idle time after which the daemon exits; zero = never.
    pub alive_time: Duration,
    /// Keep the task cache when the daemon stops. Default true (Go's default, false, wipes it).
    pub keep_storage: bool,
    /// Metrics listen address such as `:8000`; None = off.
    pub metrics: Option<String>,
    pub verbose: bool,
    pub console: bool,
    /// `download.totalRateLimit` in bytes per second; None (absent or 0) = unlimited.
    pub total_rate_limit_bytes_per_sec: Option<u64>,
    pub storage: StorageConfig,
    /// Top-level `oras:` (the seed's spelling) or `download.resourceClients.oras` (nested wins).
    pub oras: TransportConfig,
    /// `download.resourceClients.https` or `.http` (https wins), else defaults.
    pub http: TransportConfig,
    /// Joining a Dragonfly cluster (`scheduler`, `host`, `upload`); None = standalone.
    pub p2p: Option<P2pConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// `io.d7y.storage.v2.simple`: download into the data dir, then export to the output path.
    Simple,
    /// `io.d7y.storage.v2.advance`: Dragonfly downloads straight to the output path.
    Advance,
}

impl Strategy {
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Simple => "io.d7y.storage.v2.simple",
            Strategy::Advance => "io.d7y.storage.v2.advance",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StorageConfig {
    /// A task idle (not accessed) this long is reclaimed. Default 6h.
    pub task_expire_time: Duration,
    pub strategy: Strategy,
    /// Byte quota of all tasks; 0 = off.
    pub disk_gc_threshold_bytes: u64,
    /// Disk-used percentage above which the oldest tasks are reclaimed; in (0, 100], default 95.
    pub disk_gc_threshold_percent: f64,
    /// Reuse a finished task for the same task id. Default true.
    pub multiplex: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            task_expire_time: Duration::from_secs(6 * 3600),
            strategy: Strategy::Simple,
            disk_gc_threshold_bytes: 0,
            disk_gc_threshold_percent: 95.0,
            multiplex: true,
        }
    }
}

/// One HTTP transport's settings, named after Go's `http.Transport`. A zero timeout means "no
/// limit", as in Go.
#[derive(Debug, Clone, PartialEq)]
pub struct TransportConfig {
    pub proxy: Option<String>,
    pub dial_timeout: Duration,
    pub keep_alive: Duration,
    pub max_idle_conns: usize,
    pub max_idle_conns_per_host: usize,
    /// 0 = unlimited.
    pub max_conns_per_host: usize,
    pub idle_conn_timeout: Duration,
    pub response_header_timeout: Duration,
    pub tls_handshake_timeout: Duration,
    pub expect_continue_timeout: Duration,
    /// Skip certificate verification. `false` really verifies (unlike Dragonfly, where it cannot
    /// turn verification back on).
    pub insecure_skip_verify: bool,
    /// Extra PEM CA bundle (key `caFile`).
    pub ca_file: Option<PathBuf>,
    /// Hosts (`host[:port]`) allowed to fall back to plain http.
    pub insecure_registries: Vec<String>,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            proxy: None,
            dial_timeout: Duration::from_secs(30),
            keep_alive: Duration::from_secs(30),
            max_idle_conns: 100,
            max_idle_conns_per_host: 16,
            max_conns_per_host: 0,
            idle_conn_timeout: Duration::from_secs(90),
            response_header_timeout: Duration::from_secs(30),
            tls_handshake_timeout: Duration::from_secs(30),
            expect_continue_timeout: Duration::from_secs(10),
            insecure_skip_verify: false,
            ca_file: None,
            insecure_registries: Vec::new(),
        }
    }
}

/// A loaded config and what was ignored or adjusted on the way (one line each, ready to log).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigErrorKind {
    /// A required config file does not exist.
    Missing,
    /// The file exists but could not be read.
    Read,
    /// Larger than `MAX_CONFIG_BYTES`.
    TooLarge,
    /// Not valid YAML (or not UTF-8).
    Syntax,
    /// Valid YAML, but a known key has a wrong type or an out-of-range value.
    Invalid,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub kind: ConfigErrorKind,
    pub message: String,
    /// The file (or other origin) the text came from.
    pub origin: String,
    /// 1-based (line, column) of the offending value, when known.
    pub location: Option<(usize, usize)>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.location {
            Some((line, column)) => write!(f, "config {}: line {line} column {column}: {}", self.origin, self.message),
            None => write!(f, "config {}: {}", self.origin, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn new(kind: ConfigErrorKind, origin: &str, message: String) -> ConfigError {
        ConfigError { kind, message, origin: origin.to_string(), location: None }
    }
}

/// The parts of the process environment that decide the default paths, captured once so that
/// tests can pass their own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserEnv {
    pub uid: u32,
    pub home: Option<PathBuf>,
    pub xdg_config_home: Option<PathBuf>,
    pub xdg_data_home: Option<PathBuf>,
    pub xdg_state_home: Option<PathBuf>,
    pub xdg_cache_home: Option<PathBuf>,
    pub xdg_runtime_dir: Option<PathBuf>,
}

impl UserEnv {
    pub fn current() -> UserEnv {
        // The XDG spec says relative values are invalid and must be ignored; so is an empty HOME.
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
        UserEnv {
            uid: rustix::process::getuid().as_raw(),
            home: var("HOME"),
            xdg_config_home: var("XDG_CONFIG_HOME"),
            xdg_data_home: var("XDG_DATA_HOME"),
            xdg_state_home: var("XDG_STATE_HOME"),
            xdg_cache_home: var("XDG_CACHE_HOME"),
            xdg_runtime_dir: var("XDG_RUNTIME_DIR"),
        }
    }

    fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// Per-user fallback when neither the XDG variable nor HOME is usable.
    fn private_tmp(&self) -> PathBuf {
        PathBuf::from(format!("/tmp/dragonfly-{}", self.uid))
    }

    /// `$XDG_x/dragonfly`, else `$HOME/<home_rel>/dragonfly`, else
    /// `/tmp/dragonfly-$UID/<tmp_leaf>`.
    fn xdg_dir(&self, xdg: &Option<PathBuf>, home_rel: &str, tmp_leaf: &str) -> PathBuf {
        match (xdg, &self.home) {
            (Some(base), _) => base.join("dragonfly"),
            (None, Some(home)) => home.join(home_rel).join("dragonfly"),
            (None, None) => self.private_tmp().join(tmp_leaf),
        }
    }
}

impl Config {
    /// Defaults for this user: root → /var/lib/dragonfly, /var/log/dragonfly,
    /// /var/run/dfdaemon.sock; others → XDG data/state/cache/runtime directories (see
    /// `defaults_for`).
    pub fn defaults() -> Config {
        Config::defaults_for(&UserEnv::current())
    }

    /// Defaults for the given environment. Non-root: data `$XDG_DATA_HOME/dragonfly`, logs
    /// `$XDG_STATE_HOME/dragonfly/log`, cache `$XDG_CACHE_HOME/dragonfly`, socket
    /// `$XDG_RUNTIME_DIR/dragonfly/dfdaemon.sock` (else `/tmp/dragonfly-$UID/dfdaemon.sock`).
    pub fn defaults_for(env: &UserEnv) -> Config {
        let (data_dir, log_dir, work_home, cache_dir, socket_path) = if env.is_root() {
            (
                PathBuf::from("/var/lib/dragonfly"),
                PathBuf::from("/var/log/dragonfly"),
                PathBuf::from("/usr/local/dragonfly"),
                PathBuf::from("/var/cache/dragonfly"),
                PathBuf::from("/var/run/dfdaemon.sock"),
            )
        } else {
            let data_dir = env.xdg_dir(&env.xdg_data_home, ".local/share", "data");
            let socket_dir = match &env.xdg_runtime_dir {
                Some(runtime) => runtime.join("dragonfly"),
                None => env.private_tmp(),
            };
            (
                data_dir.clone(),
                env.xdg_dir(&env.xdg_state_home, ".local/state", "state").join("log"),
                data_dir,
                env.xdg_dir(&env.xdg_cache_home, ".cache", "cache"),
                socket_dir.join("dfdaemon.sock"),
            )
        };
        Config {
            data_dir,
            log_dir,
            work_home,
            cache_dir,
            socket_path,
            gc_interval: Duration::from_secs(60),
            alive_time: Duration::ZERO,
            keep_storage: true,
            metrics: None,
            verbose: false,
            console: false,
            total_rate_limit_bytes_per_sec: None,
            storage: StorageConfig::default(),
            oras: TransportConfig::default(),
            http: TransportConfig::default(),
            p2p: None,
        }
    }

    /// `/etc/dragonfly/dfget.yaml` for root; `$XDG_CONFIG_HOME/dragonfly/dfget.yaml` otherwise.
    pub fn default_path() -> PathBuf {
        Config::default_path_for(&UserEnv::current())
    }

    pub fn default_path_for(env: &UserEnv) -> PathBuf {
        let system = PathBuf::from("/etc/dragonfly/dfget.yaml");
        if env.is_root() {
            return system;
        }
        match (&env.xdg_config_home, &env.home) {
            (Some(base), _) => base.join("dragonfly/dfget.yaml"),
            (None, Some(home)) => home.join(".config/dragonfly/dfget.yaml"),
            // No home to look in: the system file is the only sensible place left.
            (None, None) => system,
        }
    }

    /// Parses YAML text against this user's defaults. `origin` names the file for messages.
    pub fn from_yaml(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
        resolve::load_text(text, origin, Config::defaults())
    }

    /// Parses YAML text against the given defaults (tests, or a caller with its own `UserEnv`).
    pub fn from_yaml_with_defaults(text: &str, origin: &str, defaults: Config) -> Result<Loaded, ConfigError> {
        resolve::load_text(text, origin, defaults)
    }

    /// Reads and parses `path`. A missing file is an error when `required`, else the defaults
    /// with a warning (the caller passes `required = false` for the default path only).
    pub fn load_path(path: &Path, required: bool) -> Result<Loaded, ConfigError> {
        Config::load_path_with_defaults(path, required, Config::defaults())
    }

    pub fn load_path_with_defaults(path: &Path, required: bool, defaults: Config) -> Result<Loaded, ConfigError> {
        let origin = path.display().to_string();
        let text = match read_limited(path, &origin) {
            Ok(text) => text,
            Err(e) if e.kind == ConfigErrorKind::Missing && !required => {
                let warning = format!("no config at {origin}, using defaults");
                return Ok(Loaded { config: defaults, warnings: vec![warning] });
            }
            Err(e) => return Err(e),
        };
        resolve::load_text(&text, &origin, defaults)
    }
}

/// Reads at most `MAX_CONFIG_BYTES` (+1 to detect more) of UTF-8 text.
fn read_limited(path: &Path, origin: &str) -> Result<String, ConfigError> {
    let file = std::fs::File::open(path).map_err(|e| {
        let kind = match e.kind() {
            std::io::ErrorKind::NotFound => ConfigErrorKind::Missing,
            _ => ConfigErrorKind::Read,
        };
        ConfigError::new(kind, origin, format!("cannot open: {e}"))
    })?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::new(ConfigErrorKind::Read, origin, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        let message = format!("larger than {MAX_CONFIG_BYTES} bytes; is this a config file?");
        return Err(ConfigError::new(ConfigErrorKind::TooLarge, origin, message));
    }
    String::from_utf8(bytes).map_err(|e| {
        let message = format!("not UTF-8 text (byte {})", e.utf8_error().valid_up_to());
        ConfigError::new(ConfigErrorKind::Syntax, origin, message)
    })
}
