//! A throwaway tinyproxy (Debian package `tinyproxy`) in the foreground on 127.0.0.1, with its own
//! config, log and pid file in a temp dir, allowing CONNECT to the ports a test names.
//!
//! Invariant: a `Tinyproxy` exists only once its port accepts connections; dropping it always
//! stops the process. It listens on and allows only 127.0.0.1.

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::common::{ensure_tool, free_port, temp_dir, terminate, wait_child_ready, NotReady};

const START_LIMIT: Duration = Duration::from_secs(10);
const BIND_ATTEMPTS: usize = 5;

pub struct Tinyproxy {
    dir: TempDir,
    port: u16,
    child: Option<Child>,
}

impl Tinyproxy {
    /// Starts tinyproxy allowing `CONNECT` to `connect_ports` (by default it allows only 443/563).
    pub fn start(connect_ports: &[u16]) -> Tinyproxy {
        let binary = ensure_tool("tinyproxy", &["tinyproxy"]);
        let dir = temp_dir("dfget-tinyproxy-");
        let mut last_error = String::new();
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port();
            let conf = dir.path().join("tinyproxy.conf");
            fs::write(&conf, config(dir.path(), port, connect_ports)).expect("write tinyproxy.conf");
            let _ = fs::remove_file(dir.path().join("tinyproxy.log"));
            let mut child = spawn(&binary, dir.path(), &conf);
            match wait_ready(&mut child, port) {
                Ok(()) => return Tinyproxy { dir, port, child: Some(child) },
                Err(e) => {
                    terminate(&mut child, Duration::from_secs(3));
                    last_error = format!("{e}; log: {}", read(dir.path(), "tinyproxy.log"));
                }
            }
        }
        panic!("tinyproxy did not start after {BIND_ATTEMPTS} attempts: {last_error}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT`, as written in the daemon's `proxy:` key.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The proxy's log so far (one `Request (file descriptor N): LINE` per proxied request).
    pub fn log(&self) -> String {
        read(self.dir.path(), "tinyproxy.log")
    }

    /// The request lines tinyproxy logged, e.g. `GET http://127.0.0.1:8080/f HTTP/1.1`.
    pub fn request_lines(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| l.split_once("): ").filter(|_| l.contains("Request (file descriptor")))
            .map(|(_, req)| req.trim().to_string())
            .collect()
    }
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(3));
        }
    }
}

fn read(dir: &Path, name: &str) -> String {
    fs::read_to_string(dir.join(name)).unwrap_or_default()
}

fn config(dir: &Path, port: u16, connect_ports: &[u16]) -> String {
    let mut conf = format!(
        "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nAllow 127.0.0.1\n\
         LogFile \"{log}\"\nPidFile \"{pid}\"\nLogLevel Info\n",
        log = dir.join("tinyproxy.log").display(),
        pid = dir.join("tinyproxy.pid").display(),
    );
    for p in connect_ports {
        conf.push_str(&format!("ConnectPort {p}\n"));
    }
    conf
}

fn spawn(binary: &Path, dir: &Path, conf: &Path) -> Child {
    let out = |name: &str| fs::File::create(dir.join(name)).expect("tinyproxy output file");
    Command::new(binary)
        .arg("-d")
        .arg("-c")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(out("stdout.log"))
        .stderr(out("stderr.log"))
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", binary.display()))
}

fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let accepts = || TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok();
    match wait_child_ready(child, START_LIMIT, accepts) {
        Ok(()) => Ok(()),
        Err(NotReady::Exited(status)) => Err(format!("tinyproxy exited ({status})")),
        Err(NotReady::TimedOut) => Err(format!("tinyproxy not accepting on {port}")),
    }
}
