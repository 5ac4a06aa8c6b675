//! One task's AnnouncePeer stream with the scheduler, on the control-plane runtime:
//! register → (parents | back-to-source) → started → one report per piece → reschedule when the
//! parents run dry (at most `MAX_RESCHEDULES`) → finished or failed.
//!
//! Invariant: the first answer is delivered exactly once through `reply`; anything that is not a
//! scheduling answer (connect error, timeout, a closed stream) is `Unreachable`, which the engine
//! turns into an origin download with a warning.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::limits;
use crate::p2p::node::{adopt_parents, duration_ms, timestamp, Outcome, Sched};
use crate::p2p::pb::scheduler::announce_peer_request::Request as Req;
use crate::p2p::pb::scheduler::announce_peer_response::Response as Resp;
use crate::p2p::pb::{common as c, scheduler as s};
use crate::p2p::peer::{Mode, PeerTask, PieceReport, Report};

pub async fn run(
    sched: Arc<Sched>,
    peer: Arc<PeerTask>,
    download: c::Download,
    mut reports: mpsc::Receiver<Report>,
    reply: flume::Sender<Outcome>,
) {
    let Some(mut client) = sched.for_task(&peer.cluster_id) else {
        let _ =
            reply.send(Outcome::Unreachable("no scheduler known (none configured, or the manager gave none)".into()));
        return;
    };
    let (tx, rx) = mpsc::channel::<s::AnnouncePeerRequest>(64);
    let wrap = |r: Req| s::AnnouncePeerRequest {
        host_id: sched.node.host_id.clone(),
        task_id: peer.cluster_id.clone(),
        peer_id: peer.peer_id.clone(),
        request: Some(r),
    };
    let _ = tx.send(wrap(Req::RegisterPeerRequest(s::RegisterPeerRequest { download: Some(download) }))).await;
    let call = tokio::time::timeout(limits::SCHEDULER_REGISTER_TIMEOUT, client.announce_peer(ReceiverStream::new(rx)));
    let mut stream = match call.await {
        Ok(Ok(resp)) => resp.into_inner(),
        Ok(Err(e)) => {
            let _ = reply.send(Outcome::Unreachable(format!("AnnouncePeer: {} ({:?})", e.message(), e.code())));
            return;
        }
        Err(_) => {
            let _ = reply.send(Outcome::Unreachable("AnnouncePeer timed out".into()));
            return;
        }
    };
    let Some(back_to_source) = first_answer(&sched, &peer, &tx, &mut stream, &reply, &wrap).await else {
        return;
    };
    converse(&sched, &peer, &tx, &mut stream, &mut reports, back_to_source, &wrap).await;
    // Half-close and let the scheduler take the last messages before the stream is dropped.
    drop(tx);
    let _ = tokio::time::timeout(limits::SCHEDULER_CONNECT_TIMEOUT, async {
        while let Ok(Some(_)) = stream.message().await {}
    })
    .await;
}

/// The scheduler's first answer on `stream`, acted on (mode set, started message sent) and
/// delivered through `reply`: Some(back_to_source) for a scheduling answer, None (after an
/// `Unreachable`) for anything else.
async fn first_answer(
    sched: &Arc<Sched>,
    peer: &Arc<PeerTask>,
    tx: &mpsc::Sender<s::AnnouncePeerRequest>,
    stream: &mut tonic::Streaming<s::AnnouncePeerResponse>,
    reply: &flume::Sender<Outcome>,
    wrap: &impl Fn(Req) -> s::AnnouncePeerRequest,
) -> Option<bool> {
    let first = tokio::time::timeout(limits::SCHEDULER_REGISTER_TIMEOUT, stream.message()).await;
    match first {
        Ok(Ok(Some(s::AnnouncePeerResponse { response: Some(Resp::NormalTaskResponse(n)) }))) => {
            let added = adopt_parents(sched, peer, &n.candidate_parents);
            peer.set_mode(Mode::Parents);
            let _ = tx.send(wrap(Req::DownloadPeerStartedRequest(s::DownloadPeerStartedRequest {}))).await;
            let _ = reply.send(Outcome::Parents(added));
            Some(false)
        }
        Ok(Ok(Some(s::AnnouncePeerResponse { response: Some(other) }))) => {
            let why = match other {
                Resp::NeedBackToSourceResponse(r) => r.description.unwrap_or_else(|| "need back-to-source".into()),
                _ => "no parents for this task".into(),
            };
            peer.set_mode(Mode::BackToSource);
            let started = s::DownloadPeerBackToSourceStartedRequest { description: Some(why.clone()) };
            let _ = tx.send(wrap(Req::DownloadPeerBackToSourceStartedRequest(started))).await;
            let _ = reply.send(Outcome::BackToSource(why));
            Some(true)
        }
        Ok(Ok(_)) => {
            let _ = reply.send(Outcome::Unreachable("the scheduler closed the stream without an answer".into()));
            None
        }
        Ok(Err(e)) => {
            let _ = reply.send(Outcome::Unreachable(format!("AnnouncePeer: {} ({:?})", e.message(), e.code())));
            None
        }
        Err(_) => {
            let _ = reply.send(Outcome::Unreachable("no scheduling answer in time".into()));
            None
        }
    }
}

