//! The gRPC side of piece exchange, on the control-plane runtime. As a parent: the
//! `DfdaemonUpload.SyncPieces` server (every piece of the task this daemon holds, then each new
//! one as it lands) and gRPC health. As a child: one SyncPieces stream per parent, turned into
//! "parent N has piece P" announcements on the task's `PeerTask`.
//!
//! Invariant: a piece is announced only after its bit is set in the task's bitmap (its bytes are
//! written and its crc recorded), so a child never asks for bytes that are not on disk.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status};

use crate::clock::mono_ms;
use crate::daemon::task::{State, Task};
use crate::limits;
use crate::p2p::node::{Node, Served};
use crate::p2p::pb::dfdaemon as d;
use crate::p2p::pb::dfdaemon::dfdaemon_upload_server::{DfdaemonUpload, DfdaemonUploadServer};
use crate::p2p::peer::PeerTask;
use crate::p2p::spread::{self, Decision, Spread};

struct Upload {
    node: Arc<Node>,
}

type PieceStream = Pin<Box<dyn tokio_stream::Stream<Item = Result<d::SyncPiecesResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DfdaemonUpload for Upload {
    type SyncPiecesStream = PieceStream;

    async fn sync_pieces(&self, req: Request<d::SyncPiecesRequest>) -> Result<Response<PieceStream>, Status> {
        let req = req.into_inner();
        if !crate::p2p::vortex::valid_task_id(&req.task_id) {
            return Err(Status::invalid_argument("malformed task id"));
        }
        if req.interested_piece_numbers.is_empty() {
            return Err(Status::invalid_argument("no interested piece numbers"));
        }
        let served = self.node.tasks.get(&req.task_id).map(|e| e.value().clone());
        let Some(Served { task, spread }) = served.filter(|s| s.task.state() != State::Failed) else {
            return Err(Status::not_found(format!("task {} not found", req.task_id)));
        };
        let Some(g) = task.geometry() else { return Err(Status::not_found("task not laid out yet")) };
        let n = g.layout.n_pieces();
        let wanted: BTreeSet<u64> =
            req.interested_piece_numbers.iter().map(|n| u64::from(*n)).filter(|i| *i < n).collect();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let addr = (self.node.ip.to_string(), i32::from(self.node.config.vortex_port));
        let joined = spread.join(limits::MAX_SYNC_STREAMS_PER_TASK).ok_or_else(|| {
            Status::resource_exhausted(format!(
                "{} SyncPieces streams of this task are open",
                limits::MAX_SYNC_STREAMS_PER_TASK
            ))
        })?;
        tokio::spawn(feed(task, spread, joined, wanted, addr, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Streams each wanted piece once it is recorded — staged by `spread` while the task downloads
/// here, so a new piece goes to one child first; ends when all were sent, the child went away, or
/// the task failed. Woken by the task's `watchers` (fed by `record_piece`), by a child fetching a
/// piece (`Spread::changed`), and when a held piece's hold ends; never polled.
async fn feed(
    task: Arc<Task>,
    spread: Arc<Spread>,
    _joined: spread::Joined,
    mut wanted: BTreeSet<u64>,
    (ip, tcp_port): (String, i32),
    tx: tokio::sync::mpsc::Sender<Result<d::SyncPiecesResponse, Status>>,
) {
    let Some(g) = task.geometry() else { return };
    // Subscribed before the first look at the bitmap: a piece recorded after that look wakes us.
    let mut watch = task.watchers.subscribe();
    let mut claims = Vec::new();
    while !wanted.is_empty() {
        if task.state() == State::Failed {
            let _ = tx.send(Err(Status::aborted("the task failed on this peer"))).await;
            return;
        }
        let fetched = spread.changed.notified();
        tokio::pin!(fetched);
        fetched.as_mut().enable();
        let (tell, wake_at) = stage(&task, &spread, &wanted, &mut claims);
        for idx in tell {
            let Some((start, end)) = g.layout.piece_range(idx) else { continue };
            let resp = d::SyncPiecesResponse {
                number: idx as u32,
                offset: start,
                length: end - start,
                ip: ip.clone(),
                tcp_port: Some(tcp_port),
                quic_port: None,
            };
            if tx.send(Ok(resp)).await.is_err() {
                return;
            }
            wanted.remove(&idx);
        }
        if wanted.is_empty() {
            return;
        }
        let hold = wake_at.map(|t| Duration::from_millis(t.saturating_sub(mono_ms())));
        tokio::select! {
            _ = watch.changed() => {}
            _ = tx.closed() => return,
            _ = fetched => {}
            _ = tokio::time::sleep(hold.unwrap_or(Duration::MAX)), if hold.is_some() => {}
        }
    }
}

/// Of the `wanted` pieces this peer holds, those to announce now (claiming new ones for this
/// stream in `claims`), and when a held one's hold ends (`clock::mono_ms`).
fn stage(task: &Task, spread: &Spread, wanted: &BTreeSet<u64>, claims: &mut Vec<u64>) -> (Vec<u64>, Option<u64>) {
    let done = task.pieces_done();
    let now = mono_ms();
    let tell_all = task.state() == State::Done || spread.alone();
    claims.retain(|p| spread.open(*p, now));
    let mut wake_at = claims.iter().map(|p| spread.told_ms(*p) + spread::HOLD_MS).min();
    let mut tell = Vec::new();
    for idx in wanted.iter().copied().filter(|i| done.get(*i as usize).copied().unwrap_or(false)) {
        let until = match spread::decide(tell_all, spread.told_ms(idx), claims.len(), now) {
            Decision::Tell => {
                tell.push(idx);
                continue;
            }
            // Its hold ends HOLD_MS from now: look again then, when more may be claimed.
            Decision::Claim if spread.claim(idx, now) => {
                claims.push(idx);
                tell.push(idx);
                Some(now + spread::HOLD_MS)
            }
            // Another stream claimed it since the look.
            Decision::Claim => Some(now + spread::HOLD_MS),
            Decision::Wait(until) => until,
        };
        wake_at = wake_at.into_iter().chain(until).min();
    }
    (tell, wake_at)
}

/// Serves DfdaemonUpload and gRPC health on the bound upload listener until the process exits.
pub async fn serve(node: Arc<Node>, listener: tokio::net::TcpListener) {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DfdaemonUploadServer<Upload>>().await;
    let svc = DfdaemonUploadServer::new(Upload { node });
    let result = tonic::transport::Server::builder()
        .add_service(health)
        .add_service(svc)
        .serve_with_incoming(TcpListenerStream::new(listener))
        .await;
    if let Err(e) = result {
        tracing::error!("upload gRPC server stopped: {e}");
    }
}

/// Child side: follows one parent's SyncPieces stream, announcing its pieces on `peer`. A parent
/// that cannot be reached or whose stream breaks is given up on.
pub async fn sync_pieces(node: Arc<Node>, peer: Arc<PeerTask>, slot: usize) {
    let result = follow(&node, &peer, slot).await;
    if let Err(e) = &result {
        tracing::info!(cluster_task = %peer.cluster_id, parent = slot, "SyncPieces from parent ended: {e}");
        peer.give_up_on(slot);
    }
    peer.live_streams.fetch_sub(1, Ordering::AcqRel);
    peer.event.notify();
    if peer.parents_exhausted() {
        peer.report(crate::p2p::peer::Report::Reschedule);
    }
}

async fn follow(node: &Node, peer: &PeerTask, slot: usize) -> Result<(), String> {
    let parent = peer.parent(slot).ok_or("no such parent slot")?;
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{}", parent.grpc_addr))
        .map_err(|e| e.to_string())?
        .connect_timeout(crate::limits::SCHEDULER_CONNECT_TIMEOUT);
    let channel = endpoint.connect().await.map_err(|e| format!("connect {}: {e}", parent.grpc_addr))?;
    let mut client = d::dfdaemon_upload_client::DfdaemonUploadClient::new(channel);
    let req = d::SyncPiecesRequest {
        host_id: node.host_id.clone(),
        task_id: peer.cluster_id.clone(),
        interested_piece_numbers: (0..peer.n_pieces as u32).collect(),
    };
    let mut stream = client.sync_pieces(req).await.map_err(|e| e.message().to_string())?.into_inner();
    while let Some(r) = stream.message().await.map_err(|e| e.message().to_string())? {
        check_piece_bounds(peer.layout, &r)?;
        let port = r.tcp_port.and_then(|p| u16::try_from(p).ok()).ok_or("piece without a TCP port")?;
        let ip = r.ip.parse().map_err(|_| format!("bad parent ip {:?}", r.ip))?;
        let _ = parent.vortex_addr.set(SocketAddr::new(ip, port));
        peer.announce(slot, u64::from(r.number));
    }
    Ok(())
}

/// A parent's announced piece must be ours: same number, offset and length. A parent whose piece
/// length differs (another piece-size rule) has pieces we cannot use, so it is given up on early,
/// before any byte is fetched from it.
fn check_piece_bounds(layout: crate::piece::Layout, r: &d::SyncPiecesResponse) -> Result<(), String> {
    let ours = layout.piece_range(u64::from(r.number));
    let theirs = (r.offset, r.offset.checked_add(r.length));
    match ours {
        None => Err(format!("parent announced piece {} of {}", r.number, layout.n_pieces())),
        Some((start, end)) if (start, Some(end)) == theirs => Ok(()),
        Some((start, end)) => Err(format!(
            "the parent's piece {} is {}+{} bytes, ours is {start}+{}: its piece length differs from ours \
             ({} bytes), so its pieces cannot be used",
            r.number,
            r.offset,
            r.length,
            end - start,
            layout.piece_len_bytes
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn piece(number: u32, offset: u64, length: u64) -> d::SyncPiecesResponse {
        d::SyncPiecesResponse { number, offset, length, ip: "127.0.0.1".into(), tcp_port: Some(4000), quic_port: None }
    }

    #[test]
    fn a_parent_piece_with_other_bounds_is_refused() {
        const MIB: u64 = 1 << 20;
        let layout = crate::piece::Layout::for_len(10 * MIB); // 4 + 4 + 2 MiB
        assert_eq!(check_piece_bounds(layout, &piece(0, 0, 4 * MIB)), Ok(()));
        assert_eq!(check_piece_bounds(layout, &piece(2, 8 * MIB, 2 * MIB)), Ok(()));
        let other = check_piece_bounds(layout, &piece(1, 8 * MIB, 8 * MIB)).unwrap_err();
        assert!(other.contains("piece length differs"), "{other}");
        assert!(check_piece_bounds(layout, &piece(3, 12 * MIB, MIB)).unwrap_err().contains("piece 3 of 3"));
        assert!(check_piece_bounds(layout, &piece(1, 4 * MIB, u64::MAX)).is_err(), "overflowing length");
    }
}
