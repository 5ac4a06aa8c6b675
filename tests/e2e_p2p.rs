//! Joining a Dragonfly cluster, end to end: Dragonfly's real scheduler (Go, no manager, no
//! Redis; `e2e_manager.rs` has the manager), three of our daemons with their own loopback addresses (127.0.0.2-4) and ports, and
//! nginx as the origin, whose access log counts the bytes it served.
//!
//! Each test names what it proves; the origin byte count is what shows pieces travelled between
//! peers rather than from the origin.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::{peer, peer_with_env, serve, settled_origin_bytes, Peer};
use common::scheduler::Scheduler;
use common::{assert_file_is, assert_success, free_port, out_dir, poll_until, Daemon, Nginx, MIB};
use dfget::p2p::pb::dfdaemon::v2::{
    dfdaemon_upload_client::DfdaemonUploadClient, SyncPiecesRequest, SyncPiecesResponse,
};

#[test]
fn three_peers_share_one_file_sequentially_and_concurrently_with_little_origin_traffic() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    let peers: Vec<Peer> = (1..=3).map(|n| peer(&sched.addr(), n, "")).collect();
    let out = out_dir();
    let len = 256 * MIB;

    let a = serve(root.path(), "seq.bin", len, 1);
    for (i, p) in peers.iter().enumerate() {
        let dest = out.path().join(format!("seq-{i}"));
        assert_success(&p.daemon.download(&nginx.url("/seq.bin"), &dest), "sequential download");
        assert_file_is(&dest, &a);
    }
    let served = settled_origin_bytes(&nginx, "/seq.bin");
    eprintln!("sequential: origin served {served} bytes for 3 x {len}");
    assert!(
        served as f64 <= 1.2 * len as f64,
        "origin served {served} bytes for three sequential peers of a {len}-byte file"
    );

    let b = serve(root.path(), "conc.bin", len, 2);
    let children: Vec<_> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let dest = out.path().join(format!("conc-{i}"));
            let child = p.daemon.download_command(&nginx.url("/conc.bin"), &dest).spawn().expect("spawn dfget");
            (child, dest)
        })
        .collect();
    for (mut child, dest) in children {
        let status = child.wait().expect("wait dfget");
        assert!(status.success(), "concurrent download failed: {status}");
        assert_file_is(&dest, &b);
    }
    let served = settled_origin_bytes(&nginx, "/conc.bin");
    eprintln!("concurrent: origin served {served} bytes for 3 x {len}");
    assert!(
        served as f64 <= 1.2 * len as f64,
        "origin served {served} bytes for three concurrent peers of a {len}-byte file"
    );
    let fetched_from_parent = peers.iter().any(|p| p.daemon.core_log().contains("scheduler gave parents"));
    assert!(fetched_from_parent, "no peer was ever given a parent");
}

#[test]
fn second_peer_completes_when_its_parent_is_killed_mid_transfer() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    let len = 64 * MIB;
    let bytes = serve(root.path(), "f.bin", len, 3);
    // The parent uploads at 8 MiB/s, so the child is mid-transfer for seconds.
    let mut first = peer(&sched.addr(), 1, "  rateLimit: 8Mi\n");
    let second = peer(&sched.addr(), 2, "");
    let out = out_dir();
    assert_success(&first.daemon.download(&nginx.url("/f.bin"), &out.path().join("first")), "parent download");
    let dest = out.path().join("second");
    let mut child = second.daemon.download_command(&nginx.url("/f.bin"), &dest).spawn().expect("spawn dfget");
    let started =
        poll_until(Duration::from_secs(30), || second.daemon.core_log().contains("first piece from a parent"));
    assert!(started, "the second peer never got a piece from the first:\n{}", second.daemon.core_log());
    first.daemon.kill9();
    let status = child.wait().expect("wait dfget");
    assert!(status.success(), "download after the parent died failed: {status}\n{}", second.daemon.core_log());
    assert_file_is(&dest, &bytes);
    // Some pieces came from the parent before it died, the rest from the origin.
    let served = settled_origin_bytes(&nginx, "/f.bin");
    eprintln!("parent killed: origin served {served} bytes for 2 x {len}");
    assert!(served < 2 * len as u64, "the second peer got nothing from its parent: origin served {served}");
    assert!(second.daemon.core_log().contains("piece from parent failed"), "the parent's death went unnoticed");
    // Its only parent gone, the second peer asked the scheduler for new parents.
    assert!(
        second.daemon.core_log().contains("asking the scheduler for new parents (reschedule 1 of 5)"),
        "no reschedule after the parent died:\n{}",
        second.daemon.core_log()
    );
    assert!(
        poll_until(Duration::from_secs(5), || sched.log().contains("receive ReschedulePeerRequest")),
        "the scheduler saw no ReschedulePeerRequest"
    );
}

