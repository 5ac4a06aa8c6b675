//! Child side of the data path, on the compio cores: a piece worker asks the task's parents for
//! its piece over Vortex, writes the bytes at the piece's offset like an origin piece, and checks
//! them against the parent's `crc32` before the piece is recorded. A task trading with parents
//! picks which piece to fetch (`next_pick`, by `p2p::pick`); pieces no live parent has are waited
//! for while parents keep announcing, and come from the origin only when nothing a parent holds
//! is left to take and the parents stall.
//!
//! Invariant: a piece is recorded only when its whole length arrived and its crc equals the
//! parent's digest; a parent that fails (unreachable, refused, short, bad crc) is reported and
//! not asked again for this task, and the worker moves on to another parent or the origin.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::io::{AsyncRead, AsyncReadExt, AsyncWriteAtExt, AsyncWriteExt};

use crate::clock::now_unix_ms;
use crate::daemon::task::{State, Task};
use crate::error::Result;
use crate::limits;
use crate::p2p::peer::{Mode, PeerTask, PieceReport, Report};
use crate::p2p::vortex::{self, Answer, HEADER_SIZE};
use crate::piece::Layout;

/// What a trading peer's worker does next (`next_pick`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// Ask the piece's holders (`from_holders`); give it back if they all fail.
    Parents(u64),
    /// Fetch it from the origin: no parent can give it.
    Origin(u64),
}

/// The next piece for a worker of a task that trades with parents: one some live parent holds
/// (`PeerTask::take_held`); while none is left but pieces are, it waits for parents to announce
/// more, and takes one from the origin only when they stall (`PARENT_STALL` without news), are
/// all gone, or the scheduler said back-to-source. None = nothing left to take, or the task ended.
pub async fn next_pick(task: &Task, peer: &PeerTask) -> Option<Pick> {
    let done = |idx| task.piece_done(idx);
    loop {
        if task.state() != State::Running {
            return None;
        }
        let listener = peer.event.listen();
        let with_parents = peer.mode() != Mode::BackToSource;
        if with_parents {
            if let Some(idx) = peer.take_held(done) {
                return Some(Pick::Parents(idx));
            }
        }
        let stalled = peer.parents_exhausted() || peer.ms_since_news() >= limits::PARENT_STALL.as_millis() as u64;
        // Held, but every holder has its share of our workers: wait for one to finish.
        let held = with_parents && peer.any_held_untaken(done);
        if !with_parents || (stalled && !held) {
            return peer.take_any(done).map(Pick::Origin);
        }
        if !peer.any_untaken(done) {
            return None;
        }
        let _ = compio::time::timeout(Duration::from_millis(500), listener).await;
    }
}

/// Fills `piece_idx` from a parent, waiting while parents keep announcing (the cursor's path: a
/// task that did not start trading). Ok(true) = done (recorded); Ok(false) = take it from the origin.
pub async fn from_parents(
    task: &Task,
    peer: &PeerTask,
    file: &compio::fs::File,
    layout: Layout,
    piece_idx: u64,
) -> Result<bool> {
    loop {
        if task.state() != State::Running {
            return Ok(true);
        }
        match peer.mode() {
            Mode::BackToSource => return Ok(false),
            Mode::Registering | Mode::Parents => {}
        }
        let listener = peer.event.listen();
        if from_holders(task, peer, file, layout, piece_idx).await {
            return Ok(true);
        }
        if peer.parents_exhausted() || peer.ms_since_news() >= limits::PARENT_STALL.as_millis() as u64 {
            return Ok(false);
        }
        let _ = compio::time::timeout(Duration::from_millis(500), listener).await;
    }
}

/// Asks each live parent that holds `piece_idx` once, the cheapest first, until one gives the
/// whole piece with the right crc: true = recorded. A parent that fails is reported and given up on.
pub async fn from_holders(
    task: &Task,
    peer: &PeerTask,
    file: &compio::fs::File,
    layout: Layout,
    piece_idx: u64,
) -> bool {
    let Some((start, end)) = layout.piece_range(piece_idx) else { return false };
    for slot in peer.holders(piece_idx) {
        let Some(parent) = peer.parent(slot) else { continue };
        let Some(addr) = parent.vortex_addr.get().copied() else { continue };
        let t0 = Instant::now();
        let fetched = {
            let _counted = peer.begin_fetch(slot);
            fetch_one(task, peer, file, addr, piece_idx, start, end).await
        };
        match fetched {
            Ok(crc) => {
                peer.note_rate(slot, end - start, t0.elapsed());
                tracing::debug!(task = %task.id, piece = piece_idx, parent = %parent.peer_id, source = parent.source, ms = t0.elapsed().as_millis() as u64, "piece from parent");
                task.record_fetched_piece(piece_idx, crc, end - start);
                if !peer.got_from_parent.swap(true, std::sync::atomic::Ordering::AcqRel) {
                    tracing::info!(task = %task.id, parent = %parent.peer_id, "first piece from a parent arrived");
                }
                peer.report(Report::Piece(PieceReport {
                    number: piece_idx as u32,
                    offset: start,
                    length: end - start,
                    crc,
                    parent_id: Some(parent.peer_id.clone()),
                    cost_ms: t0.elapsed().as_millis() as u64,
                    created_at_unix_ms: now_unix_ms(),
                }));
                return true;
            }
            // The task failed or finished meanwhile: not the parent's fault.
            Err(_) if task.state() != State::Running => return false,
            Err(e) => {
                tracing::warn!(task = %task.id, piece = piece_idx, parent = %parent.peer_id, "piece from parent failed: {e}");
                peer.give_up_on(slot);
                peer.report(Report::PieceFailed { number: piece_idx as u32, parent_id: parent.peer_id.clone() });
            }
        }
    }
    false
}

