//! Restart cost: how long the daemon takes to rebuild its task index from disk. Writes N finished
//! tasks (metadata + a small data file each) into a temp data dir, starts the real `dfget daemon` on
//! it, and reads the `task index restored` line (`restored`, `cost_ms`) from core.log.
//!
//! `cargo bench --bench restore` uses N = 5000; under `cargo test --all-targets` (no `--bench`
//! argument) it runs a 50-task smoke pass so the harness itself stays tested.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dfget::storage::meta::{self, TaskMeta};
use dfget::storage::Store;

fn write_tasks(data_dir: &Path, n: usize) {
    let store = Store::new(data_dir);
    for i in 0..n {
        let body = format!("task {i}").repeat(100).into_bytes();
        let id = dfget::storage::task_id::task_id(&format!("http://bench.invalid/{i}"), &[], "", "", "");
        let path = store.create_task_file(&id, Some(body.len() as u64)).expect("create task file");
        std::fs::write(&path, &body).expect("write data");
        let m = TaskMeta {
            task_id: id.clone(),
            url: format!("http://bench.invalid/{i}"),
            content_len: Some(body.len() as u64),
            piece_len: dfget::piece::DEFAULT_PIECE_LEN_BYTES,
            pieces_done: vec![true],
            piece_crcs: vec![crc32fast::hash(&body)],
            digest: None,
            created_unix_ms: 1,
            last_access_unix_ms: 2,
            finished_unix_ms: Some(3),
            validator: None,
            private: false,
            validators: None,
            partial: Vec::new(),
        };
        meta::write_atomic(&store.meta_path(&id), &m.encode()).expect("write meta");
    }
}

fn restore_line(log: &Path, deadline: Instant) -> serde_json::Value {
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(log) {
            if let Some(line) = text.lines().find(|l| l.contains("task index restored")) {
                return serde_json::from_str(line).expect("JSON log line");
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("no `task index restored` line in {}", log.display());
}

fn main() {
    let n: usize = if std::env::args().any(|a| a == "--bench") { 5000 } else { 50 };
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    write_tasks(&data, n);
    let cfg = dir.path().join("dfget.yaml");
    let yaml = format!(
        "dataDir: {}\nlogDir: {}\ndownload:\n  downloadGRPC:\n    unixListen:\n      socket: {}\n",
        data.display(),
        dir.path().join("log").display(),
        dir.path().join("d.sock").display()
    );
    std::fs::write(&cfg, yaml).expect("config");
    let t0 = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_dfget"))
        .args(["daemon", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start daemon");
    let line = restore_line(&dir.path().join("log/daemon/core.log"), Instant::now() + Duration::from_secs(60));
    let wall = t0.elapsed();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let restored = line["restored"].as_u64().unwrap_or(0);
    assert_eq!(restored, n as u64, "every task restored: {line}");
    println!(
        "restore: {n} finished tasks, index rebuilt in {} ms (daemon start to log line: {} ms)",
        line["cost_ms"],
        wall.as_millis()
    );
}
