#!/usr/bin/env python3
"""Interop with Dragonfly's own Rust dfdaemon, through the same real scheduler.

    benches/interop.py [--size-mib 64] [--dfget target/release/dfget]
                       [--dfdaemon PATH] [--rust-dfget PATH] [--scheduler PATH] [--keep]

Not part of CI: Dragonfly's Rust dfdaemon is a long build (rocksdb's C++; over 1.5 h at nice 19 on
2 shared cores, see PERF.md). Get it with
(Debian: apt-get install protobuf-compiler libclang-dev cmake first):

    CARGO_TARGET_DIR=/tmp/dfclient-build nice -n 19 cargo install dragonfly-client@1.5.10 --locked \\
        --root ${DFGET_TOOLS:-$HOME/.cache/dfget-tools}/dragonfly-client-1.5.10

which installs `dfdaemon` and its `dfget` into that root's bin/ (where this script looks first).
Dragonfly's scheduler comes from scripts/test.sh (${DFGET_TOOLS}/scheduler-v2.5.1/scheduler).

Everything listens on loopback: the scheduler (Go, no manager, no Redis: the e2e tests' config)
and nginx on 127.0.0.1, our daemon on 127.0.0.2, the Rust dfdaemon on 127.0.0.5, every port
free-picked and written into the configs (the Rust dfdaemon's defaults bind 0.0.0.0:4000-4006,
which the script never uses). Data, logs and configs live in a temp dir, removed on exit.

Checks, each printed PASS/FAIL with its evidence, then `N passed, N failed`:
  1. ours fetches from a Rust parent: the Rust dfdaemon downloads A (from the origin; A's URL has a
     query with a key both clients are told to filter, so both task-id rules are exercised), then ours
     downloads A: exact bytes, our log names the Rust peer as the parent of a piece, and the
     origin served A at most once plus our first piece (ours always takes piece 0 from the origin:
     it registers only once the first response laid the task out);
  2. a Rust child fetches from ours: ours downloads B, then the Rust dfdaemon downloads B: exact
     bytes, the Rust dfdaemon's debug log has a "finished piece ... from parent" line naming our
     peer for every piece and no back-to-source line, and the origin served B only once (the Rust
     dfdaemon's 1-byte `Range: bytes=0-0` length probe, which it sends before any download, aside).
Exit status 0 only if every check passed.
"""

import argparse
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import Proc, sha256_file, wait_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOOLS = os.environ.get("DFGET_TOOLS", os.path.expanduser("~/.cache/dfget-tools"))
RUST_VERSION = "1.5.10"
SCHEDULER_VERSION = "v2.5.1"
OURS_IP, RUST_IP = "127.0.0.2", "127.0.0.5"
PIECE0_BYTES = 4 * 1024 * 1024
CLIENT_LIMIT_S = 300
# A is asked for with a query and one filtered key on both sides, so the two task-id rules must
# agree on filtering, key order and escaping (the Rust client sorts the kept keys); B's plain URL
# is asked for with each side's default filter (ours: none; Dragonfly's dfget: its cloud list).
FILTERED_KEY = "ns"
QUERY = {"a.bin": "?z=1&ns=k8s.io&a=x%20y"}


