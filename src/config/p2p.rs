//! The peer-to-peer part of dfget.yaml, in Dragonfly's keys: `scheduler.netAddrs` (the static
//! scheduler list), `scheduler.manager.{enable, netAddrs, refreshInterval}` (the managers that tell
//! the schedulers), `host.{advertiseIP, listenIP, hostname, idc, location}`, and
//! `upload.{rateLimit, tcpListen.{listen, port}, vortexPort}`.
//!
//! Which wins, Dragonfly's rule: with `scheduler.manager.enable: true` the schedulers come from the
//! manager, else from `scheduler.netAddrs` (a manager that is not enabled is never asked). Beyond
//! Dragonfly, whose dfget then ignores the static list, an enabled manager that is unreachable
//! before it ever answered, or that lists no scheduler, falls back to `scheduler.netAddrs`.
//!
//! Invariant: with neither a scheduler address nor an enabled manager the resolved `P2pConfig` is
//! `None` and the daemon is the standalone one, byte for byte; every value reaching `P2pConfig` was
//! validated inside serde.

use std::net::IpAddr;
use std::time::Duration;

use std::marker::PhantomData;

use serde::{Deserialize, Deserializer};

use super::raw::{scalar_deserialize, Flag, Key, NonZeroDur, ScalarKind, ScalarVisitor, Size};
use crate::limits;

/// Dragonfly's Rust dfdaemon defaults: the upload gRPC port and the storage (Vortex) TCP port.
pub const DEFAULT_UPLOAD_PORT: u16 = 4000;
pub const DEFAULT_VORTEX_PORT: u16 = 4005;
/// Schedulers listed at most: more is a typo, and each one is an announcement per refresh.
pub const MAX_SCHEDULERS: usize = 16;
/// Dragonfly's dfget default `scheduler.manager.refreshInterval`.
pub const DEFAULT_MANAGER_REFRESH: Duration = Duration::from_secs(600);

/// What the code uses. `None` in `Config::p2p` = no cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct P2pConfig {
    /// `host:port` of each scheduler of `scheduler.netAddrs`: the list in use without a manager,
    /// and the fallback while an enabled manager gives none.
    pub schedulers: Vec<String>,
    /// `host:port` of each manager, asked in order (`scheduler.manager.netAddrs`, only with
    /// `scheduler.manager.enable: true`); empty = no manager.
    pub managers: Vec<String>,
    /// How often the manager is asked again (`scheduler.manager.refreshInterval`).
    pub manager_refresh_interval: Duration,
    /// The address other peers reach this one at (`host.advertiseIP`); None = detect.
    pub advertise_ip: Option<IpAddr>,
    /// Where the upload servers listen (`upload.tcpListen.listen`, else `host.listenIP`).
    pub listen_ip: IpAddr,
    pub hostname: Option<String>,
    pub idc: Option<String>,
    pub location: Option<String>,
    /// gRPC (DfdaemonUpload, health): Dragonfly's `Host.port`.
    pub upload_port: u16,
    /// Vortex piece bytes on TCP, announced in SyncPieces.
    pub vortex_port: u16,
    /// `upload.rateLimit` in bytes per second; None = unlimited.
    pub upload_rate_limit_bytes_per_sec: Option<u64>,
}

