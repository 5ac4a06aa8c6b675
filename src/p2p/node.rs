//! This daemon as a member of a Dragonfly cluster: its host identity, the tasks it can serve to
//! other peers (by cluster task id), and the control-plane thread — one OS thread running a small
//! current-thread tokio runtime for everything gRPC: the scheduler client (host announcements, one
//! AnnouncePeer conversation per task, DeleteTask, DeleteHost), the manager client that keeps the
//! scheduler list (`manager.rs`) and the upload gRPC server (`grpc.rs`). The compio cores talk to it only through bounded channels and never wait on it
//! longer than a registration timeout.
//!
//! Invariant: the scheduler being down or slow never fails a download — every path out of
//! `register` that is not a scheduling answer is "download from the origin" with a warning.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::Context;
use crossbeam_skiplist::SkipMap;
use tokio::sync::{mpsc, Notify};
use tonic::transport::{Channel, Endpoint};

use crate::config::P2pConfig;
use crate::daemon::rate::RateLimiter;
use crate::daemon::task::Task;
use crate::limits;
use crate::p2p::pb::{common as c, scheduler as s};
use crate::p2p::peer::{Mode, Parent, PeerTask, Report};
use crate::piece::Layout;

/// Commands from the daemon to the control-plane thread.
enum Ctl {
    Register {
        peer: Arc<PeerTask>,
        download: c::Download,
        reports: mpsc::Receiver<Report>,
        reply: flume::Sender<Outcome>,
    },
    DeleteTask(String),
    Stop(std::sync::mpsc::Sender<()>),
}

/// The scheduler's first answer to a registration, as the engine needs it.
#[derive(Debug)]
pub enum Outcome {
    Parents(usize),
    BackToSource(String),
    Unreachable(String),
}

/// A task other peers may fetch from this daemon, and its staging state (which child heard of
/// which new piece first, `p2p::spread`): one entry, so the SyncPieces server and the upload server
/// find both with one lookup and they leave together.
#[derive(Clone)]
pub struct Served {
    pub task: Arc<Task>,
    pub spread: Arc<crate::p2p::spread::Spread>,
}

pub struct Node {
    pub config: P2pConfig,
    pub host_id: String,
    pub ip: IpAddr,
    pub hostname: String,
    /// Tasks other peers may fetch from this daemon, by cluster task id, from registration until
    /// the task leaves the cache.
    pub tasks: SkipMap<String, Served>,
    /// Vortex exchanges being served right now (bounded by `MAX_CONCURRENT_UPLOADS`).
    pub uploads_in_flight: AtomicUsize,
    /// `upload.rateLimit`, daemon-wide.
    pub upload_rate: Option<RateLimiter>,
    /// The bound Vortex listener; every core accepts on a copy of it.
    pub vortex_listener: std::net::TcpListener,
    ctl: mpsc::Sender<Ctl>,
}

impl Node {
    /// Binds both upload listeners (so a busy port fails the start, not a later download) and
    /// starts the control-plane thread.
    pub fn start(config: P2pConfig, default_ip: IpAddr) -> anyhow::Result<Arc<Node>> {
        let ip = config.advertise_ip.unwrap_or(if config.listen_ip.is_unspecified() {
            default_ip
        } else {
            config.listen_ip
        });
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(|| rustix::system::uname().nodename().to_string_lossy().into_owned());
        let grpc =
            std::net::TcpListener::bind(SocketAddr::new(config.listen_ip, config.upload_port)).with_context(|| {
                format!("cannot listen for uploads (gRPC) on {}:{}", config.listen_ip, config.upload_port)
            })?;
        let vortex =
            std::net::TcpListener::bind(SocketAddr::new(config.listen_ip, config.vortex_port)).with_context(|| {
                format!("cannot listen for uploads (Vortex) on {}:{}", config.listen_ip, config.vortex_port)
            })?;
        grpc.set_nonblocking(true)?;
        let (ctl, rx) = mpsc::channel(limits::CONTROL_QUEUE_DEPTH);
        let node = Arc::new(Node {
            host_id: format!("{ip}-{hostname}"),
            ip,
            hostname,
            tasks: SkipMap::new(),
            uploads_in_flight: AtomicUsize::new(0),
            upload_rate: config.upload_rate_limit_bytes_per_sec.map(RateLimiter::new),
            vortex_listener: vortex,
            ctl,
            config,
        });
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().context("control-plane runtime")?;
        let n = node.clone();
        std::thread::Builder::new()
            .name("p2p-control".into())
            .spawn(move || rt.block_on(control_main(n, rx, grpc)))
            .context("cannot start the control-plane thread")?;
        tracing::info!(
            host_id = %node.host_id,
            schedulers = %node.config.schedulers.join(","),
            managers = %node.config.managers.join(","),
            upload_port = node.config.upload_port,
            vortex_port = node.config.vortex_port,
            "joining the Dragonfly cluster"
        );
        Ok(node)
    }

