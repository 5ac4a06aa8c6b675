//! Joining a Dragonfly cluster, end to end: Dragonfly's real scheduler (Go, no manager, no
//! Redis), three of our daemons with their own loopback addresses (127.0.0.2-4) and ports, and
//! nginx as the origin, whose access log counts the bytes it served.
//!
//! Each test names what it proves; the origin byte count is what shows pieces travelled between
//! peers rather than from the origin.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use common::scheduler::Scheduler;
use common::{assert_file_is, assert_success, content, free_port, out_dir, poll_until, Daemon, DaemonOpts, Nginx, MIB};

struct Peer {
    daemon: Daemon,
    ip: String,
    vortex_port: u16,
}

fn peer(sched_addr: &str, n: u8, extra: &str) -> Peer {
    let ip = format!("127.0.0.{}", n + 1);
    let (grpc_port, vortex_port) = (free_port(), free_port());
    let yaml = format!(
        "scheduler:\n  netAddrs:\n    - type: tcp\n      addr: {sched_addr}\n\
         host:\n  advertiseIP: {ip}\n  hostname: peer{n}\n\
         upload:\n  tcpListen:\n    listen: {ip}\n    port: {grpc_port}\n  vortexPort: {vortex_port}\n{extra}"
    );
    let daemon = Daemon::start(DaemonOpts { extra_yaml: yaml, ..DaemonOpts::default() });
    assert!(daemon.wait_log("announced to the scheduler"), "peer{n} never announced itself:\n{}", daemon.core_log());
    Peer { daemon, ip, vortex_port }
}

fn origin_bytes(nginx: &Nginx, uri: &str) -> u64 {
    nginx.access_log_entries().iter().filter(|e| e.uri == uri).map(|e| e.body_bytes_sent).sum()
}

fn serve(dir: &Path, name: &str, len: usize, seed: u64) -> Vec<u8> {
    let bytes = content(len, seed);
    std::fs::write(dir.join(name), &bytes).expect("write origin file");
    bytes
}

/// nginx writes its access-log line when a request completes; wait for the count to settle.
fn settled_origin_bytes(nginx: &Nginx, uri: &str) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..20 {
        let now = origin_bytes(nginx, uri);
        if now == last {
            return now;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(100));
    }
    last
}

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
    let id = dfget::p2p::task_id::cluster_task_id(&url::Url::parse(&url).unwrap(), &[], "", "");
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
    let id = dfget::p2p::task_id::cluster_task_id(&url::Url::parse(&url).unwrap(), &[], "", "");
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