// ---- raw ----

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of scheduler settings")]
pub(crate) struct RawScheduler {
    #[serde(rename = "netAddrs")]
    pub net_addrs: Option<Vec<RawNetAddr>>,
    pub manager: Option<RawManager>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of manager settings")]
pub(crate) struct RawManager {
    pub enable: Option<Flag>,
    #[serde(rename = "netAddrs")]
    pub net_addrs: Option<Vec<RawNetAddr>>,
    #[serde(rename = "refreshInterval")]
    pub refresh_interval: Option<NonZeroDur>,
}

#[derive(Debug, Deserialize)]
#[serde(expecting = "a mapping with `type: tcp` and `addr: host:port`")]
pub(crate) struct RawNetAddr {
    /// Read only to be validated: `tcp` is the one type a scheduler address can have.
    #[serde(rename = "type")]
    #[allow(dead_code)]
    pub kind: Option<NetType>,
    pub addr: NetAddr,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of host settings")]
pub(crate) struct RawHost {
    #[serde(rename = "advertiseIP")]
    pub advertise_ip: Option<Ip>,
    #[serde(rename = "listenIP")]
    pub listen_ip: Option<Ip>,
    pub hostname: Option<Name>,
    pub idc: Option<Name>,
    pub location: Option<Name>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping of upload settings")]
pub(crate) struct RawUpload {
    #[serde(rename = "rateLimit")]
    pub rate_limit: Option<Size>,
    #[serde(rename = "tcpListen")]
    pub tcp_listen: Option<RawTcpListen>,
    #[serde(rename = "vortexPort")]
    pub vortex_port: Option<Port>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(expecting = "a mapping with `listen` and `port`")]
pub(crate) struct RawTcpListen {
    pub listen: Option<Ip>,
    pub port: Option<PortSpec>,
}

/// `port: 4000` or Dragonfly's range form `port: {start: 65020, end: 65029}` (the start is used).
#[derive(Debug, Deserialize)]
#[serde(untagged, expecting = "a port such as `4000` or `{start: 4000, end: 4009}`")]
pub(crate) enum PortSpec {
    One(Port),
    Range {
        start: Port,
        /// Dragonfly tries the ports of the range in turn; this daemon binds `start` or fails.
        #[allow(dead_code)]
        end: Option<Port>,
    },
}

/// `type:` of a net address: only `tcp` is meaningful for a scheduler.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NetType;

impl ScalarKind for NetType {
    const EXPECTING: &'static str = "`tcp`";
    fn from_text(text: &str) -> Result<Self, String> {
        match text {
            "tcp" | "" => Ok(NetType),
            other => Err(format!("unsupported net address type {other:?}: expected {}", Self::EXPECTING)),
        }
    }
}

/// `host:port` with a port.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct NetAddr(pub String);

impl ScalarKind for NetAddr {
    const EXPECTING: &'static str = "an address such as `127.0.0.1:8002`";
    fn from_text(text: &str) -> Result<Self, String> {
        match text.rsplit_once(':').map(|(h, p)| (h, p.parse::<u16>())) {
            Some((h, Ok(p))) if !h.is_empty() && p != 0 && text.len() <= super::raw::MAX_HOST_PORT_BYTES => {
                Ok(NetAddr(text.to_string()))
            }
            _ => Err(format!("invalid address {text:?}: expected {}", Self::EXPECTING)),
        }
    }
}

/// An IP address; empty or `0.0.0.0` for "any / detect".
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ip(pub Option<IpAddr>);

impl ScalarKind for Ip {
    const EXPECTING: &'static str = "an IP address such as `10.0.0.2`";
    fn from_text(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Ok(Ip(None));
        }
        text.parse::<IpAddr>()
            .map(|ip| Ip(Some(ip)))
            .map_err(|_| format!("invalid IP address {text:?}: expected {}", Self::EXPECTING))
    }
}

/// A short free-text name (hostname, idc, location).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Name(pub Option<String>);

impl ScalarKind for Name {
    const EXPECTING: &'static str = "a name of at most 255 printable characters";
    fn from_text(text: &str) -> Result<Self, String> {
        if text.len() > 255 || text.chars().any(char::is_control) {
            return Err(format!("invalid name: expected {}", Self::EXPECTING));
        }
        Ok(Name((!text.is_empty()).then(|| text.to_string())))
    }
}

/// A TCP port Dragonfly's scheduler accepts for a host: in [1024, 65535).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Port(pub u16);

impl ScalarKind for Port {
    const EXPECTING: &'static str = "a port from 1024 to 65534";
    fn from_int(n: i128) -> Result<Self, String> {
        match u16::try_from(n) {
            Ok(p) if (1024..65535).contains(&p) => Ok(Port(p)),
            _ => Err(format!("port {n} out of range: expected {}", Self::EXPECTING)),
        }
    }
}

scalar_deserialize!(NetType, NetAddr, Ip, Name, Port);

// ---- the known-key tree ----

pub(crate) const SCHEDULER_KEYS: &[(&str, Key)] = &[
    ("netAddrs", Key::Used),
    (
        "manager",
        Key::Section(&[
            ("netAddrs", Key::Used),
            ("enable", Key::Used),
            ("refreshInterval", Key::Used),
            ("seedPeer", Key::Unused),
        ]),
    ),
    ("disableAutoBackSource", Key::Unused),
    ("scheduleTimeout", Key::Unused),
];
pub(crate) const HOST_KEYS: &[(&str, Key)] = &[
    ("advertiseIP", Key::Used),
    ("listenIP", Key::Used),
    ("hostname", Key::Used),
    ("idc", Key::Used),
    ("location", Key::Used),
];
pub(crate) const UPLOAD_KEYS: &[(&str, Key)] = &[
    ("rateLimit", Key::Used),
    ("tcpListen", Key::Section(&[("listen", Key::Used), ("port", Key::Used), ("namespace", Key::Unused)])),
    ("vortexPort", Key::Used),
    ("security", Key::Unused),
];

// ---- resolution ----

pub(crate) fn resolve(
    scheduler: Option<RawScheduler>,
    host: Option<RawHost>,
    upload: Option<RawUpload>,
    notes: &mut Vec<String>,
) -> Option<P2pConfig> {
    let scheduler = scheduler.unwrap_or_default();
    let addrs = |list: Option<Vec<RawNetAddr>>| -> Vec<String> {
        list.unwrap_or_default().into_iter().map(|a| a.addr.0).take(MAX_SCHEDULERS).collect()
    };
    let schedulers = addrs(scheduler.net_addrs);
    let manager = scheduler.manager.unwrap_or_default();
    let (managers, manager_refresh_interval) = resolve_manager(manager, schedulers.is_empty(), notes);
    if schedulers.is_empty() && managers.is_empty() {
        return None;
    }
    let host = host.unwrap_or_default();
    let upload = upload.unwrap_or_default();
    let listen = upload.tcp_listen.unwrap_or_default();
    let unspecified = |ip: &IpAddr| ip.is_unspecified();
    let upload_port = match listen.port {
        Some(PortSpec::One(p)) | Some(PortSpec::Range { start: p, .. }) => p.0,
        None => DEFAULT_UPLOAD_PORT,
    };
    Some(P2pConfig {
        schedulers,
        managers,
        manager_refresh_interval,
        advertise_ip: host.advertise_ip.and_then(|i| i.0).filter(|ip| !unspecified(ip)),
        listen_ip: listen
            .listen
            .and_then(|i| i.0)
            .or(host.listen_ip.and_then(|i| i.0))
            .unwrap_or(IpAddr::from([0, 0, 0, 0])),
        hostname: host.hostname.and_then(|n| n.0),
        idc: host.idc.and_then(|n| n.0),
        location: host.location.and_then(|n| n.0),
        upload_port,
        vortex_port: upload.vortex_port.map(|p| p.0).unwrap_or(if upload_port == DEFAULT_UPLOAD_PORT {
            DEFAULT_VORTEX_PORT
        } else {
            upload_port.saturating_add(1)
        }),
        upload_rate_limit_bytes_per_sec: upload.rate_limit.map(|s| s.0).filter(|n| *n > 0),
    })
}

/// The managers to ask (none unless enabled, as in Dragonfly) and the refresh interval.
fn resolve_manager(manager: RawManager, no_static: bool, notes: &mut Vec<String>) -> (Vec<String>, Duration) {
    let managers: Vec<String> =
        manager.net_addrs.unwrap_or_default().into_iter().map(|a| a.addr.0).take(MAX_SCHEDULERS).collect();
    let enabled = manager.enable.is_some_and(|f| f.0);
    let without = if no_static {
        "this daemon does not join a cluster (it runs standalone)"
    } else {
        "the schedulers of scheduler.netAddrs are used"
    };
    if !enabled {
        if !managers.is_empty() {
            notes.push(format!(
                "scheduler.manager.netAddrs ({}) is not asked: scheduler.manager.enable is not true (Dragonfly's \
                 rule); {without}",
                managers.join(", ")
            ));
        }
        return (Vec::new(), DEFAULT_MANAGER_REFRESH);
    }
    if managers.is_empty() {
        notes.push(format!(
            "scheduler.manager.enable is true but scheduler.manager.netAddrs lists no manager; {without}"
        ));
    }
    let mut refresh = manager.refresh_interval.map(|d| d.0).unwrap_or(DEFAULT_MANAGER_REFRESH);
    if refresh < limits::MIN_MANAGER_REFRESH {
        notes.push(format!(
            "scheduler.manager.refreshInterval {refresh:?} is below {:?}: using {:?}",
            limits::MIN_MANAGER_REFRESH,
            limits::MIN_MANAGER_REFRESH
        ));
        refresh = limits::MIN_MANAGER_REFRESH;
    }
    (managers, refresh)
}

#[cfg(test)]
mod tests {
    use super::super::{Config, UserEnv};
    use super::*;