#[test]
fn downloads_come_from_the_origin_with_a_warning_when_the_scheduler_is_gone() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let mut sched = Scheduler::start();
    let p = peer(&sched.addr(), 1, "");
    sched.stop();
    let bytes = serve(root.path(), "f.bin", 12 * MIB, 4);
    let dest = out_dir();
    let dest = dest.path().join("f");
    assert_success(&p.daemon.download(&nginx.url("/f.bin"), &dest), "download without a scheduler");
    assert_file_is(&dest, &bytes);
    let log = p.daemon.core_log();
    let warned = log.lines().any(|l| l.contains("\"level\":\"warn\"") && l.contains("scheduler unreachable"));
    assert!(warned, "no warning about the scheduler in core.log:\n{log}");
}

#[test]
fn a_corrupted_parent_piece_is_caught_by_crc_and_fetched_elsewhere() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    let len = 32 * MIB;
    let bytes = serve(root.path(), "f.bin", len, 5);
    let first = peer(&sched.addr(), 1, "");
    let second = peer(&sched.addr(), 2, "");
    let out = out_dir();
    assert_success(&first.daemon.download(&nginx.url("/f.bin"), &out.path().join("first")), "parent download");
    // Tamper with piece 3 of the parent's task file (a fault no real peer can be asked for).
    let data = common::regular_files_under(&first.daemon.data_dir())
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "data"))
        .expect("the parent's task file");
    let mut f = std::fs::OpenOptions::new().write(true).open(&data).expect("open task file");
    std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(3 * 4 * MIB as u64 + 100)).expect("seek");
    f.write_all(b"tampered!").expect("tamper");
    drop(f);
    let dest = out.path().join("second");
    assert_success(&second.daemon.download(&nginx.url("/f.bin"), &dest), "child download");
    assert_file_is(&dest, &bytes);
    let log = second.daemon.core_log();
    assert!(log.contains("crc mismatch"), "the bad piece was not detected:\n{log}");
    // And the parent was reported to the scheduler for it.
    assert!(
        poll_until(Duration::from_secs(5), || sched
            .log()
            .contains("receive DownloadPieceFailedRequest, piece number: 3")),
        "the scheduler heard nothing of the bad piece"
    );
}

fn vortex_exchange(p: &Peer, request: &[u8]) -> (u8, Vec<u8>) {
    let mut s = TcpStream::connect((p.ip.as_str(), p.vortex_port)).expect("connect vortex");
    s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    s.write_all(request).expect("send");
    let mut head = [0u8; 6];
    s.read_exact(&mut head).expect("read header");
    let len = u32::from_be_bytes(head[2..6].try_into().unwrap()) as usize;
    let mut value = vec![0u8; len];
    s.read_exact(&mut value).expect("read value");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    value.extend_from_slice(&rest);
    (head[1], value)
}

fn request(task_id: &[u8], number: u32) -> Vec<u8> {
    let mut r = vec![7u8, 0];
    r.extend_from_slice(&((task_id.len() + 4) as u32).to_be_bytes());
    r.extend_from_slice(task_id);
    r.extend_from_slice(&number.to_be_bytes());
    r
}