/// Forwards the cores' reports and applies the scheduler's later answers until the task ends.
async fn converse(
    sched: &Arc<Sched>,
    peer: &Arc<PeerTask>,
    tx: &mpsc::Sender<s::AnnouncePeerRequest>,
    stream: &mut tonic::Streaming<s::AnnouncePeerResponse>,
    reports: &mut mpsc::Receiver<Report>,
    back_to_source: bool,
    wrap: &impl Fn(Req) -> s::AnnouncePeerRequest,
) {
    let mut scheduler_alive = true;
    loop {
        tokio::select! {
            r = reports.recv() => {
                let Some(r) = r else { return };
                let last = matches!(r, Report::Finished | Report::Failed(_));
                if scheduler_alive {
                    if let Some(req) = translate(peer, r, back_to_source) {
                        if tx.send(wrap(req)).await.is_err() {
                            scheduler_alive = false;
                        }
                    }
                }
                if last {
                    return;
                }
            }
            m = stream.message(), if scheduler_alive => match m {
                Ok(Some(s::AnnouncePeerResponse { response: Some(Resp::NormalTaskResponse(n)) })) => {
                    let added = adopt_parents(sched, peer, &n.candidate_parents);
                    tracing::info!(cluster_task = %peer.cluster_id, added, "rescheduled: new parents");
                    peer.set_mode(Mode::Parents);
                }
                Ok(Some(s::AnnouncePeerResponse { response: Some(_) })) => {
                    tracing::info!(cluster_task = %peer.cluster_id, "scheduler: take the rest from the origin");
                    peer.set_mode(Mode::BackToSource);
                }
                Ok(_) | Err(_) => {
                    if let Err(e) = m {
                        tracing::warn!(cluster_task = %peer.cluster_id, "scheduler stream broke: {}", e.message());
                    }
                    scheduler_alive = false;
                    if peer.parents_exhausted() {
                        peer.set_mode(Mode::BackToSource);
                    }
                }
            },
        }
    }
}

fn translate(peer: &PeerTask, r: Report, back_to_source: bool) -> Option<Req> {
    Some(match r {
        Report::Piece(p) => {
            let from_parent = p.parent_id.is_some();
            let piece = piece_of(p);
            if from_parent {
                Req::DownloadPieceFinishedRequest(s::DownloadPieceFinishedRequest { piece: Some(piece) })
            } else {
                Req::DownloadPieceBackToSourceFinishedRequest(s::DownloadPieceBackToSourceFinishedRequest {
                    piece: Some(piece),
                })
            }
        }
        Report::PieceFailed { number, parent_id } => Req::DownloadPieceFailedRequest(s::DownloadPieceFailedRequest {
            piece_number: Some(number),
            parent_id,
            temporary: true,
        }),
        Report::Reschedule => return reschedule(peer),
        Report::Finished if back_to_source => {
            Req::DownloadPeerBackToSourceFinishedRequest(s::DownloadPeerBackToSourceFinishedRequest {})
        }
        Report::Finished => Req::DownloadPeerFinishedRequest(s::DownloadPeerFinishedRequest {}),
        Report::Failed(why) if back_to_source => {
            Req::DownloadPeerBackToSourceFailedRequest(s::DownloadPeerBackToSourceFailedRequest {
                description: Some(nonempty(why)),
            })
        }
        Report::Failed(why) => {
            Req::DownloadPeerFailedRequest(s::DownloadPeerFailedRequest { description: Some(nonempty(why)) })
        }
    })
}