    /// Registers `task` with the scheduler (its layout is known) and waits for the first answer.
    /// The task becomes servable to other peers at once. None = no cluster id (ORAS, restored).
    pub async fn register(&self, task: &Arc<Task>, layout: Layout) -> Option<Arc<PeerTask>> {
        let cluster_id = task.spec.cluster_id.clone()?;
        let spread = Arc::new(crate::p2p::spread::Spread::new(layout.n_pieces()));
        self.tasks.insert(cluster_id.clone(), Served { task: task.clone(), spread });
        let (report_tx, reports) = mpsc::channel(limits::CONTROL_QUEUE_DEPTH);
        let peer = Arc::new(PeerTask::new(cluster_id.clone(), task.peer_id.clone(), layout, report_tx));
        let (reply, answer) = flume::bounded(1);
        let download = download_for(task, layout);
        let sent = self.ctl.try_send(Ctl::Register { peer: peer.clone(), download, reports, reply });
        let outcome = match sent {
            Err(_) => Outcome::Unreachable("control-plane queue full".into()),
            Ok(()) => match compio::time::timeout(limits::SCHEDULER_REGISTER_TIMEOUT * 2, answer.recv_async()).await {
                Ok(Ok(o)) => o,
                Ok(Err(_)) => Outcome::Unreachable("control plane stopped".into()),
                Err(_) => Outcome::Unreachable("no answer in time".into()),
            },
        };
        match &outcome {
            Outcome::Parents(n) => {
                tracing::info!(task = %task.id, cluster_task = %cluster_id, parents = n, "scheduler gave parents")
            }
            Outcome::BackToSource(why) => {
                tracing::info!(task = %task.id, cluster_task = %cluster_id, "scheduler says back-to-source: {why}")
            }
            Outcome::Unreachable(why) => {
                peer.set_mode(Mode::BackToSource);
                tracing::warn!(task = %task.id, "scheduler unreachable, downloading from the origin: {why}")
            }
        }
        Some(peer)
    }

    /// The task left the cache (GC, `tasks rm`): stop serving it and tell the scheduler.
    pub fn forget(&self, task: &Task) {
        let Some(id) = task.spec.cluster_id.as_deref() else { return };
        let same = self.tasks.get(id).is_some_and(|e| std::ptr::eq(Arc::as_ptr(&e.value().task), task));
        if same {
            self.tasks.remove(id);
            let _ = self.ctl.try_send(Ctl::DeleteTask(id.to_string()));
        }
    }

    /// Leaves the cluster (DeleteHost), waiting at most a few seconds.
    pub fn stop(&self) {
        let (tx, rx) = std::sync::mpsc::channel();
        if self.ctl.try_send(Ctl::Stop(tx)).is_ok() {
            let _ = rx.recv_timeout(limits::SCHEDULER_CONNECT_TIMEOUT * 2);
        }
    }
}

/// The registration's `Download`, with the actual length and layout so the scheduler sizes the
/// task (a zero length would make it an EMPTY task). Request headers are not sent: they may hold
/// tokens, and this daemon has no seed peer that would need them.
fn download_for(task: &Task, layout: Layout) -> c::Download {
    c::Download {
        url: task.spec.fetch.url.to_string(),
        digest: task.spec.digest.as_ref().map(ToString::to_string),
        r#type: c::TaskType::Standard as i32,
        priority: c::Priority::Level0 as i32,
        actual_piece_length: Some(layout.piece_len_bytes),
        actual_content_length: Some(layout.content_len_bytes),
        actual_piece_count: Some(layout.n_pieces()),
        ..Default::default()
    }
}