/// One Vortex exchange: ask `addr` for the piece, stream its bytes into the task file at the
/// piece's offset. Returns the crc, which matched the parent's digest.
async fn fetch_one(
    task: &Task,
    peer: &PeerTask,
    file: &compio::fs::File,
    addr: SocketAddr,
    piece_idx: u64,
    start: u64,
    end: u64,
) -> std::result::Result<u32, String> {
    let work = async {
        let mut conn = compio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = conn.set_nodelay(true);
        let BufResult(res, _) = conn.write_all(vortex::encode_request(&peer.cluster_id, piece_idx as u32)).await;
        res.map_err(|e| format!("send request: {e}"))?;
        let head = read_answer(&mut conn).await?;
        if head.number as u64 != piece_idx || head.offset != start || head.length != end - start {
            return Err(format!(
                "parent sent piece {} at {}+{}, expected {piece_idx} at {start}+{}",
                head.number,
                head.offset,
                head.length,
                end - start
            ));
        }
        let want =
            vortex::parse_crc_digest(&head.digest).ok_or_else(|| format!("unusable digest {:?}", head.digest))?;
        let got = copy_into(task, &mut conn, file, start, end - start).await?;
        if got != want {
            return Err(format!("crc mismatch: parent said {want}, bytes give {got}"));
        }
        Ok(got)
    };
    match compio::time::timeout(limits::PARENT_PIECE_TIMEOUT, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("no whole piece within {:?}", limits::PARENT_PIECE_TIMEOUT)),
    }
}

async fn read_answer(conn: &mut compio::net::TcpStream) -> std::result::Result<vortex::PieceHead, String> {
    let BufResult(res, head) = conn.read_exact([0u8; HEADER_SIZE]).await;
    res.map_err(|e| format!("read header: {e}"))?;
    let (tag, len) = vortex::decode_header(&head)?;
    let BufResult(res, value) = conn.read_exact(vec![0u8; len as usize]).await;
    res.map_err(|e| format!("read value: {e}"))?;
    match vortex::parse_answer(tag, &value)? {
        Answer::Piece(h) => Ok(h),
        Answer::Refused(r) => Err(format!("refused ({:?}): {}", r.code, r.message)),
    }
}

/// Streams exactly `len` bytes from `conn` into `file` at `offset`, returning their crc32. Reads
/// are gathered into whole `WRITE_CHUNK_BYTES` writes (a socket read returns what one segment or
/// two brought, often 64 KiB, and every write is a trip through io_uring's worker threads: a
/// write per read cost the swarm most of its CPU, PERF.md). Nothing is lost by holding them: a
/// parent's piece is recorded only whole.
async fn copy_into(
    task: &Task,
    conn: &mut compio::net::TcpStream,
    file: &compio::fs::File,
    offset: u64,
    len: u64,
) -> std::result::Result<u32, String> {
    let mut crc = crc32fast::Hasher::new();
    let mut written = 0u64;
    let mut buf: Vec<u8> = Vec::with_capacity(limits::WRITE_CHUNK_BYTES);
    while written < len {
        let want = (len - written).min(limits::WRITE_CHUNK_BYTES as u64) as usize;
        buf.clear();
        buf.reserve(want);
        while buf.len() < want {
            if task.state() == State::Failed {
                return Err("task failed elsewhere".into());
            }
            let filled = buf.len();
            let BufResult(res, b) = conn.read(buf.slice(filled..want)).await;
            buf = b.into_inner();
            let n = res.map_err(|e| format!("read piece: {e}"))?;
            if n == 0 {
                return Err(format!("parent closed after {} of {len} bytes", written + filled as u64));
            }
            crate::daemon::rate::take(n).await;
            crc.update(&buf[filled..filled + n]);
        }
        let n = buf.len() as u64;
        let mut f = file;
        let BufResult(res, b) = f.write_all_at(buf, offset + written).await;
        res.map_err(|e| crate::storage::disk_err(e, &task.data_path, "write task file").to_string())?;
        buf = b;
        written += n;
        // Counted like origin bytes, so the progress saver sees parents' pieces land too.
        task.add_written(n);
    }
    Ok(crc.finalize())
}

/// Reports a piece the worker took from the origin (scheduler bookkeeping only).
pub fn report_origin_piece(peer: &PeerTask, layout: Layout, piece_idx: u64, crc: Option<u32>, t0: Instant) {
    let (Some((start, end)), Some(crc)) = (layout.piece_range(piece_idx), crc) else { return };
    peer.report(Report::Piece(PieceReport {
        number: piece_idx as u32,
        offset: start,
        length: end - start,
        crc,
        parent_id: None,
        cost_ms: t0.elapsed().as_millis() as u64,
        created_at_unix_ms: now_unix_ms(),
    }));
}