#[test]
fn upload_server_refuses_bad_requests_and_keeps_serving() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    let bytes = serve(root.path(), "f.bin", 6 * MIB, 6);
    let p = peer(&sched.addr(), 1, "");
    let out = out_dir();
    let url = nginx.url("/f.bin");
    assert_success(&p.daemon.download(&url, &out.path().join("f")), "download");
    let id = dfget::p2p::task_id::cluster_task_id(&url, &[], "", "").unwrap();
    // Error packets: tag 255, value = code u8 + message. 1 = InvalidArgument, 2 = NotFound.
    let (tag, value) = vortex_exchange(&p, &request(b"../../etc/passwd", 0));
    assert_eq!((tag, value[0]), (255, 1), "a malformed task id: {:?}", String::from_utf8_lossy(&value));
    let (tag, value) = vortex_exchange(&p, &request("0".repeat(64).as_bytes(), 0));
    assert_eq!((tag, value[0]), (255, 2), "an unknown task: {:?}", String::from_utf8_lossy(&value));
    let (tag, value) = vortex_exchange(&p, &request(id.as_bytes(), 99));
    assert_eq!((tag, value[0]), (255, 2), "a piece it does not have: {:?}", String::from_utf8_lossy(&value));
    let (tag, value) = vortex_exchange(&p, &[0u8, 0, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(tag, 255, "an oversized request: {:?}", String::from_utf8_lossy(&value));
    // Still serving: piece 1 arrives whole, after its metadata.
    let (tag, value) = vortex_exchange(&p, &request(id.as_bytes(), 1));
    assert_eq!(tag, 1, "piece content");
    let meta_len = u32::from_be_bytes(value[0..4].try_into().unwrap()) as usize;
    assert_eq!(&value[4 + meta_len..], &bytes[4 * MIB..6 * MIB], "piece 1's bytes");
}

fn local_task_id(daemon: &Daemon) -> String {
    let out = daemon.tasks(&["ls", "--json"]);
    assert_success(&out, "tasks ls --json");
    let tasks: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).expect("tasks ls --json is JSON");
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    tasks[0]["id"].as_str().expect("task id").to_string()
}

#[test]
fn a_removed_task_leaves_the_cluster_and_a_stopped_daemon_leaves_the_scheduler() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    serve(root.path(), "f.bin", 6 * MIB, 7);
    let mut p = peer(&sched.addr(), 1, "");
    let out = out_dir();
    let url = nginx.url("/f.bin");
    assert_success(&p.daemon.download(&url, &out.path().join("f")), "download");
    let id = dfget::p2p::task_id::cluster_task_id(&url, &[], "", "").unwrap();
    assert_eq!(vortex_exchange(&p, &request(id.as_bytes(), 0)).0, 1, "served before the removal");
    assert_success(&p.daemon.tasks(&["rm", &local_task_id(&p.daemon)]), "tasks rm");
    assert!(p.daemon.wait_log("DeleteTask sent to the scheduler"), "no DeleteTask:\n{}", p.daemon.core_log());
    assert!(
        poll_until(Duration::from_secs(5), || sched.log().contains("delete task request")),
        "the scheduler saw no DeleteTask"
    );
    let (tag, value) = vortex_exchange(&p, &request(id.as_bytes(), 0));
    assert_eq!((tag, value[0]), (255, 2), "a removed task is still served");
    p.daemon.sigterm(Duration::from_secs(15));
    assert!(p.daemon.core_log().contains("left the cluster (DeleteHost)"), "no DeleteHost:\n{}", p.daemon.core_log());
    assert!(sched.log().contains("delete host request"), "the scheduler saw no DeleteHost");
}

/// Reads one Vortex answer's header and metadata, leaving the piece's bytes unread.
fn vortex_piece_head(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 6];
    s.read_exact(&mut head).expect("read header");
    if head[1] != 1 {
        let len = u32::from_be_bytes(head[2..6].try_into().unwrap()) as usize;
        let mut value = vec![0u8; len];
        s.read_exact(&mut value).expect("read refusal");
        return (head[1], value);
    }
    let mut meta_len = [0u8; 4];
    s.read_exact(&mut meta_len).expect("read metadata length");
    let mut meta = vec![0u8; u32::from_be_bytes(meta_len) as usize];
    s.read_exact(&mut meta).expect("read metadata");
    (head[1], meta)
}

fn task_files(daemon: &Daemon) -> usize {
    common::regular_files_under(&daemon.data_dir())
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "data"))
        .count()
}

