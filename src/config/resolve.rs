//! From what the YAML says to what the code uses: parse the text twice — as a generic YAML tree
//! (for syntax errors and the ignored-key warnings) and into the `raw` structs (for values, whose
//! errors carry line and column) — then lay the raw values over the defaults. Invariant: every
//! value that reaches `Config` was validated inside serde, so resolution itself cannot fail; it
//! only chooses between sources and records each choice the user might not expect as one warning.

use std::path::PathBuf;

use serde_yaml_ng::Value;

use super::raw::{self, IgnoredWhy, RawConfig, RawStorage, RawTransport};
use super::{Config, ConfigError, ConfigErrorKind, Loaded, StorageConfig, TransportConfig};

/// Warnings past this are summarised in one line: a file of typos should not flood the log.
pub const MAX_WARNINGS: usize = 64;

pub(crate) fn load_text(text: &str, origin: &str, defaults: Config) -> Result<Loaded, ConfigError> {
    if text.len() as u64 > super::MAX_CONFIG_BYTES {
        let message = format!("larger than {} bytes; is this a config file?", super::MAX_CONFIG_BYTES);
        return Err(ConfigError::new(ConfigErrorKind::TooLarge, origin, message));
    }
    let document: Value = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(ConfigErrorKind::Syntax, origin, &e))?;
    // An empty file, or one whose every line is commented out, is a valid "all defaults" config.
    let raw: RawConfig = match document {
        Value::Null => RawConfig::default(),
        _ => serde_yaml_ng::from_str(text).map_err(|e| yaml_error(ConfigErrorKind::Invalid, origin, &e))?,
    };
    let mut notes = Vec::new();
    for ignored in raw::ignored_keys(&document) {
        notes.push(match ignored.why {
            IgnoredWhy::Unknown => format!("ignoring unknown key `{}`", ignored.path),
            IgnoredWhy::Unused => format!("ignoring `{}`: not used by this daemon", ignored.path),
        });
    }
    let config = resolve(raw, defaults, &mut notes);
    Ok(Loaded { config, warnings: bounded_warnings(origin, notes) })
}

fn bounded_warnings(origin: &str, notes: Vec<String>) -> Vec<String> {
    let n_notes = notes.len();
    let mut warnings: Vec<String> =
        notes.into_iter().take(MAX_WARNINGS).map(|note| format!("config {origin}: {note}")).collect();
    if n_notes > MAX_WARNINGS {
        let n_more = n_notes - MAX_WARNINGS;
        warnings.push(format!("config {origin}: ... and {n_more} more warnings"));
    }
    warnings
}

/// serde_yaml_ng puts the position both in `location()` and at the end of the text; keep it once,
/// in the structured field, so `Display` reads "config FILE: line L column C: message".
fn yaml_error(kind: ConfigErrorKind, origin: &str, error: &serde_yaml_ng::Error) -> ConfigError {
    let location = error.location().map(|l| (l.line(), l.column()));
    let mut message = error.to_string();
    if let Some((line, column)) = location {
        message = message.replacen(&format!(" at line {line} column {column}"), "", 1);
    }
    ConfigError { kind, message, origin: origin.to_string(), location }
}

