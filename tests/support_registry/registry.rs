//! A throwaway registry on 127.0.0.1 with a config the test writes (filesystem storage in a temp
//! dir, optional htpasswd or token auth, optional TLS with a certificate the test made), and a
//! reader of its request log. Two implementations share the config format: Debian's
//! `docker-registry` (distribution 2.8.2) and distribution v3's `registry` (built by `go_tool`);
//! either can run inside a network namespace the test made, listening on that namespace's address.
//!
//! The registry logs one `response completed` line per request with the method, URI, the
//! client's `remoteaddr` (ip:port, so one port = one connection), the status (206 = a Range was
//! honoured) and the bytes written. That is enough to count blob GETs and see ranged requests
//! from several connections without a proxy in front of it.
//!
//! Invariant: a `Registry` exists only once the registry printed `listening on`; Drop stops it.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::{ensure_tools, TokenServer};
use crate::common::{poll_until, temp_dir, terminate, wait_child_ready, NotReady};

const START_LIMIT: Duration = Duration::from_secs(15);
const STOP_GRACE: Duration = Duration::from_secs(3);

#[derive(Default)]
pub enum RegistryAuth {
    #[default]
    None,
    /// `auth.htpasswd` with one bcrypt user.
    Htpasswd { user: String, password: String },
    /// `auth.token` trusting the certificate of this token service.
    Token { realm: String, service: String, issuer: String, cert: PathBuf },
}

impl RegistryAuth {
    pub fn htpasswd(user: &str, password: &str) -> RegistryAuth {
        RegistryAuth::Htpasswd { user: user.into(), password: password.into() }
    }

    pub fn token(server: &TokenServer) -> RegistryAuth {
        RegistryAuth::Token {
            realm: server.realm(),
            service: server.service().into(),
            issuer: server.issuer().into(),
            cert: server.cert_path().to_path_buf(),
        }
    }
}

/// One request the registry logged.
#[derive(Debug, Clone)]
pub struct BlobRequest {
    pub method: String,
    pub uri: String,
    /// `ip:port` of the client: one value per TCP connection.
    pub remote: String,
    pub status: u16,
    pub written_bytes: u64,
}

/// Which registry program serves.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Kind {
    /// Debian's `docker-registry` package: distribution 2.8.2.
    #[default]
    DockerRegistry28,
    /// `github.com/distribution/distribution/v3/cmd/registry`, built with `go install`.
    DistributionV3,
}

/// How to start a registry; `Default` is plain http on 127.0.0.1 without auth, docker-registry 2.8.
#[derive(Default)]
pub struct RegistryOpts {
    pub kind: Kind,
    pub auth: RegistryAuth,
    /// `(certificate, key)` PEM files: serve https with them.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Run inside this network namespace (`ip netns exec`) listening on `listen_ip`.
    pub netns: Option<String>,
    /// The address to listen on; 127.0.0.1 when None.
    pub listen_ip: Option<String>,
}

pub struct Registry {
    dir: TempDir,
    ip: String,
    port: u16,
    child: Option<Child>,
}

impl Registry {
    pub fn start(auth: RegistryAuth) -> Registry {
        Registry::start_with(RegistryOpts { auth, ..RegistryOpts::default() })
    }

    pub fn start_with(opts: RegistryOpts) -> Registry {
        ensure_tools();
        let dir = temp_dir("oras-registry-");
        let ip = opts.listen_ip.clone().unwrap_or_else(|| "127.0.0.1".into());
        let config = dir.path().join("config.yml");
        fs::write(&config, config_yaml(dir.path(), &ip, &opts)).expect("write registry config");
        let log = OpenOptions::new().create(true).append(true).open(dir.path().join("registry.log")).expect("log");
        let program = match opts.kind {
            Kind::DockerRegistry28 => PathBuf::from("docker-registry"),
            Kind::DistributionV3 => crate::common::go_tool("registry"),
        };
        let mut cmd = match &opts.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let child = cmd
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", program.display()));
        let mut registry = Registry { dir, ip, port: 0, child: Some(child) };
        registry.port = registry.wait_listening();
        registry
    }

    /// `IP:PORT` (127.0.0.1 unless started elsewhere): the registry part of an `oras://`
    /// reference and the docker config key.
    pub fn host(&self) -> String {
        format!("{}:{}", self.ip, self.port)
    }

    /// `oras://127.0.0.1:PORT/<reference>` where reference is `repo:tag` or `repo@sha256:..`.
    pub fn oras_url(&self, reference: &str) -> String {
        format!("oras://{}/{reference}", self.host())
    }