#[test]
fn a_rate_limited_upload_pins_its_task_against_gc_and_removal_and_arrives_exact() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    let len = 8 * MIB;
    let bytes = serve(root.path(), "f.bin", len, 8);
    // 1 MiB/s: one 4 MiB piece takes about four seconds to upload. The task expires after one
    // idle second, but GC runs only when asked (`tasks gc`).
    let extra = "  rateLimit: 1Mi\ngcInterval: 1h\nstorage:\n  taskExpireTime: 1s\n";
    let parent = peer(&sched.addr(), 1, extra);
    let out = out_dir();
    let url = nginx.url("/f.bin");
    assert_success(&parent.daemon.download(&url, &out.path().join("parent")), "parent download");
    let id = dfget::p2p::task_id::cluster_task_id(&url, &[], "", "").unwrap();
    let local = local_task_id(&parent.daemon);

    // A child (this test) in the middle of piece 1: the task can be neither collected nor removed.
    let mut s = TcpStream::connect((parent.ip.as_str(), parent.vortex_port)).expect("connect vortex");
    s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let t0 = std::time::Instant::now();
    s.write_all(&request(id.as_bytes(), 1)).expect("send");
    let (tag, _) = vortex_piece_head(&mut s);
    assert_eq!(tag, 1, "piece content");
    let mut got = vec![0u8; 64 * 1024];
    s.read_exact(&mut got).expect("first bytes");
    std::thread::sleep(Duration::from_millis(1200)); // past taskExpireTime
    assert_success(&parent.daemon.tasks(&["gc"]), "tasks gc");
    assert_eq!(task_files(&parent.daemon), 1, "gc deleted a task file mid-upload");
    let rm = parent.daemon.tasks(&["rm", &local]);
    let said = String::from_utf8_lossy(&rm.stderr);
    assert!(!rm.status.success() && said.contains("being read"), "tasks rm mid-upload: {said}");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("the rest of the piece");
    got.extend_from_slice(&rest);
    let took = t0.elapsed();
    assert_eq!(got, &bytes[4 * MIB..8 * MIB], "piece 1's bytes under the rate limit");
    // Wide margin: 4 MiB at 1 MiB/s is about 4 s; unlimited on loopback it is milliseconds.
    assert!(took >= Duration::from_secs(2), "4 MiB at 1 MiB/s arrived in {took:?}");

    // A download from the rate-limited parent arrives exact. The child's first GET (piece 0) is
    // the origin's, as always; piece 1 comes from the parent.
    let child = peer(&sched.addr(), 2, "");
    let dest = out.path().join("child");
    assert_success(&child.daemon.download(&url, &dest), "child download");
    assert_file_is(&dest, &bytes);
    assert!(child.daemon.core_log().contains("first piece from a parent arrived"), "{}", child.daemon.core_log());
    let served = settled_origin_bytes(&nginx, "/f.bin");
    assert!(served <= (len + 4 * MIB) as u64, "origin served {served}: piece 1 came from the origin too");

    // Nobody reads it now: GC collects it, and the scheduler hears of it.
    assert_success(&parent.daemon.tasks(&["gc"]), "tasks gc once the uploads ended");
    assert!(parent.daemon.wait_log("gc evicted task"), "not collected:\n{}", parent.daemon.core_log());
    assert_eq!(task_files(&parent.daemon), 0, "the collected task's file is still there");
    assert!(parent.daemon.wait_log("DeleteTask sent to the scheduler"), "no DeleteTask:\n{}", parent.daemon.core_log());
}

/// A connection to `p`'s Vortex port whose receiving side absorbs almost nothing (a 4 KiB
/// buffer, 536-byte segments: about 100 KB in flight, where a default socket takes 3-4 MB), so
/// a piece written to it and never read keeps its upload in flight instead of ending up whole in
/// the kernel's buffers.
fn tiny_window_connect(p: &Peer) -> TcpStream {
    use std::os::fd::FromRawFd;
    let ip: std::net::Ipv4Addr = p.ip.parse().expect("an IPv4 peer address");
    // SAFETY: plain socket syscalls on a descriptor this function owns until `from_raw_fd`
    // hands it to the returned stream; every pointer passed points at a live local.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        for (level, opt, value) in
            [(libc::SOL_SOCKET, libc::SO_RCVBUF, 4096), (libc::IPPROTO_TCP, libc::TCP_MAXSEG, 536)]
        {
            let v: libc::c_int = value;
            let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            let r = libc::setsockopt(fd, level, opt, (&v as *const libc::c_int).cast(), len);
            assert_eq!(r, 0, "setsockopt {opt}: {}", std::io::Error::last_os_error());
        }
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: p.vortex_port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let r = libc::connect(fd, (&addr as *const libc::sockaddr_in).cast(), len);
        assert_eq!(r, 0, "connect vortex: {}", std::io::Error::last_os_error());
        stream
    }
}