def free_port(ip="127.0.0.1"):
    s = socket.socket()
    s.bind((ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def port_open(ip, port):
    try:
        socket.create_connection((ip, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def log_sizes(d):
    """Each file's length under `d` now: the mark `logs_since` reads on from."""
    return {os.path.join(dp, f): os.path.getsize(os.path.join(dp, f)) for dp, _, files in os.walk(d) for f in files}


def logs_since(d, sizes):
    """What every file under `d` gained since `sizes` (files that appeared since: all of them).
    Per file, not one concatenation sliced by its old length: the Rust dfdaemon's log and
    rocksdb's LOG files grow together, and a slice would drop the first new lines of the first."""
    out = []
    for path, _ in sorted(log_sizes(d).items()):
        with open(path, "rb") as f:
            f.seek(sizes.get(path, 0))
            out.append(f.read().decode("utf-8", "replace"))
    return "\n".join(out)


class Interop:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="dfget-interop-")
        self.procs = []
        self.size = args.size_mib * 1024 * 1024
        self.results = []

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def start(self, cmd, name, ready, limit_s=30):
        os.makedirs(self.path(name), exist_ok=True)
        p = Proc(cmd, self.path(name, "stdout.log"))
        self.procs.append(p)
        wait_for(lambda: ready() or not p.alive(), limit_s, name)
        if not p.alive():
            raise RuntimeError("%s exited at start:\n%s" % (name, read(self.path(name, "stdout.log"))[-3000:]))
        return p

    # ---- servers ----

    def origin(self):
        www = self.path("www")
        os.makedirs(www)
        self.digests = {}
        for name in ("a.bin", "b.bin"):
            data = os.urandom(self.size)
            with open(os.path.join(www, name), "wb") as f:
                f.write(data)
            self.digests[name] = hashlib.sha256(data).hexdigest()
        d = self.path("nginx")
        os.makedirs(d)
        self.nginx_port = free_port()
        self.access_log = os.path.join(d, "access.log")
        temps = " ".join("%s %s/%s;" % (k, d, k) for k in
                         ("client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path",
                          "uwsgi_temp_path", "scgi_temp_path"))
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write("daemon off; master_process off; worker_processes 1; pid %s/pid;\n"
                    "error_log %s/error.log;\nevents { worker_connections 256; }\n"
                    "http { sendfile on; %s\n"
                    "  log_format bytes '$remote_addr $request_uri $status $body_bytes_sent \"$http_range\"';\n"
                    "  access_log %s bytes;\n"
                    "  server { listen 127.0.0.1:%d; root %s; } }\n"
                    % (d, d, temps, self.access_log, self.nginx_port, www))
        self.start(["nginx", "-p", d, "-c", conf], "nginx", lambda: port_open("127.0.0.1", self.nginx_port))

    def scheduler(self):
        d = self.path("scheduler")
        os.makedirs(d)
        self.sched_port = free_port()
        conf = os.path.join(d, "scheduler.yaml")
        with open(conf, "w") as f:
            f.write("server:\n  advertiseIP: 127.0.0.1\n  advertisePort: %d\n  listenIP: 127.0.0.1\n"
                    "  port: %d\n  host: localhost\n  logDir: %s/logs\n  pluginDir: %s/plugins\n"
                    "scheduler:\n  algorithm: default\n  backToSourceCount: 200\n"
                    "  retryBackToSourceLimit: 3\n  retryLimit: 10\n  retryInterval: 200ms\n"
                    "seedPeer:\n  enable: false\njob:\n  enable: false\nmetrics:\n  enable: false\n"
                    % (self.sched_port, self.sched_port, d, d))
        self.start([self.args.scheduler, "--config", conf, "--dynconfig", os.path.join(d, "dynconfig.yaml")],
                   "scheduler", lambda: port_open("127.0.0.1", self.sched_port))

    def ours(self):
        d = self.path("ours")
        os.makedirs(d)
        grpc, vortex = free_port(OURS_IP), free_port(OURS_IP)
        self.ours_sock = os.path.join(d, "dfdaemon.sock")
        conf = os.path.join(d, "dfget.yaml")
        with open(conf, "w") as f:
            f.write("dataDir: %s/data\nlogDir: %s/log\nworkHome: %s/work\n"
                    "download:\n  downloadGRPC:\n    unixListen:\n      socket: %s\n"
                    "storage:\n  multiplex: true\n"
                    "scheduler:\n  netAddrs:\n    - type: tcp\n      addr: 127.0.0.1:%d\n"
                    "host:\n  advertiseIP: %s\n  hostname: ours\n"
                    "upload:\n  tcpListen:\n    listen: %s\n    port: %d\n  vortexPort: %d\n"
                    % (d, d, d, self.ours_sock, self.sched_port, OURS_IP, OURS_IP, grpc, vortex))
        self.ours_log = os.path.join(d, "log", "daemon", "core.log")
        self.start([self.args.dfget, "daemon", "--config", conf], "ours",
                   lambda: "announced to the scheduler" in read(self.ours_log))

    def rust(self):
        d = self.path("rust")
        os.makedirs(d)
        p = {k: free_port(RUST_IP) for k in ("upload", "tcp", "quic", "health", "metrics", "stats", "proxy")}
        self.rust_sock = os.path.join(d, "dfdaemon.sock")
        self.rust_logs = os.path.join(d, "log")
        conf, dyn = os.path.join(d, "dfdaemon.yaml"), os.path.join(d, "dynconfig.yaml")
        # Keys from dragonfly-client-config 1.5.10 (src/dfdaemon.rs); no `manager.addr`, so the
        # schedulers come from the local dynconfig file (dragonfly-client src/dynconfig/local.rs).
        with open(conf, "w") as f:
            f.write("host:\n  hostname: rustpeer\n  ip: %s\n"
                    "server:\n  pluginDir: %s/plugins\n  cacheDir: %s/cache\n"
                    "download:\n  server:\n    socketPath: %s\n"
                    "upload:\n  server:\n    ip: %s\n    port: %d\n"
                    "storage:\n  dir: %s/storage\n  keep: false\n"
                    "  server:\n    ip: %s\n    tcpPort: %d\n    quicPort: %d\n"
                    "health:\n  server:\n    ip: %s\n    port: %d\n"
                    "metrics:\n  server:\n    ip: %s\n    port: %d\n"
                    "stats:\n  server:\n    ip: %s\n    port: %d\n"
                    "proxy:\n  server:\n    ip: %s\n    port: %d\n"
                    % (RUST_IP, d, d, self.rust_sock, RUST_IP, p["upload"], d, RUST_IP, p["tcp"], p["quic"],
                       RUST_IP, p["health"], RUST_IP, p["metrics"], RUST_IP, p["stats"], RUST_IP, p["proxy"]))
        with open(dyn, "w") as f:
            f.write("scheduler:\n  addrs:\n    - 127.0.0.1:%d\n" % self.sched_port)
        self.start([self.args.dfdaemon, "--config", conf, "--dynconfig", dyn, "--log-dir", self.rust_logs,
                    "--log-level", "debug"],
                   "rust", lambda: os.path.exists(self.rust_sock) and port_open(RUST_IP, p["upload"]), 60)
        # dfdaemon announces its host (init_announce_host) before it builds its upload server, so
        # an open upload port means the scheduler knows the Rust host.

    # ---- downloads ----

    def url(self, name):
        return "http://127.0.0.1:%d/%s%s" % (self.nginx_port, name, QUERY.get(name, ""))

    def origin_bytes(self, name):
        """Body bytes nginx sent for /name, and how many 1-byte `Range: bytes=0-0` probes were among
        them (the Rust dfdaemon's backend stat asks for the length that way before every download)."""
        last = None
        for _ in range(20):
            total, probes = 0, 0
            for line in read(self.access_log).splitlines():
                parts = line.split(None, 4)
                if len(parts) == 5 and parts[1].split("?")[0] == "/" + name:
                    if parts[4] == '"bytes=0-0"' and int(parts[3]) <= 1:
                        probes += 1
                    total += int(parts[3])
            if (total, probes) == last:
                return last
            last = (total, probes)
            time.sleep(0.2)
        return last

    def download(self, who, name):
        out = self.path("out-%s-%s" % (who, name))
        if who == "ours":
            cmd = [self.args.dfget, "-u", self.url(name), "-O", out, "--daemon-sock", self.ours_sock, "--no-spawn"]
            if name in QUERY:
                cmd += ["--filter", FILTERED_KEY]
        else:
            # Dragonfly's dfget 1.5.10 has no --log-dir: it logs to stderr (captured below) or nowhere.
            cmd = [self.args.rust_dfget, self.url(name), "-O", out, "-e", self.rust_sock]
            if name in QUERY:
                cmd += ["--filtered-query-param", FILTERED_KEY]
        t0 = time.monotonic()
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=CLIENT_LIMIT_S)
        took = time.monotonic() - t0
        if r.returncode != 0:
            raise RuntimeError("%s dfget %s failed (%d): %s" % (who, name, r.returncode,
                                                              r.stdout.decode(errors="replace")[-2000:]))
        exact = os.path.getsize(out) == self.size and sha256_file(out) == self.digests[name]
        return exact, took

    def check(self, name, ok, evidence):
        self.results.append(ok)
        print("%s  %s: %s" % ("PASS" if ok else "FAIL", name, evidence), flush=True)

    def ours_from_rust(self):
        exact, took = self.download("rust", "a.bin")
        self.check("Rust dfdaemon downloads A from the origin", exact, "exact=%s, %.2f s" % (exact, took))
        (before, probes) = self.origin_bytes("a.bin")
        exact, took = self.download("ours", "a.bin")
        (after, _) = self.origin_bytes("a.bin")
        log = read(self.ours_log)
        parent_lines = [l for l in log.splitlines() if "first piece from a parent arrived" in l]
        from_rust = any("rustpeer" in l or RUST_IP in l for l in parent_lines)
        self.check("ours downloads A exactly", exact, "%.2f s" % took)
        self.check("ours got A's pieces from the Rust parent", from_rust,
                   parent_lines[-1][:300] if parent_lines else "no 'first piece from a parent' in our log")
        self.check("origin served A once (+ our piece 0)", after - before <= PIECE0_BYTES,
                   "origin bytes for A: %d before ours (file %d + %d one-byte length probe(s)), %d after"
                   % (before, self.size, probes, after))

    def rust_from_ours(self):
        exact, took = self.download("ours", "b.bin")
        self.check("ours downloads B from the origin", exact, "exact=%s, %.2f s" % (exact, took))
        (before, probes_before) = self.origin_bytes("b.bin")
        mark = log_sizes(self.rust_logs)
        exact, took = self.download("rust", "b.bin")
        (after, probes_after) = self.origin_bytes("b.bin")
        new_log = logs_since(self.rust_logs, mark).splitlines()
        # dfdaemon logs "all pieces are downloaded with scheduler" also after the scheduler sent it
        # back to source, so the evidence is its per-piece line naming the parent (debug level).
        from_parent = [l for l in new_log if "finished piece" in l and "from parent" in l]
        from_ours = [l for l in from_parent if OURS_IP in l or "-ours-" in l]
        back = [l for l in new_log if "need back to source" in l or "from source" in l]
        pieces = -(-self.size // PIECE0_BYTES)
        self.check("Rust dfdaemon downloads B exactly", exact, "%.2f s" % took)
        self.check("Rust dfdaemon got every piece of B from ours", len(from_ours) == pieces and not back,
                   "%d of %d pieces 'from parent' naming ours, %d back-to-source line(s)%s"
                   % (len(from_ours), pieces, len(back), (": " + from_ours[0][-200:]) if from_ours else ""))
        probes = probes_after - probes_before
        self.check("origin served B once (+ the Rust length probe)", after - before == probes,
                   "origin bytes for B: %d before the Rust download, %d after, of which %d one-byte "
                   "length probe(s)" % (before, after, probes))

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:
                pass
        if self.args.keep:
            print("kept", self.work)
        else:
            shutil.rmtree(self.work, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rust_bin = os.path.join(TOOLS, "dragonfly-client-" + RUST_VERSION, "bin")
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--dfget", default=os.path.join(ROOT, "target", "release", "dfget"))
    ap.add_argument("--dfdaemon", default=os.path.join(rust_bin, "dfdaemon"))
    ap.add_argument("--rust-dfget", default=os.path.join(rust_bin, "dfget"))
    ap.add_argument("--scheduler", default=os.path.join(TOOLS, "scheduler-" + SCHEDULER_VERSION, "scheduler"))
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (logs) for a look afterwards")
    args = ap.parse_args()
    for what, path in (("our dfget (cargo build --release)", args.dfget),
                       ("Dragonfly's dfdaemon (see the header of this script)", args.dfdaemon),
                       ("Dragonfly's dfget (installed with dfdaemon)", args.rust_dfget),
                       ("Dragonfly's scheduler (scripts/test.sh builds it)", args.scheduler)):
        if not os.access(path, os.X_OK):
            sys.exit("%s not found at %s" % (what, path))
    for path in (args.dfget, args.dfdaemon):
        v = subprocess.run([path, "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        print("version: %s: %s" % (path, v.stdout.decode(errors="replace").strip().splitlines()[:1]), flush=True)
    t = Interop(args)
    try:
        t.origin()
        t.scheduler()
        t.ours()
        t.rust()
        for step in (t.ours_from_rust, t.rust_from_ours):
            try:
                step()
            except Exception as e:  # one direction failing must not hide the other
                t.check(step.__name__, False, str(e))
    finally:
        t.stop()
    failed = t.results.count(False)
    print("%d passed, %d failed" % (len(t.results) - failed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