    fn load(yaml: &str) -> Result<(Option<P2pConfig>, Vec<String>), String> {
        let defaults = Config::defaults_for(&UserEnv { uid: 1000, home: Some("/home/u".into()), ..UserEnv::default() });
        super::super::resolve::load_text(yaml, "t.yaml", defaults)
            .map(|l| (l.config.p2p, l.warnings))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn no_scheduler_means_standalone() {
        assert_eq!(load("").unwrap().0, None);
        assert_eq!(load("host: {hostname: h}\nupload: {rateLimit: 1Mi}\n").unwrap().0, None);
        // A manager that is not enabled is never asked (Dragonfly's rule), and says so.
        let (p2p, warnings) = load("scheduler: {manager: {netAddrs: [{type: tcp, addr: 'm:65003'}]}}\n").unwrap();
        assert_eq!(p2p, None);
        assert!(warnings[0].contains("scheduler.manager.enable is not true"), "{warnings:?}");
        assert!(warnings[0].contains("runs standalone"), "{warnings:?}");
        let both =
            "scheduler: {manager: {enable: false, netAddrs: [{addr: 'm:65003'}]}, netAddrs: [{addr: 's:8002'}]}\n";
        let (p2p, warnings) = load(both).unwrap();
        let p2p = p2p.unwrap();
        assert_eq!((p2p.schedulers, p2p.managers), (vec!["s:8002".to_string()], vec![]));
        assert!(warnings[0].contains("the schedulers of scheduler.netAddrs are used"), "{warnings:?}");
        let (p2p, warnings) = load("scheduler: {manager: {enable: true}}\n").unwrap();
        assert_eq!(p2p, None);
        assert!(warnings[0].contains("lists no manager"), "{warnings:?}");
    }

    #[test]
    fn an_enabled_manager_joins_a_cluster_with_or_without_static_schedulers() {
        let (p2p, warnings) =
            load("scheduler:\n  manager:\n    enable: true\n    netAddrs:\n      - type: tcp\n        addr: m1:65003\n      - addr: m2:65003\n")
                .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let p2p = p2p.expect("a manager alone joins a cluster");
        assert_eq!(p2p.managers, vec!["m1:65003".to_string(), "m2:65003".to_string()]);
        assert!(p2p.schedulers.is_empty());
        assert_eq!(p2p.manager_refresh_interval, DEFAULT_MANAGER_REFRESH);
        let yaml = "scheduler: {manager: {enable: true, netAddrs: [{addr: 'm:1'}], refreshInterval: 30s}, \
                    netAddrs: [{addr: 's:8002'}]}\n";
        let p2p = load(yaml).unwrap().0.unwrap();
        assert_eq!((p2p.managers.len(), p2p.schedulers.len()), (1, 1), "both kept: the static list is the fallback");
        assert_eq!(p2p.manager_refresh_interval, Duration::from_secs(30));
        let (p2p, warnings) =
            load("scheduler: {manager: {enable: yes, netAddrs: [{addr: 'm:1'}], refreshInterval: 10ms}}\n").unwrap();
        assert_eq!(p2p.unwrap().manager_refresh_interval, limits::MIN_MANAGER_REFRESH);
        assert!(warnings[0].contains("refreshInterval"), "{warnings:?}");
    }

    #[test]
    fn dragonfly_keys_resolve() {
        let yaml = "scheduler:\n  netAddrs:\n    - type: tcp\n      addr: 127.0.0.1:8002\n    - addr: s2:8002\n\
                    host: {advertiseIP: 127.0.0.2, hostname: peer1, idc: dc1, location: rack1}\n\
                    upload:\n  rateLimit: 100Mi\n  tcpListen: {listen: 127.0.0.2, port: {start: 65020, end: 65029}}\n";
        let (p2p, warnings) = load(yaml).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let want = P2pConfig {
            schedulers: vec!["127.0.0.1:8002".into(), "s2:8002".into()],
            managers: vec![],
            manager_refresh_interval: DEFAULT_MANAGER_REFRESH,
            advertise_ip: Some("127.0.0.2".parse().unwrap()),
            listen_ip: "127.0.0.2".parse().unwrap(),
            hostname: Some("peer1".into()),
            idc: Some("dc1".into()),
            location: Some("rack1".into()),
            upload_port: 65020,
            vortex_port: 65021,
            upload_rate_limit_bytes_per_sec: Some(100 << 20),
        };
        assert_eq!(p2p, Some(want));
        let (p2p, _) =
            load("scheduler: {netAddrs: [{addr: 's:1'}]}\nupload: {tcpListen: {port: 4100}, vortexPort: 4200}\n")
                .unwrap();
        let p2p = p2p.unwrap();
        assert_eq!((p2p.upload_port, p2p.vortex_port), (4100, 4200));
        assert_eq!(p2p.listen_ip, IpAddr::from([0, 0, 0, 0]));
        let (p2p, _) = load("scheduler: {netAddrs: [{addr: 's:1'}]}\n").unwrap();
        let p2p = p2p.unwrap();
        assert_eq!((p2p.upload_port, p2p.vortex_port), (DEFAULT_UPLOAD_PORT, DEFAULT_VORTEX_PORT));
    }

    #[test]
    fn bad_values_are_errors_with_a_position() {
        let check = |yaml: &str, fragment: &str| {
            let e = load(yaml).unwrap_err();
            assert!(e.contains("line ") && e.contains(fragment), "{yaml:?}: {e}");
        };
        check("scheduler: {netAddrs: [{addr: nope}]}\n", "invalid address");
        check("scheduler: {netAddrs: [{type: udp, addr: 'a:1'}]}\n", "unsupported net address type");
        check("scheduler: {netAddrs: [a]}\n", "type: tcp");
        check("host: {advertiseIP: 300.1.1.1}\n", "invalid IP address");
        check("upload: {tcpListen: {port: 80}}\n", "a port such as");
        check("upload: {vortexPort: 70000}\n", "out of range");
        check("scheduler: {manager: {enable: maybe}}\n", "true or false");
        check("scheduler: {manager: {refreshInterval: 0s}}\n", "greater than 0");
        check("scheduler: {manager: {netAddrs: [{addr: 'm'}]}}\n", "invalid address");
    }
}