#[test]
fn the_upload_server_bounds_concurrent_uploads_and_serves_again_after() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    // 8 MiB: piece 1 is 4 MiB, forty times what a tiny-window connection absorbs.
    let bytes = serve(root.path(), "f.bin", 8 * MIB, 9);
    let p = peer(&sched.addr(), 1, "");
    let out = out_dir();
    let url = nginx.url("/f.bin");
    assert_success(&p.daemon.download(&url, &out.path().join("f")), "download");
    let id = dfget::p2p::task_id::cluster_task_id(&url, &[], "", "").unwrap();
    // MAX_CONCURRENT_UPLOADS children each in the middle of piece 1: asked, got its head, read
    // nothing more. Opened one at a time, each seen served before the next, with no other
    // request meanwhile: so they hold exactly every slot. (Idle connections racing probes held
    // them before: a probe that slipped in took a slot, an idle one was refused instead, and
    // once the probe ended one slot stayed free for good — the flaky case.)
    let n_slots = dfget::limits::MAX_CONCURRENT_UPLOADS;
    let holders: Vec<TcpStream> = (0..n_slots)
        .map(|i| {
            let mut s = tiny_window_connect(&p);
            s.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
            s.write_all(&request(id.as_bytes(), 1)).expect("send");
            let (tag, meta) = vortex_piece_head(&mut s);
            assert_eq!(tag, 1, "upload {i} of {n_slots} not served: {:?}", String::from_utf8_lossy(&meta));
            s
        })
        .collect();
    let (tag, value) = vortex_exchange(&p, &request(id.as_bytes(), 1));
    let said = String::from_utf8_lossy(&value[..value.len().min(80)]).into_owned();
    assert!(tag == 255 && said.contains("too many uploads"), "served with {n_slots} uploads in flight: {tag} {said:?}");
    // Closed with unread bytes, the holders reset their connections: the blocked uploads fail
    // and give their slots back.
    drop(holders);
    let served = poll_until(Duration::from_secs(30), || vortex_exchange(&p, &request(id.as_bytes(), 1)).0 == 1);
    assert!(served, "the upload server did not serve again once the slots were free");
    let (tag, value) = vortex_exchange(&p, &request(id.as_bytes(), 1));
    assert_eq!(tag, 1);
    let meta_len = u32::from_be_bytes(value[0..4].try_into().unwrap()) as usize;
    assert_eq!(&value[4 + meta_len..], &bytes[4 * MIB..8 * MIB], "piece 1's bytes");
}

/// Waits for the server to close `s` (EOF, or a reset), failing after `within`.
fn assert_closed_by_server(s: &mut TcpStream, within: Duration, what: &str) {
    s.set_read_timeout(Some(within)).expect("timeout");
    let mut byte = [0u8; 1];
    match s.read(&mut byte) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("{what}: not closed by the server within {within:?}: {other:?}"),
    }
}

fn piece_1_of(p: &Peer, id: &str, bytes: &[u8], what: &str) {
    let (tag, value) = vortex_exchange(p, &request(id.as_bytes(), 1));
    assert_eq!(tag, 1, "{what}: refused: {:?}", String::from_utf8_lossy(&value[..value.len().min(80)]));
    let meta_len = u32::from_be_bytes(value[0..4].try_into().unwrap()) as usize;
    assert_eq!(&value[4 + meta_len..], &bytes[4 * MIB..6 * MIB], "{what}: piece 1's bytes");
}