/// The parents ran dry: ask for new ones, at most `MAX_RESCHEDULES` times; after that the rest
/// of the task comes from the origin.
fn reschedule(peer: &PeerTask) -> Option<Req> {
    let n = peer.reschedules.fetch_add(1, Ordering::AcqRel) + 1;
    if n > limits::MAX_RESCHEDULES {
        tracing::info!(cluster_task = %peer.cluster_id, "parents ran dry {} times: the rest comes from the origin", n - 1);
        peer.set_mode(Mode::BackToSource);
        return None;
    }
    tracing::info!(
        cluster_task = %peer.cluster_id,
        "parents ran dry: asking the scheduler for new parents (reschedule {n} of {})",
        limits::MAX_RESCHEDULES
    );
    Some(Req::ReschedulePeerRequest(s::ReschedulePeerRequest {
        candidate_parents: Vec::new(),
        description: Some("every parent failed or finished its announcements".into()),
    }))
}

fn nonempty(s: String) -> String {
    if s.is_empty() {
        "failed".into()
    } else {
        s
    }
}

fn piece_of(p: PieceReport) -> c::Piece {
    let traffic = if p.parent_id.is_some() { c::TrafficType::RemotePeer } else { c::TrafficType::BackToSource };
    c::Piece {
        number: p.number,
        parent_id: p.parent_id,
        offset: p.offset,
        length: p.length,
        digest: crate::p2p::vortex::crc_digest(p.crc),
        content: None,
        traffic_type: Some(traffic as i32),
        cost: Some(duration_ms(p.cost_ms)),
        created_at: Some(timestamp(p.created_at_unix_ms)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reschedules_are_asked_five_times_then_the_rest_comes_from_the_origin() {
        let (tx, _rx) = mpsc::channel(4);
        let peer = PeerTask::new("t".into(), "p".into(), crate::piece::Layout::for_len(16 << 20), tx);
        peer.set_mode(Mode::Parents);
        for i in 1..=limits::MAX_RESCHEDULES {
            let req = translate(&peer, Report::Reschedule, false);
            assert!(matches!(req, Some(Req::ReschedulePeerRequest(_))), "reschedule {i} is asked for");
            assert_eq!(peer.mode(), Mode::Parents, "still with parents after reschedule {i}");
        }
        assert!(translate(&peer, Report::Reschedule, false).is_none(), "no sixth reschedule");
        assert_eq!(peer.mode(), Mode::BackToSource, "after five, the origin");
    }

    #[test]
    fn reports_become_the_requests_the_scheduler_validates() {
        let (tx, _rx) = mpsc::channel(4);
        let peer = PeerTask::new("t".into(), "p".into(), crate::piece::Layout::for_len(16 << 20), tx);
        let piece = |parent_id: Option<&str>| {
            Report::Piece(PieceReport {
                number: 2,
                offset: 8,
                length: 4,
                crc: 0xab,
                parent_id: parent_id.map(str::to_string),
                cost_ms: 1500,
                created_at_unix_ms: 1_700_000_000_123,
            })
        };
        let Some(Req::DownloadPieceFinishedRequest(r)) = translate(&peer, piece(Some("parent")), false) else {
            panic!("a parent's piece is a DownloadPieceFinishedRequest")
        };
        let p = r.piece.expect("piece");
        assert_eq!((p.number, p.offset, p.length, p.digest.as_str()), (2, 8, 4, "crc32:171"));
        assert_eq!(p.parent_id.as_deref(), Some("parent"));
        assert_eq!(p.cost.map(|c| (c.seconds, c.nanos)), Some((1, 500_000_000)), "cost is required");
        assert_eq!(p.created_at.map(|t| (t.seconds, t.nanos)), Some((1_700_000_000, 123_000_000)));
        assert!(matches!(translate(&peer, piece(None), true), Some(Req::DownloadPieceBackToSourceFinishedRequest(_))));
        assert!(matches!(
            translate(&peer, Report::Finished, true),
            Some(Req::DownloadPeerBackToSourceFinishedRequest(_))
        ));
        assert!(matches!(translate(&peer, Report::Finished, false), Some(Req::DownloadPeerFinishedRequest(_))));
        let Some(Req::DownloadPeerFailedRequest(f)) = translate(&peer, Report::Failed(String::new()), false) else {
            panic!("failed")
        };
        assert_eq!(f.description.as_deref(), Some("failed"), "never an empty description");
    }
}