async fn control_main(node: Arc<Node>, mut rx: mpsc::Receiver<Ctl>, grpc: std::net::TcpListener) {
    match tokio::net::TcpListener::from_std(grpc) {
        Ok(l) => {
            tokio::spawn(crate::p2p::grpc::serve(node.clone(), l));
        }
        Err(e) => tracing::error!("cannot serve uploads (gRPC): {e}"),
    }
    let sched = Arc::new(Sched { node: node.clone(), in_use: Mutex::default(), changed: Notify::new() });
    if node.config.managers.is_empty() {
        sched.use_schedulers(&node.config.schedulers);
        if sched.addrs().is_empty() {
            tracing::warn!("no usable scheduler address; every download goes to the origin");
        }
    } else {
        tokio::spawn(crate::p2p::manager::refresh_loop(sched.clone()));
    }
    tokio::spawn(announce_loop(sched.clone()));
    while let Some(msg) = rx.recv().await {
        match msg {
            Ctl::Register { peer, download, reports, reply } => {
                tokio::spawn(crate::p2p::conversation::run(sched.clone(), peer, download, reports, reply));
            }
            Ctl::DeleteTask(id) => {
                let sched = sched.clone();
                tokio::spawn(async move { sched.delete_task(id).await });
            }
            Ctl::Stop(done) => {
                sched.delete_host().await;
                let _ = done.send(());
                break;
            }
        }
    }
}

/// A channel that connects on first use (and again after a failure), so an address that is down
/// now costs nothing until a call needs it.
pub fn lazy_channel(addr: &str) -> Option<Channel> {
    match Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => Some(
            e.connect_timeout(limits::SCHEDULER_CONNECT_TIMEOUT)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(30))
                .connect_lazy(),
        ),
        Err(e) => {
            tracing::warn!("bad address {addr}: {e}");
            None
        }
    }
}

/// The scheduler side of the control plane.
pub struct Sched {
    pub node: Arc<Node>,
    /// The schedulers in use (address, channel): the static list, or the manager's answer.
    /// Replaced whole by `use_schedulers`; a std mutex, since it is held only to clone or swap the
    /// `Arc`, never across an await.
    in_use: Mutex<Arc<Vec<(String, Channel)>>>,
    /// Wakes the announce loop when the list changed, so new schedulers learn of this host at once.
    changed: Notify,
}

impl Sched {
    fn in_use(&self) -> Arc<Vec<(String, Channel)>> {
        self.in_use.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The addresses of the schedulers in use.
    pub fn addrs(&self) -> Vec<String> {
        self.in_use().iter().map(|(a, _)| a.clone()).collect()
    }

    /// Makes `addrs` the schedulers in use (keeping the channels of those already in use); returns
    /// whether the list changed. Conversations already running keep the scheduler they started with.
    pub fn use_schedulers(&self, addrs: &[String]) -> bool {
        let old = self.in_use();
        if old.iter().map(|(a, _)| a).eq(addrs.iter()) {
            return false;
        }
        let reuse = |a: &String| old.iter().find(|(o, _)| o == a).map(|(_, ch)| ch.clone());
        let new: Vec<(String, Channel)> =
            addrs.iter().filter_map(|a| Some((a.clone(), reuse(a).or_else(|| lazy_channel(a))?))).collect();
        *self.in_use.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(new);
        self.changed.notify_one();
        true
    }

    /// The scheduler responsible for a task: the same for every peer of the task (its id hashed)
    /// while peers see the same list, as Dragonfly's consistent hashing does.
    pub fn for_task(&self, cluster_id: &str) -> Option<s::scheduler_client::SchedulerClient<Channel>> {
        let in_use = self.in_use();
        if in_use.is_empty() {
            return None;
        }
        let h = cluster_id.bytes().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize));
        Some(s::scheduler_client::SchedulerClient::new(in_use[h % in_use.len()].1.clone()))
    }

    fn host(&self) -> c::Host {
        let n = &self.node;
        c::Host {
            id: n.host_id.clone(),
            r#type: 0,
            hostname: n.hostname.clone(),
            ip: n.ip.to_string(),
            port: i32::from(n.config.upload_port),
            download_port: i32::from(n.config.upload_port),
            os: std::env::consts::OS.into(),
            platform: std::env::consts::OS.into(),
            kernel_version: rustix::system::uname().release().to_string_lossy().into_owned(),
            network: Some(c::Network {
                idc: n.config.idc.clone(),
                location: n.config.location.clone(),
                ..Default::default()
            }),
            build: Some(c::Build {
                git_version: env!("CARGO_PKG_VERSION").into(),
                rust_version: Some("stable".into()),
                platform: Some(std::env::consts::ARCH.into()),
                ..Default::default()
            }),
            name: n.hostname.clone(),
            ..Default::default()
        }
    }

    /// AnnounceHost to every scheduler; true when at least one accepted it.
    pub async fn announce_host(&self) -> bool {
        let interval = prost_types::Duration::try_from(limits::HOST_ANNOUNCE_INTERVAL).ok();
        let mut any = false;
        for (_, ch) in self.in_use().iter() {
            let mut client = s::scheduler_client::SchedulerClient::new(ch.clone());
            let req = s::AnnounceHostRequest { host: Some(self.host()), interval };
            match tokio::time::timeout(limits::SCHEDULER_REGISTER_TIMEOUT, client.announce_host(req)).await {
                Ok(Ok(_)) => any = true,
                Ok(Err(e)) => tracing::warn!("AnnounceHost failed: {} ({:?})", e.message(), e.code()),
                Err(_) => tracing::warn!("AnnounceHost timed out"),
            }
        }
        any
    }

    async fn delete_task(&self, cluster_id: String) {
        let Some(mut client) = self.for_task(&cluster_id) else { return };
        let req = s::DeleteTaskRequest { host_id: self.node.host_id.clone(), task_id: cluster_id.clone() };
        match tokio::time::timeout(limits::SCHEDULER_REGISTER_TIMEOUT, client.delete_task(req)).await {
            Ok(Ok(_)) => tracing::info!(cluster_task = %cluster_id, "DeleteTask sent to the scheduler"),
            Ok(Err(e)) => tracing::warn!(cluster_task = %cluster_id, "DeleteTask failed: {}", e.message()),
            Err(_) => tracing::warn!(cluster_task = %cluster_id, "DeleteTask timed out"),
        }
    }

    async fn delete_host(&self) {
        for (_, ch) in self.in_use().iter() {
            let mut client = s::scheduler_client::SchedulerClient::new(ch.clone());
            let req = s::DeleteHostRequest { host_id: self.node.host_id.clone() };
            match tokio::time::timeout(limits::SCHEDULER_CONNECT_TIMEOUT, client.delete_host(req)).await {
                Ok(Ok(_)) => tracing::info!(host_id = %self.node.host_id, "left the cluster (DeleteHost)"),
                Ok(Err(e)) => tracing::warn!("DeleteHost failed: {}", e.message()),
                Err(_) => tracing::warn!("DeleteHost timed out"),
            }
        }
    }
}