/// Regression: a connection that connected and never sent its request held an upload slot for
/// `UPLOAD_TIMEOUT` (60 s), so `MAX_CONCURRENT_UPLOADS` idle connections locked every real child
/// out. Now a slot is taken only once a whole request is in, and a connection that sends none
/// (or trickles part of one) is closed after `UPLOAD_REQUEST_TIMEOUT`.
#[test]
fn idle_upload_connections_hold_no_slot_and_are_closed_after_the_request_deadline() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    let bytes = serve(root.path(), "f.bin", 6 * MIB, 12);
    let p = peer(&sched.addr(), 1, "");
    let url = nginx.url("/f.bin");
    assert_success(&p.daemon.download(&url, &out_dir().path().join("f")), "download");
    let id = dfget::p2p::task_id::cluster_task_id(&url, &[], "", "").unwrap();
    // More idle connections than slots, and some that sent half a header: each must be closed
    // by the server once the request deadline passed (or earlier, pushed out of a full core's
    // waiting room), and none keeps a real child out meanwhile.
    let connect = || TcpStream::connect((p.ip.as_str(), p.vortex_port)).expect("connect vortex");
    let mut idle: Vec<TcpStream> = (0..dfget::limits::MAX_CONCURRENT_UPLOADS + 16).map(|_| connect()).collect();
    for _ in 0..4 {
        let mut s = connect();
        s.write_all(&request(id.as_bytes(), 1)[..3]).expect("half a header");
        idle.push(s);
    }
    piece_1_of(&p, &id, &bytes, "a real request among idle connections");
    let deadline = dfget::limits::UPLOAD_REQUEST_TIMEOUT;
    for (i, s) in idle.iter_mut().enumerate() {
        assert_closed_by_server(s, deadline + Duration::from_secs(20), &format!("idle connection {i}"));
    }
    piece_1_of(&p, &id, &bytes, "after the idle connections");
}

/// A flood of idle connections (more than every core's waiting room) pushes out its own oldest:
/// a real child that connects after it is still served.
#[test]
fn a_flood_of_idle_upload_connections_cannot_push_out_a_real_child() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    let bytes = serve(root.path(), "f.bin", 6 * MIB, 13);
    let p = peer(&sched.addr(), 1, "");
    let url = nginx.url("/f.bin");
    assert_success(&p.daemon.download(&url, &out_dir().path().join("f")), "download");
    let id = dfget::p2p::task_id::cluster_task_id(&url, &[], "", "").unwrap();
    let n_flood = 3 * 2 * dfget::limits::MAX_WAITING_UPLOAD_REQUESTS_PER_CORE; // 3x the room of 2 cores
    let mut flood: Vec<TcpStream> =
        (0..n_flood).map(|_| TcpStream::connect((p.ip.as_str(), p.vortex_port)).expect("connect vortex")).collect();
    piece_1_of(&p, &id, &bytes, "a real request after a flood");
    let deadline = dfget::limits::UPLOAD_REQUEST_TIMEOUT;
    for (i, s) in flood.iter_mut().enumerate() {
        assert_closed_by_server(s, deadline + Duration::from_secs(20), &format!("flood connection {i}"));
    }
}

#[test]
fn grpc_health_answers_serving_for_the_upload_service() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let sched = Scheduler::start();
    let p = peer(&sched.addr(), 1, "");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let addr = format!("http://{}:{}", p.ip, p.grpc_port);
        let channel = tonic::transport::Endpoint::from_shared(addr).expect("endpoint").connect().await;
        let mut client = HealthClient::new(channel.expect("connect to the upload gRPC port"));
        for service in ["", "dfdaemon.v2.DfdaemonUpload"] {
            let req = HealthCheckRequest { service: service.into() };
            let answer = client.check(req).await.unwrap_or_else(|e| panic!("health of {service:?}: {e}"));
            assert_eq!(answer.into_inner().status(), ServingStatus::Serving, "health of {service:?}");
        }
        let unknown = client.check(HealthCheckRequest { service: "no.such.Service".into() }).await;
        assert_eq!(unknown.expect_err("an unknown service").code(), tonic::Code::NotFound);
    });
}

/// Peer 1 downloading a 40 MiB file (ten 4 MiB pieces) from nginx under `download.totalRateLimit`
/// `rate`, its `dfget` still running, so the task stays a downloading one while a test talks to
/// the peer's SyncPieces server.
struct DownloadingParent {
    p: Peer,
    id: String,
    bytes: Vec<u8>,
    out: tempfile::TempDir,
    client: std::process::Child,
    _sched: Scheduler,
    _nginx: Nginx,
    _root: tempfile::TempDir,
}