fn resolve(raw: RawConfig, defaults: Config, notes: &mut Vec<String>) -> Config {
    let path = |value: Option<raw::AbsPath>| value.and_then(|p| p.0);
    let work_home = path(raw.work_home);
    // Dragonfly derives its directories from workHome; do the same, but only for those not set.
    let under_home = |leaf: &str, default: PathBuf| match &work_home {
        Some(home) => home.join(leaf),
        None => default,
    };
    let data_dir = path(raw.data_dir).unwrap_or_else(|| under_home("data", defaults.data_dir));
    let log_dir = path(raw.log_dir).unwrap_or_else(|| under_home("logs", defaults.log_dir));
    let cache_dir = path(raw.cache_dir).unwrap_or_else(|| under_home("cache", defaults.cache_dir));

    let download = raw.download.unwrap_or_default();
    let socket_path = download
        .download_grpc
        .and_then(|grpc| grpc.unix_listen)
        .and_then(|unix| unix.socket)
        .and_then(|socket| socket.0)
        .unwrap_or(defaults.socket_path);
    let clients = download.resource_clients.unwrap_or_default();
    let oras = pick(("oras", raw.oras), ("download.resourceClients.oras", clients.oras), notes);
    let http =
        pick(("download.resourceClients.http", clients.http), ("download.resourceClients.https", clients.https), notes);

    Config {
        data_dir,
        log_dir,
        work_home: work_home.unwrap_or(defaults.work_home),
        cache_dir,
        socket_path,
        gc_interval: raw.gc_interval.map_or(defaults.gc_interval, |d| d.0),
        alive_time: raw.alive_time.map_or(defaults.alive_time, |d| d.0),
        keep_storage: raw.keep_storage.map_or(defaults.keep_storage, |f| f.0),
        metrics: raw.metrics.and_then(|m| m.0).or(defaults.metrics),
        verbose: raw.verbose.map_or(defaults.verbose, |f| f.0),
        console: raw.console.map_or(defaults.console, |f| f.0),
        total_rate_limit_bytes_per_sec: match download.total_rate_limit {
            // Dragonfly has no "unlimited" spelling; 0 is the natural one.
            Some(raw::Size(0)) => None,
            Some(raw::Size(bytes)) => Some(bytes),
            None => defaults.total_rate_limit_bytes_per_sec,
        },
        storage: resolve_storage(raw.storage, defaults.storage, notes),
        oras: resolve_transport(oras, defaults.oras),
        http: resolve_transport(http, defaults.http),
        p2p: super::p2p::resolve(raw.scheduler, raw.host, raw.upload, notes).or(defaults.p2p),
    }
}

/// Of two spellings of one transport block, the second wins as a whole (mixing keys from both
/// would make a setting's source hard to find); a warning says which one was dropped.
fn pick(
    first: (&str, Option<RawTransport>),
    second: (&str, Option<RawTransport>),
    notes: &mut Vec<String>,
) -> Option<RawTransport> {
    match (first.1, second.1) {
        (Some(_), Some(winner)) => {
            notes.push(format!(
                "both `{}` and `{}` are set: using `{}`, ignoring `{}`",
                first.0, second.0, second.0, first.0
            ));
            Some(winner)
        }
        (one, other) => other.or(one),
    }
}

fn resolve_storage(raw: Option<RawStorage>, defaults: StorageConfig, notes: &mut Vec<String>) -> StorageConfig {
    let Some(raw) = raw else { return defaults };
    if let Some(name) = raw.strategy.filter(|name| name.trailing_dot) {
        let strategy = name.strategy.as_str();
        notes.push(format!("`storage.strategy` has a trailing dot: read `{strategy}.` as `{strategy}`"));
    }
    StorageConfig {
        task_expire_time: raw.task_expire_time.map_or(defaults.task_expire_time, |d| d.0),
        strategy: raw.strategy.map_or(defaults.strategy, |s| s.strategy),
        disk_gc_threshold_bytes: raw.disk_gc_threshold.map_or(defaults.disk_gc_threshold_bytes, |s| s.0),
        disk_gc_threshold_percent: raw.disk_gc_threshold_percent.map_or(defaults.disk_gc_threshold_percent, |p| p.0),
        multiplex: raw.multiplex.map_or(defaults.multiplex, |f| f.0),
    }
}