async fn announce_loop(sched: Arc<Sched>) {
    let mut announced = false;
    loop {
        let ok = sched.announce_host().await;
        if ok && !announced {
            tracing::info!(host_id = %sched.node.host_id, schedulers = %sched.addrs().join(","), "announced to the scheduler");
        }
        announced = ok;
        // Until a scheduler has accepted the host, retry soon: registrations need it. A new
        // scheduler list is announced to at once.
        let wait = if ok { limits::HOST_ANNOUNCE_INTERVAL } else { Duration::from_secs(2) };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = sched.changed.notified() => announced = false,
        }
    }
}

/// The scheduler's state of a peer that downloads from the origin (the Go scheduler's
/// `PeerStateBackToSource`): such a parent is a source parent (`peer::Parent::source`).
const SOURCE_PARENT_STATE: &str = "BackToSource";

/// The parent list of a scheduling answer, as slots of `peer`; each new parent gets a SyncPieces
/// stream. Returns how many were added.
pub fn adopt_parents(sched: &Arc<Sched>, peer: &Arc<PeerTask>, parents: &[c::Peer]) -> usize {
    let mut added = 0;
    for p in parents {
        let Some(host) = p.host.as_ref() else { continue };
        let Ok(ip) = host.ip.parse::<IpAddr>() else { continue };
        let Ok(port) = u16::try_from(host.port) else { continue };
        let parent = Parent {
            peer_id: p.id.clone(),
            host_id: host.id.clone(),
            grpc_addr: SocketAddr::new(ip, port),
            vortex_addr: std::sync::OnceLock::new(),
            source: p.state == SOURCE_PARENT_STATE,
        };
        if let Some(slot) = peer.add_parent(parent) {
            tracing::info!(task = %peer.cluster_id, parent = %p.id, state = %p.state, slot, "parent added");
            peer.live_streams.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
            tokio::spawn(crate::p2p::grpc::sync_pieces(sched.node.clone(), peer.clone(), slot));
            added += 1;
        }
    }
    added
}

pub fn timestamp(unix_ms: u64) -> prost_types::Timestamp {
    prost_types::Timestamp::from(SystemTime::UNIX_EPOCH + Duration::from_millis(unix_ms))
}

pub fn duration_ms(ms: u64) -> prost_types::Duration {
    prost_types::Duration { seconds: (ms / 1000) as i64, nanos: ((ms % 1000) * 1_000_000) as i32 }
}