impl DownloadingParent {
    fn start(rate: &str, seed: u64) -> DownloadingParent {
        let root = common::temp_dir("dfget-p2p-origin-");
        let nginx = Nginx::start(root.path());
        let sched = Scheduler::start();
        let bytes = serve(root.path(), "d.bin", 40 * MIB, seed);
        let p = peer(&sched.addr(), 1, &format!("download:\n  totalRateLimit: {rate}\n"));
        let url = nginx.url("/d.bin");
        let id = dfget::p2p::task_id::cluster_task_id(&url, &[], "", "").unwrap();
        let out = out_dir();
        let client = p.daemon.download_command(&url, &out.path().join("d")).spawn().expect("spawn dfget");
        DownloadingParent { p, id, bytes, out, client, _sched: sched, _nginx: nginx, _root: root }
    }

    /// A client of the peer's upload gRPC server.
    async fn upload(&self) -> DfdaemonUploadClient<tonic::transport::Channel> {
        let addr = format!("http://{}:{}", self.p.ip, self.p.grpc_port);
        let channel = tonic::transport::Endpoint::from_shared(addr).expect("endpoint").connect().await;
        DfdaemonUploadClient::new(channel.expect("connect to the upload gRPC port"))
    }

    /// A SyncPieces stream for `pieces` of the task, retried while the task is not laid out yet.
    async fn sync(
        &self,
        upload: &DfdaemonUploadClient<tonic::transport::Channel>,
        pieces: Vec<u32>,
    ) -> Result<tonic::Streaming<SyncPiecesResponse>, tonic::Status> {
        let req = SyncPiecesRequest {
            host_id: "test-child".into(),
            task_id: self.id.clone(),
            interested_piece_numbers: pieces,
        };
        let t0 = std::time::Instant::now();
        loop {
            match upload.clone().sync_pieces(req.clone()).await {
                Err(e) if e.code() == tonic::Code::NotFound && t0.elapsed() < Duration::from_secs(10) => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => return other.map(|s| s.into_inner()),
            }
        }
    }

    /// The download completes with the origin's bytes.
    fn finish(self) {
        assert_success(&self.client.wait_with_output().expect("dfget"), "parent download");
        assert_file_is(&self.out.path().join("d"), &self.bytes);
    }
}

/// A parent still downloading tells each new piece to one SyncPieces stream first and to the
/// others `p2p::spread::HOLD_MS` (500 ms) later, so its children fetch different pieces of it and
/// trade them; every piece still reaches every stream. Two streams of this test, which never fetch
/// what they are told, so each claim holds for the whole hold.
#[test]
fn a_downloading_parent_tells_each_new_piece_to_one_stream_first() {
    use std::time::Instant;
    // Ten pieces landing over about five seconds.
    let parent = DownloadingParent::start("8Mi", 30);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let heard = rt.block_on(async {
        let upload = parent.upload().await;
        let a = parent.sync(&upload, (0..10).collect()).await.expect("first stream");
        let b = parent.sync(&upload, (0..10).collect()).await.expect("second stream");
        let read = |mut s: tonic::Streaming<SyncPiecesResponse>| async move {
            let mut heard: Vec<(u32, Instant)> = Vec::new();
            while let Ok(Ok(Some(piece))) = tokio::time::timeout(Duration::from_secs(30), s.message()).await {
                heard.push((piece.number, Instant::now()));
            }
            heard
        };
        let (ha, hb) = tokio::join!(read(a), read(b));
        [ha, hb]
    });
    parent.finish();
    let (a, b) = (&heard[0], &heard[1]);
    let when = |h: &[(u32, Instant)], n: u32| h.iter().find(|(p, _)| *p == n).map(|(_, t)| *t);
    let mut staged = 0;
    for n in 0..10u32 {
        let (Some(ta), Some(tb)) = (when(a, n), when(b, n)) else {
            panic!("piece {n} did not reach both streams: {a:?} / {b:?}");
        };
        let (first, second) = if ta <= tb { (ta, tb) } else { (tb, ta) };
        let gap = second - first;
        // A piece first told within the hold of the task's end may reach the other at the end
        // (a second of slack for a loaded machine: unstaged pieces reach both at once).
        if gap >= Duration::from_millis(450) {
            staged += 1;
        } else {
            let last = a.iter().chain(b.iter()).map(|(_, t)| *t).max().unwrap();
            assert!(
                last - first < Duration::from_millis(1000),
                "piece {n} reached both streams {gap:?} apart while the parent was still downloading"
            );
        }
    }
    assert!(staged >= 3, "only {staged} of 10 pieces reached one stream first by a hold: {a:?} / {b:?}");
}