    pub fn storage_root(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the filesystem driver keeps the bytes of blob `digest` (`sha256:<hex>`).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").expect("sha256 digest");
        self.storage_root().join("docker/registry/v2/blobs/sha256").join(&hex[..2]).join(hex).join("data")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Every logged request (any method) whose URI is `/v2/<repo>/blobs/<digest>`, any repo.
    pub fn blob_requests(&self, digest: &str) -> Vec<BlobRequest> {
        let suffix = format!("/blobs/{digest}");
        parse_requests(&self.log()).into_iter().filter(|r| r.uri.ends_with(&suffix)).collect()
    }

    /// The GETs of blob `digest`, waiting (≤2 s) until their written bytes reach `at_least_bytes`:
    /// the registry logs a request just after answering it, so the last line may trail the client.
    pub fn blob_gets_covering(&self, digest: &str, at_least_bytes: u64) -> Vec<BlobRequest> {
        let mut gets = Vec::new();
        poll_until(Duration::from_secs(2), || {
            gets = self.blob_requests(digest).into_iter().filter(|r| r.method == "GET").collect();
            gets.iter().map(|r| r.written_bytes).sum::<u64>() >= at_least_bytes
        });
        gets
    }

    fn wait_listening(&mut self) -> u16 {
        let log_path = self.dir.path().join("registry.log");
        let mut port = None;
        let child = self.child.as_mut().expect("registry process");
        let ip = self.ip.clone();
        let printed_port = || {
            port = listening_port(&fs::read_to_string(&log_path).unwrap_or_default(), &ip);
            port.is_some()
        };
        match (wait_child_ready(child, START_LIMIT, printed_port), port) {
            (Ok(()), Some(port)) => port,
            (Err(NotReady::Exited(status)), _) => panic!("the registry exited at start ({status}):\n{}", self.log()),
            _ => panic!("the registry printed no `listening on` within {START_LIMIT:?}:\n{}", self.log()),
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, STOP_GRACE);
        }
    }
}

/// `http.addr: 127.0.0.1:0` works with 2.8.2: the kernel picks the port and the registry logs
/// it, so there is no window in which another process could take a port we picked.
fn config_yaml(dir: &Path, ip: &str, opts: &RegistryOpts) -> String {
    let mut yaml = format!(
        "version: 0.1\nlog:\n  level: info\n  formatter: text\n\
         storage:\n  filesystem:\n    rootdirectory: {root}\n\
         http:\n  addr: {ip}:0\n  secret: e2e-test-secret\n",
        root = dir.join("storage").display()
    );
    if let Some((cert, key)) = &opts.tls {
        yaml += &format!("  tls:\n    certificate: {}\n    key: {}\n", cert.display(), key.display());
    }
    match &opts.auth {
        RegistryAuth::None => {}
        RegistryAuth::Htpasswd { user, password } => {
            let path = dir.join("htpasswd");
            fs::write(&path, bcrypt_line(user, password)).expect("write htpasswd");
            yaml += &format!("auth:\n  htpasswd:\n    realm: e2e-basic\n    path: {}\n", path.display());
        }
        RegistryAuth::Token { realm, service, issuer, cert } => {
            yaml += &format!(
                "auth:\n  token:\n    realm: {realm}\n    service: {service}\n    issuer: {issuer}\n    \
                 rootcertbundle: {}\n",
                cert.display()
            );
        }
    }
    yaml
}

/// `user:$2y$..`: the registry's htpasswd support only knows bcrypt.
fn bcrypt_line(user: &str, password: &str) -> String {
    let out = Command::new("htpasswd").args(["-Bbn", user, password]).output().expect("run htpasswd");
    assert!(out.status.success(), "htpasswd failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).expect("htpasswd output is text").trim().to_string() + "\n"
}

fn listening_port(log: &str, ip: &str) -> Option<u16> {
    let prefix = format!("listening on {ip}:");
    let at = log.find(&prefix)? + prefix.len();
    let digits: String = log[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The `response completed` (or `... with error`) lines of the registry's text log.
fn parse_requests(log: &str) -> Vec<BlobRequest> {
    log.lines()
        .filter(|line| line.contains("msg=\"response completed"))
        .filter_map(|line| {
            Some(BlobRequest {
                method: field(line, "http.request.method")?,
                uri: field(line, "http.request.uri")?,
                remote: field(line, "http.request.remoteaddr")?,
                status: field(line, "http.response.status")?.parse().ok()?,
                written_bytes: field(line, "http.response.written").and_then(|w| w.parse().ok()).unwrap_or(0),
            })
        })
        .collect()
}

/// Value of ` key=value` or ` key="value"` in a logrus text line.
fn field(line: &str, key: &str) -> Option<String> {
    let needle = format!(" {key}=");
    let rest = &line[line.find(&needle)? + needle.len()..];
    if let Some(quoted) = rest.strip_prefix('"') {
        return Some(quoted[..quoted.find('"')?].to_string());
    }
    Some(rest.split(' ').next().unwrap_or("").to_string())
}

#[test]
fn registry_log_fields_are_parsed() {
    let line = "time=\"t\" level=info msg=\"response completed\" go.version=go1.19.8 http.request.method=GET \
                http.request.remoteaddr=\"127.0.0.1:43210\" http.request.uri=\"/v2/a/b/blobs/sha256:ab\" \
                http.response.status=206 http.response.written=4194304";
    let got = parse_requests(line);
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].method.as_str(), got[0].uri.as_str()), ("GET", "/v2/a/b/blobs/sha256:ab"));
    assert_eq!((got[0].remote.as_str(), got[0].status, got[0].written_bytes), ("127.0.0.1:43210", 206, 4194304));
    assert_eq!(listening_port("x msg=\"listening on 127.0.0.1:43947\" go", "127.0.0.1"), Some(43947));
    assert_eq!(listening_port("x msg=\"listening on 10.9.0.2:5000, tls\" go", "10.9.0.2"), Some(5000));
    assert_eq!(listening_port("nothing yet", "127.0.0.1"), None);
}