fn resolve_transport(raw: Option<RawTransport>, d: TransportConfig) -> TransportConfig {
    let Some(raw) = raw else { return d };
    let duration = |value: Option<raw::Dur>, default| value.map_or(default, |v| v.0);
    let count = |value: Option<raw::Count>, default| value.map_or(default, |v| v.0);
    TransportConfig {
        proxy: raw.proxy.and_then(|p| p.0).or(d.proxy),
        dial_timeout: duration(raw.dial_timeout, d.dial_timeout),
        keep_alive: duration(raw.keep_alive, d.keep_alive),
        max_idle_conns: count(raw.max_idle_conns, d.max_idle_conns),
        max_idle_conns_per_host: count(raw.max_idle_conns_per_host, d.max_idle_conns_per_host),
        max_conns_per_host: count(raw.max_conns_per_host, d.max_conns_per_host),
        idle_conn_timeout: duration(raw.idle_conn_timeout, d.idle_conn_timeout),
        response_header_timeout: duration(raw.response_header_timeout, d.response_header_timeout),
        tls_handshake_timeout: duration(raw.tls_handshake_timeout, d.tls_handshake_timeout),
        expect_continue_timeout: duration(raw.expect_continue_timeout, d.expect_continue_timeout),
        insecure_skip_verify: raw.insecure_skip_verify.map_or(d.insecure_skip_verify, |f| f.0),
        ca_file: raw.ca_file.and_then(|p| p.0).or(d.ca_file),
        insecure_registries: raw.insecure_registries.map_or(d.insecure_registries, |h| h.0),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Strategy, UserEnv};
    use super::*;
    use std::time::Duration;

    const SEED: &str = include_str!("../../tests/fixtures/seed-dfget.yaml");
    const PACKAGED: &str = include_str!("../../tests/fixtures/dragonfly-packaged-dfget.yaml");
    const SAMPLE: &str = include_str!("../../config/dfget.yaml");

    fn user_env() -> UserEnv {
        UserEnv { uid: 1000, home: Some("/home/u".into()), ..UserEnv::default() }
    }

    fn load(yaml: &str) -> Result<Loaded, ConfigError> {
        load_text(yaml, "test.yaml", Config::defaults_for(&user_env()))
    }

    fn loaded(yaml: &str) -> Loaded {
        load(yaml).unwrap_or_else(|e| panic!("{yaml:?} failed: {e}"))
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn seed_yaml_loads_verbatim() {
        let Loaded { config, warnings } = loaded(SEED);
        let storage = &config.storage;
        assert_eq!(storage.task_expire_time, secs(6 * 3600));
        assert_eq!(storage.strategy, Strategy::Advance);
        assert_eq!(storage.disk_gc_threshold_bytes, 50 << 30);
        assert_eq!(storage.disk_gc_threshold_percent, 80.0);
        assert!(storage.multiplex);
        let oras = &config.oras;
        assert_eq!(oras.proxy, None);
        assert!(oras.insecure_skip_verify);
        assert_eq!(oras.max_idle_conns, 100);
        assert_eq!(oras.expect_continue_timeout, secs(10));
        assert_eq!(config.http, TransportConfig::default());
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("trailing dot"), "{warnings:?}");
    }

    #[test]
    fn packaged_yaml_loads_with_one_warning_per_ignored_key() {
        let Loaded { config, warnings } = loaded(PACKAGED);
        assert_eq!(config.alive_time, Duration::ZERO);
        assert_eq!(config.gc_interval, secs(60));
        assert!(config.keep_storage && config.verbose && !config.console);
        assert_eq!(config.total_rate_limit_bytes_per_sec, Some(1024 << 20));
        assert_eq!(config.socket_path, PathBuf::from("/var/run/dfdaemon.sock"));
        assert_eq!(config.storage.task_expire_time, secs(600));
        assert_eq!(config.storage.strategy, Strategy::Simple);
        // Its scheduler, host and upload sections join a cluster.
        let p2p = config.p2p.as_ref().expect("the packaged file names schedulers");
        assert_eq!(p2p.schedulers.len(), 3);
        assert_eq!(p2p.schedulers[0], "scheduler-0.dragonfly-system.svc:8002");
        assert_eq!(p2p.upload_port, 65020);
        assert_eq!(p2p.upload_rate_limit_bytes_per_sec, Some(1024 << 20));
        assert_eq!(p2p.advertise_ip, None, "0.0.0.0 means detect");
        let expected = [
            "`scheduler.scheduleTimeout`",
            "`download.perPeerRateLimit`",
            "`download.downloadGRPC.security`",
            "`download.peerGRPC`",
            "`upload.security`",
            "`proxy`",
        ];
        assert_eq!(warnings.len(), expected.len(), "{warnings:#?}");
        for (warning, key) in warnings.iter().zip(expected) {
            assert!(warning.contains(key) && warning.contains("not used"), "{warning} vs {key}");
            assert!(warning.starts_with("config test.yaml: "), "{warning}");
        }
    }

    #[test]
    fn sample_loads_without_warnings() {
        let Loaded { config, warnings } = loaded(SAMPLE);
        assert_eq!(warnings, Vec::<String>::new());
        // The sample spells out the defaults, so it must resolve to exactly them.
        assert_eq!(config, Config::defaults_for(&user_env()));
    }

    fn check_warnings(yaml: &str, expected: &[&str]) {
        let warnings = loaded(yaml).warnings;
        assert_eq!(warnings.len(), expected.len(), "{yaml:?}: {warnings:#?}");
        for (warning, fragment) in warnings.iter().zip(expected) {
            assert!(warning.contains(fragment), "{yaml:?}: {warning:?} lacks {fragment:?}");
        }
    }

    #[test]
    fn warnings() {
        check_warnings("", &[]);
        check_warnings("# all commented out\n# gcInterval: 1m\n", &[]);
        check_warnings("storage:\n  strategy: io.d7y.storage.v2.advance.\n", &["trailing dot"]);
        check_warnings("storage:\n  strategy: io.d7y.storage.v2.simple\n", &[]);
        check_warnings("gcIntervall: 1m\n", &["ignoring unknown key `gcIntervall`"]);
        check_warnings(
            "scheduler:\n  manager:\n    netAddrs: [{type: tcp, addr: 'm:65003'}]\nfoo: {bar: 1}\n",
            &["ignoring unknown key `foo`", "scheduler.manager.netAddrs (m:65003) is not asked"],
        );
        check_warnings("scheduler:\n  manager:\n    enable: true\n    netAddrs: [{addr: 'm:65003'}]\n", &[]);
        check_warnings(
            "scheduler: {manager: {enable: true, seedPeer: {enable: false}}}\n",
            &["seedPeer", "lists no manager"],
        );
        check_warnings("storage: {diskGcThreshold: 1Gi, multiplex: true}", &["unknown key `storage.diskGcThreshold`"]);
        check_warnings(
            "oras: {dialTimeout: 1s}\ndownload: {resourceClients: {oras: {dialTimeout: 2s}}}",
            &["using `download.resourceClients.oras`, ignoring `oras`"],
        );
        check_warnings(
            "download: {resourceClients: {http: {}, https: {}}}",
            &["using `download.resourceClients.https`"],
        );
        let many: String = (0..100).map(|i| format!("k{i}: 1\n")).collect();
        let warnings = loaded(&many).warnings;
        assert_eq!(warnings.len(), MAX_WARNINGS + 1);
        assert!(warnings[MAX_WARNINGS].contains("36 more"), "{:?}", warnings[MAX_WARNINGS]);
    }

    fn check_error(yaml: &str, kind: ConfigErrorKind, line: usize, column: usize, fragment: &str) {
        let error = match load(yaml) {
            Ok(loaded) => panic!("{yaml:?} loaded: {:?}", loaded.config),
            Err(error) => error,
        };
        let shown = error.to_string();
        assert_eq!(error.kind, kind, "{yaml:?}: {shown}");
        assert_eq!(error.location, Some((line, column)), "{yaml:?}: {shown}");
        let prefix = format!("config test.yaml: line {line} column {column}: ");
        assert!(shown.starts_with(&prefix), "{yaml:?}: {shown}");
        assert!(shown.contains(fragment), "{yaml:?}: {shown:?} lacks {fragment:?}");
        assert!(!shown.ends_with(&format!("at line {line} column {column}")), "{shown}");
    }

    #[test]
    fn errors_carry_line_and_column() {
        use ConfigErrorKind::{Invalid, Syntax};
        check_error("storage:\n  diskGCThresholdPercent: abc\n", Invalid, 2, 27, "expected a percentage");
        check_error("storage:\n  diskGCThresholdPercent: 0\n", Invalid, 2, 27, "out of range");
        check_error("storage:\n  diskGCThresholdPercent: 101\n", Invalid, 2, 27, "out of range");
        check_error("storage: 5\n", Invalid, 1, 10, "expected a mapping of storage settings");
        check_error("gcInterval: banana\n", Invalid, 1, 13, "invalid duration \"banana\"");
        check_error("gcInterval: 0s\n", Invalid, 1, 13, "greater than 0");
        check_error("aliveTime: 300\n", Invalid, 1, 12, "no unit");
        check_error("storage:\n  diskGCThreshold: -5Gi\n", Invalid, 2, 20, "must not be negative");
        check_error("storage:\n  diskGCThreshold: -5\n", Invalid, 2, 20, "must not be negative");
        check_error("storage:\n  strategy: io.d7y.storage.v3\n", Invalid, 2, 13, "unknown storage strategy");
        check_error("keepStorage: maybe\n", Invalid, 1, 14, "expected true or false");
        check_error("dataDir: relative/dir\n", Invalid, 1, 10, "must be absolute");
        check_error("download:\n  totalRateLimit: fast\n", Invalid, 2, 19, "invalid size");
        check_error("oras:\n  maxIdleConns: -1\n", Invalid, 2, 17, "out of range");
        check_error("oras:\n  proxy: nope\n", Invalid, 2, 10, "invalid proxy URL");
        check_error(
            "download:\n  resourceClients:\n    https:\n      tlsHandshakeTimeout: 3\n",
            Invalid,
            4,
            28,
            "no unit",
        );
        check_error("- a\n- b\n", Invalid, 1, 1, "a mapping of dfget daemon settings");
        // serde_yaml_ng places a duplicate at the start of its mapping; the message names the key.
        check_error("gcInterval: 1m\ngcInterval: 2m\n", Syntax, 1, 1, "duplicate entry with key \"gcInterval\"");
        check_error("storage:\n  multiplex: true\n  multiplex: false\n", Syntax, 2, 3, "\"multiplex\"");
        check_error("storage:\n  multiplex: [true\n", Syntax, 3, 1, "");
    }

    #[test]
    fn empty_values_are_unset() {
        let yaml = "dataDir:\nmetrics: \"\"\nstorage:\noras:\n  proxy:\n  caFile: ''\n  dialTimeout:\n";
        let Loaded { config, warnings } = loaded(yaml);
        assert_eq!(config, Config::defaults_for(&user_env()));
        assert!(warnings.is_empty(), "{warnings:?}");
    }

    #[test]
    fn socket_path_key_is_honoured() {
        let yaml = "download:\n  downloadGRPC:\n    unixListen:\n      socket: /run/x/df.sock\n";
        assert_eq!(loaded(yaml).config.socket_path, PathBuf::from("/run/x/df.sock"));
        let yaml = "download:\n  downloadGRPC:\n    unixListen:\n      socket:\n";
        assert_eq!(loaded(yaml).config.socket_path, Config::defaults_for(&user_env()).socket_path);
    }

    fn check_dirs(yaml: &str, expected: [&str; 4]) {
        let config = loaded(yaml).config;
        let got = [&config.work_home, &config.data_dir, &config.log_dir, &config.cache_dir];
        let expected = expected.map(PathBuf::from);
        assert_eq!(got, expected.each_ref(), "{yaml:?}");
    }

    #[test]
    fn work_home_derives_unset_dirs() {
        let data = "/home/u/.local/share/dragonfly";
        let log = "/home/u/.local/state/dragonfly/log";
        let cache = "/home/u/.cache/dragonfly";
        check_dirs("", [data, data, log, cache]);
        check_dirs("workHome: /w", ["/w", "/w/data", "/w/logs", "/w/cache"]);
        check_dirs("workHome: /w\nlogDir: /l", ["/w", "/w/data", "/l", "/w/cache"]);
        check_dirs("dataDir: /d\ncacheDir: /c", [data, "/d", log, "/c"]);
        check_dirs("workHome: ''\ndataDir: /d", [data, "/d", log, cache]);
    }

    #[test]
    fn oras_block_precedence() {
        let top = "oras: {dialTimeout: 1s, maxIdleConns: 7}\n";
        let nested = "download: {resourceClients: {oras: {dialTimeout: 2s}}}\n";
        let config = loaded(top).config;
        assert_eq!((config.oras.dial_timeout, config.oras.max_idle_conns), (secs(1), 7));
        let config = loaded(nested).config;
        assert_eq!(config.oras.dial_timeout, secs(2));
        // The nested block wins as a whole: maxIdleConns from the top-level block is not mixed in.
        let config = loaded(&format!("{top}{nested}")).config;
        assert_eq!((config.oras.dial_timeout, config.oras.max_idle_conns), (secs(2), 100));
        assert_eq!(config.http, TransportConfig::default());
    }

    #[test]
    fn keep_storage_defaults_to_true() {
        assert!(loaded("").config.keep_storage);
        assert!(loaded("keepStorage:").config.keep_storage);
        assert!(!loaded("keepStorage: false").config.keep_storage);
    }

    #[test]
    fn rate_limit_zero_is_unlimited() {
        let rate = |yaml: &str| loaded(yaml).config.total_rate_limit_bytes_per_sec;
        assert_eq!(rate(""), None);
        assert_eq!(rate("download: {totalRateLimit: 0}"), None);
        assert_eq!(rate("download: {totalRateLimit: 100Mi}"), Some(100 << 20));
        assert_eq!(rate("download: {totalRateLimit: 1000}"), Some(1000));
    }

    /// Every key the tree calls `Used`, set to a non-default value, must change the `Config`:
    /// this catches a key listed in `raw::TOP_KEYS` under a name the structs do not read.
    #[test]
    fn every_used_key_is_honoured() {
        let transport = "{proxy: 'http://p:3128', dialTimeout: 1s, keepAlive: 2s, maxIdleConns: 3, \
            maxIdleConnsPerHost: 4, maxConnsPerHost: 5, idleConnTimeout: 6s, responseHeaderTimeout: 7s, \
            tlsHandshakeTimeout: 8s, expectContinueTimeout: 9s, insecureSkipVerify: true, \
            caFile: /ca.pem, insecureRegistries: ['localhost:5000']}";
        let yaml = format!(
            "aliveTime: 5m\ngcInterval: 2m\nmetrics: ':8000'\nworkHome: /w\ncacheDir: /c\nlogDir: /l\n\
             dataDir: /d\nkeepStorage: false\nverbose: true\nconsole: true\n\
             storage: {{taskExpireTime: 1h, strategy: io.d7y.storage.v2.advance, diskGCThreshold: 1Gi, \
             diskGCThresholdPercent: 50, multiplex: false}}\noras: {transport}\n\
             download: {{totalRateLimit: 1Mi, downloadGRPC: {{unixListen: {{socket: /s.sock}}}}, \
             resourceClients: {{https: {transport}}}}}\n"
        );
        let Loaded { config, warnings } = loaded(&yaml);
        assert!(warnings.is_empty(), "{warnings:?}");
        let want_transport = TransportConfig {
            proxy: Some("http://p:3128".into()),
            dial_timeout: secs(1),
            keep_alive: secs(2),
            max_idle_conns: 3,
            max_idle_conns_per_host: 4,
            max_conns_per_host: 5,
            idle_conn_timeout: secs(6),
            response_header_timeout: secs(7),
            tls_handshake_timeout: secs(8),
            expect_continue_timeout: secs(9),
            insecure_skip_verify: true,
            ca_file: Some("/ca.pem".into()),
            insecure_registries: vec!["localhost:5000".into()],
        };
        let want = Config {
            data_dir: "/d".into(),
            log_dir: "/l".into(),
            work_home: "/w".into(),
            cache_dir: "/c".into(),
            socket_path: "/s.sock".into(),
            gc_interval: secs(120),
            alive_time: secs(300),
            keep_storage: false,
            metrics: Some(":8000".into()),
            verbose: true,
            console: true,
            total_rate_limit_bytes_per_sec: Some(1 << 20),
            storage: StorageConfig {
                task_expire_time: secs(3600),
                strategy: Strategy::Advance,
                disk_gc_threshold_bytes: 1 << 30,
                disk_gc_threshold_percent: 50.0,
                multiplex: false,
            },
            oras: want_transport.clone(),
            http: want_transport,
            p2p: None,
        };
        assert_eq!(config, want);
    }

    #[test]
    fn default_paths_per_user() {
        let root = UserEnv { uid: 0, ..UserEnv::default() };
        let config = Config::defaults_for(&root);
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/dragonfly"));
        assert_eq!(config.log_dir, PathBuf::from("/var/log/dragonfly"));
        assert_eq!(config.socket_path, PathBuf::from("/var/run/dfdaemon.sock"));
        assert_eq!(config.work_home, PathBuf::from("/usr/local/dragonfly"));
        assert_eq!(Config::default_path_for(&root), PathBuf::from("/etc/dragonfly/dfget.yaml"));

        let xdg = UserEnv {
            uid: 1000,
            home: Some("/home/u".into()),
            xdg_config_home: Some("/cfg".into()),
            xdg_data_home: Some("/data".into()),
            xdg_state_home: Some("/state".into()),
            xdg_cache_home: Some("/cache".into()),
            xdg_runtime_dir: Some("/run/user/1000".into()),
        };
        let config = Config::defaults_for(&xdg);
        assert_eq!(config.data_dir, PathBuf::from("/data/dragonfly"));
        assert_eq!(config.log_dir, PathBuf::from("/state/dragonfly/log"));
        assert_eq!(config.cache_dir, PathBuf::from("/cache/dragonfly"));
        assert_eq!(config.socket_path, PathBuf::from("/run/user/1000/dragonfly/dfdaemon.sock"));
        assert_eq!(Config::default_path_for(&xdg), PathBuf::from("/cfg/dragonfly/dfget.yaml"));

        let config = Config::defaults_for(&user_env());
        assert_eq!(config.socket_path, PathBuf::from("/tmp/dragonfly-1000/dfdaemon.sock"));
        let home_cfg = PathBuf::from("/home/u/.config/dragonfly/dfget.yaml");
        assert_eq!(Config::default_path_for(&user_env()), home_cfg);

        let homeless = UserEnv { uid: 7, ..UserEnv::default() };
        let config = Config::defaults_for(&homeless);
        assert_eq!(config.data_dir, PathBuf::from("/tmp/dragonfly-7/data"));
        assert_eq!(config.log_dir, PathBuf::from("/tmp/dragonfly-7/state/log"));
    }

    #[test]
    fn load_path_missing_and_present() {
        let dir = std::env::temp_dir().join(format!("dfget-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let defaults = Config::defaults_for(&user_env());
        let missing = dir.join("absent.yaml");
        let loaded = Config::load_path_with_defaults(&missing, false, defaults.clone()).unwrap();
        assert_eq!(loaded.config, defaults);
        assert_eq!(loaded.warnings, vec![format!("no config at {}, using defaults", missing.display())]);
        let error = Config::load_path_with_defaults(&missing, true, defaults.clone()).unwrap_err();
        assert_eq!(error.kind, ConfigErrorKind::Missing);

        let present = dir.join("dfget.yaml");
        std::fs::write(&present, "gcInterval: 5m\nstorage: 5\n").unwrap();
        let error = Config::load_path_with_defaults(&present, false, defaults.clone()).unwrap_err();
        let prefix = format!("config {}: line 2 column 10: ", present.display());
        assert!(error.to_string().starts_with(&prefix), "{error}");

        std::fs::write(&present, vec![b'#'; super::super::MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let error = Config::load_path_with_defaults(&present, true, defaults.clone()).unwrap_err();
        assert_eq!(error.kind, ConfigErrorKind::TooLarge);
        std::fs::write(&present, b"gcInterval: \xff\n").unwrap();
        let error = Config::load_path_with_defaults(&present, true, defaults).unwrap_err();
        assert_eq!(error.kind, ConfigErrorKind::Syntax);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