/// Every upload wakes each SyncPieces stream of its task on the control-plane thread, so a peer
/// may hold only `MAX_SYNC_STREAMS_PER_TASK` of one task open; past that it is refused with
/// RESOURCE_EXHAUSTED, and a stream that closes makes room again.
#[test]
fn sync_pieces_streams_of_one_task_are_bounded() {
    // Slow, so the task is still downloading (and its streams open) while the test runs.
    let parent = DownloadingParent::start("4Mi", 31);
    let max = dfget::limits::MAX_SYNC_STREAMS_PER_TASK;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    rt.block_on(async {
        let upload = parent.upload().await;
        let t0 = std::time::Instant::now();
        // The last piece: it lands last, so no stream ends before the test is done with it.
        let mut open = Vec::new();
        while open.len() < max {
            let stream = parent.sync(&upload, vec![9]).await;
            open.push(stream.unwrap_or_else(|e| panic!("stream {} of {max} refused: {e}", open.len() + 1)));
        }
        let refused = parent.sync(&upload, vec![9]).await.err().expect("a stream past the bound was opened");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
        drop(open.pop());
        let mut again = false;
        while !again && t0.elapsed() < Duration::from_secs(9) {
            again = parent.sync(&upload, vec![9]).await.is_ok();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(again, "no room again after a stream closed");
        assert!(
            t0.elapsed() < Duration::from_secs(9),
            "the task finished before the test was done ({:?})",
            t0.elapsed()
        );
    });
    parent.finish();
}

fn upload_bytes(metrics_port: u16, path: &str) -> u64 {
    let mut s = TcpStream::connect(("127.0.0.1", metrics_port)).expect("connect metrics");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read metrics");
    let key = format!("dfget_upload_bytes_total{{path=\"{path}\"}} ");
    let line = text.lines().find_map(|l| l.strip_prefix(key.as_str())).unwrap_or_else(|| panic!("no {key}in {text}"));
    line.trim().parse().expect("a count")
}

#[test]
fn uploads_are_spliced_on_io_uring_and_copied_on_the_polling_driver() {
    let root = common::temp_dir("dfget-p2p-origin-");
    let nginx = Nginx::start(root.path());
    let sched = Scheduler::start();
    let bytes = serve(root.path(), "f.bin", 6 * MIB, 11);
    let url = nginx.url("/f.bin");
    let id = dfget::p2p::task_id::cluster_task_id(&url, &[], "", "").unwrap();
    let out = out_dir();
    for (n, polling) in [(1u8, false), (2, true)] {
        let metrics_port = free_port();
        let extra = format!("metrics: 127.0.0.1:{metrics_port}\n");
        let env = if polling { vec![("DFGET_DRIVER".into(), "polling".into())] } else { Vec::new() };
        let p = peer_with_env(&sched.addr(), n, &extra, env);
        assert_success(&p.daemon.download(&url, &out.path().join(format!("f{n}"))), "download");
        let (tag, value) = vortex_exchange(&p, &request(id.as_bytes(), 1));
        assert_eq!(tag, 1, "piece content");
        let meta_len = u32::from_be_bytes(value[0..4].try_into().unwrap()) as usize;
        assert_eq!(&value[4 + meta_len..], &bytes[4 * MIB..6 * MIB], "piece 1's bytes");
        let started = p.daemon.core_log_json().into_iter().find(|l| l["msg"] == "dfget daemon started");
        let driver = started.as_ref().and_then(|l| l["driver"].as_str()).unwrap_or("").to_string();
        let (spliced, copied) = (upload_bytes(metrics_port, "splice"), upload_bytes(metrics_port, "copy"));
        if polling {
            assert_eq!((spliced, copied), (0, 2 * MIB as u64), "polling driver ({driver}): copied");
        } else if driver == "io_uring" {
            assert_eq!((spliced, copied), (2 * MIB as u64, 0), "io_uring: spliced");
        } else {
            eprintln!("io_uring unavailable here ({driver}): the zero-copy path was not exercised");
            assert_eq!(spliced + copied, 2 * MIB as u64);
        }
    }
}
