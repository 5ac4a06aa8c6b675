#!/usr/bin/env python3
"""Swarm benchmark: N hosts of ours in a Dragonfly cluster pull one file at once.

    sudo benches/swarm.py [--hosts 2,4,8] [--size-mib 512] [--rate-mibps 100] [--runs 3]
                          [--dfget target/release/dfget] [--scheduler PATH] [--json OUT.jsonl]

Not part of CI: it needs root (ip netns, tc) and Dragonfly's scheduler, which scripts/test.sh
builds into ${DFGET_TOOLS:-$HOME/.cache/dfget-tools}/scheduler-v2.5.1/scheduler.

What it builds, all made here and removed on exit (also on failure or Ctrl-C):
  - a "switch" network namespace holding one Linux bridge, and one namespace per node (the
    scheduler, the origin, host1..hostN), each joined to the bridge by a veth pair, addresses
    10.213.0.0/24 inside these namespaces only;
  - every host's link and the origin's link shaped to RATE in both directions with tc (tbf on the
    node's end for its egress = upload, tbf on the bridge's end for its ingress = download); the
    scheduler's link is not shaped (control traffic only);
  - nginx in the origin namespace (sendfile, an access log of client address, URI and body
    bytes); Dragonfly's real scheduler (Go) in its own namespace, with the config the e2e tests
    use (tests/common/scheduler.rs);
  - one `dfget daemon` per host, started inside the host's namespace with `scheduler.netAddrs`
    pointing at the scheduler and its upload servers on the host's address; data, logs and
    outputs in a tmpfs directory (/dev/shm) so disk writeback of other users does not add noise.

One run = fresh scheduler + fresh daemons + a new URL (so a new task), then all N clients start
at the same instant (`dfget -u URL -O OUT`, one per host, through the host's daemon socket).
Rounds alternate N (1 first, then the others; order reversed every other round), N = 1 is the
"one host alone" baseline. Every output's sha256 is checked against the origin file.

Reported per N (medians over runs):
  - origin egress / file size: body bytes nginx logged for the run's URL (and what left the
    origin's shaped link, from tc, headers and all);
  - time for all N to finish, and its ratio to one host alone;
  - each host's rate (file size / its own wall time) as a fraction of its link;
  - where each host's bytes came from (origin bytes per client address in nginx's log) and what
    each host uploaded (tc bytes on its egress);
  - the machine's own limit at N, measured in the same rounds (`mesh_once`, skip with --no-mesh):
    every host's links carry one file at once with curl and nginx alone (host k downloads it from
    host k+1), and the fraction of the machine's CPU busy during each run, swarm and mesh: on a
    2-core VM the kernel's veth, bridge and tbf work is much of what a run costs.
The load average is printed at start and end: the machine is shared.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import Proc, sha256_file, wait_for  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREFIX = "dfsw%d-" % (os.getpid() % 10000)
SWITCH = PREFIX + "sw"
SUBNET = "10.213.0"
SCHED_IP, ORIGIN_IP = SUBNET + ".2", SUBNET + ".3"
SCHED_PORT, ORIGIN_PORT, GRPC_PORT, VORTEX_PORT = 8002, 8080, 4000, 4005
SCHEDULER_VERSION = "v2.5.1"
CLIENT_LIMIT_S = 600


def sh(*cmd, check=True, capture=False):
    r = subprocess.run(cmd, check=False, stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)
    if check and r.returncode != 0:
        raise RuntimeError("%s: %s" % (" ".join(cmd), r.stderr.strip()))
    return r.stdout if capture else None


def nsx(ns, *cmd):
    return ["ip", "netns", "exec", ns] + list(cmd)


def host_ip(k):
    return "%s.%d" % (SUBNET, 10 + k)


def host_ns(k):
    return PREFIX + "h%d" % k


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


class Net:
    """The namespaces, bridge, veths and tc shaping. Everything made is remembered and removed."""

    def __init__(self, n_hosts, rate_bits, queue):
        self.made = []
        self.n_hosts = n_hosts
        self.rate_bits = rate_bits
        self.queue = queue
        sh("ip", "netns", "add", SWITCH)
        self.made.append(SWITCH)
        sw = ["ip", "netns", "exec", SWITCH]
        sh(*sw, "ip", "link", "add", "br0", "type", "bridge")
        sh(*sw, "ip", "link", "set", "br0", "up")
        sh(*sw, "ip", "link", "set", "lo", "up")
        self.node(PREFIX + "sched", "vsched", SCHED_IP, shaped=False)
        self.node(PREFIX + "origin", "vorigin", ORIGIN_IP, shaped=True)
        for k in range(1, n_hosts + 1):
            self.node(host_ns(k), "vh%d" % k, host_ip(k), shaped=True)

    def node(self, ns, br_if, ip, shaped):
        sh("ip", "netns", "add", ns)
        self.made.append(ns)
        sh("ip", "link", "add", br_if, "netns", SWITCH, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sw = ["ip", "netns", "exec", SWITCH]
        sh(*sw, "ip", "link", "set", br_if, "master", "br0")
        sh(*sw, "ip", "link", "set", br_if, "up")
        sh(*nsx(ns, "ip", "addr", "add", ip + "/24", "dev", "eth0"))
        sh(*nsx(ns, "ip", "link", "set", "eth0", "up"))
        sh(*nsx(ns, "ip", "link", "set", "lo", "up"))
        if shaped:
            self.shape(nsx(ns), "eth0")
            self.shape(sw, br_if)

    def shape(self, prefix, dev):
        # tbf: one token bucket per direction. The burst must hold a GSO super-packet (64 KiB);
        # 1 MiB at 100 MiB/s is 10 ms of line rate.
        # Under it, the queue: `fifo`, tbf's own byte FIFO of 50 ms (every packet waits behind the
        # others, the ACKs of the host's own download behind its uploads, and packets past 50 ms
        # are dropped), or `pfifo_fast`, the kernel's default qdisc (three bands by socket
        # priority, 1000 packets: bulk-marked traffic waits behind the rest). fq_codel, the default
        # of systemd hosts, is not in this kernel.
        sh(*prefix, "tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf", "rate",
           "%dbit" % self.rate_bits, "burst", "1048576", "latency", "50ms")
        if self.queue == "pfifo_fast":
            sh(*prefix, "tc", "qdisc", "add", "dev", dev, "parent", "1:1", "handle", "10:", "pfifo_fast")

    @staticmethod
    def tx_bytes(ns, dev):
        out = sh(*nsx(ns, "tc", "-s", "-j", "qdisc", "show", "dev", dev), capture=True)
        return sum(q.get("bytes", 0) for q in json.loads(out) if q.get("root"))

    def remove(self):
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        self.made = []


def tcp_open(ns, ip, port):
    return subprocess.run(nsx(ns, "bash", "-c", "exec 3<>/dev/tcp/%s/%d" % (ip, port)),
                          stderr=subprocess.DEVNULL).returncode == 0


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="dfget-swarm-", dir=args.work)
        self.procs = []
        self.net = None
        self.size = args.size_mib * 1024 * 1024
        self.rate_bytes = args.rate_mibps * 1024 * 1024

    # ---- fixed parts: network, origin ----

    def setup(self, n_hosts):
        self.net = Net(n_hosts, self.rate_bytes * 8, self.args.queue)
        www = os.path.join(self.work, "www")
        os.makedirs(www)
        self.origin_file = os.path.join(www, "blob.bin")
        h = hashlib.sha256()
        with open(self.origin_file, "wb") as f:
            left = self.size
            while left:
                chunk = os.urandom(min(left, 8 << 20))
                h.update(chunk)
                f.write(chunk)
                left -= len(chunk)
        self.digest = h.hexdigest()
        self.start_nginx(www)

    def start_nginx(self, www):
        self.access_log = self.nginx(PREFIX + "origin", ORIGIN_IP, os.path.join(self.work, "nginx"), www)
        # One more on every host, serving the same file, for the all-links-at-once runs (`mesh_once`).
        for k in range(1, self.net.n_hosts + 1):
            self.nginx(host_ns(k), host_ip(k), os.path.join(self.work, "nginx-h%d" % k), www)

    def nginx(self, ns, ip, d, www):
        """nginx (sendfile) in namespace `ns` on ip:ORIGIN_PORT serving `www`; returns its access
        log (client address, URI, status, body bytes)."""
        os.makedirs(d)
        access_log = os.path.join(d, "access.log")
        conf = os.path.join(d, "nginx.conf")
        temps = " ".join("%s %s/%s;" % (k, d, k) for k in
                         ("client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path",
                          "uwsgi_temp_path", "scgi_temp_path"))
        with open(conf, "w") as f:
            f.write("daemon off; master_process off; worker_processes 1; pid %s/pid;\n"
                    "error_log %s/error.log;\nevents { worker_connections 1024; }\n"
                    "http { sendfile on; %s\n"
                    "  log_format bytes '$remote_addr $request_uri $status $body_bytes_sent';\n"
                    "  access_log %s bytes;\n"
                    "  server { listen %s:%d; root %s; } }\n"
                    % (d, d, temps, access_log, ip, ORIGIN_PORT, www))
        self.procs.append(Proc(nsx(ns, "nginx", "-p", d, "-c", conf), os.path.join(d, "stdout.log")))
        wait_for(lambda: tcp_open(ns, ip, ORIGIN_PORT), 10, "nginx in " + ns)
        return access_log

    # ---- per run: scheduler, daemons ----

    def start_scheduler(self, run_dir):
        d = os.path.join(run_dir, "scheduler")
        os.makedirs(d)
        conf = os.path.join(d, "scheduler.yaml")
        with open(conf, "w") as f:
            f.write("server:\n  advertiseIP: %s\n  advertisePort: %d\n  listenIP: %s\n  port: %d\n"
                    "  host: localhost\n  logDir: %s/logs\n  pluginDir: %s/plugins\n"
                    "scheduler:\n  algorithm: default\n  backToSourceCount: 200\n"
                    "  retryBackToSourceLimit: 3\n  retryLimit: 10\n  retryInterval: 200ms\n"
                    "seedPeer:\n  enable: false\njob:\n  enable: false\nmetrics:\n  enable: false\n"
                    % (SCHED_IP, SCHED_PORT, SCHED_IP, SCHED_PORT, d, d))
        p = Proc(nsx(PREFIX + "sched", self.args.scheduler, "--config", conf, "--dynconfig",
                     os.path.join(d, "dynconfig.yaml")), os.path.join(d, "stdout.log"))
        self.procs.append(p)
        wait_for(lambda: tcp_open(PREFIX + "sched", SCHED_IP, SCHED_PORT), 30, "the scheduler")
        return p

    def start_daemon(self, run_dir, k):
        d = os.path.join(run_dir, "h%d" % k)
        os.makedirs(os.path.join(d, "out"))
        conf = os.path.join(d, "dfget.yaml")
        with open(conf, "w") as f:
            f.write("dataDir: %s/data\nlogDir: %s/log\nworkHome: %s/work\n"
                    "download:\n  downloadGRPC:\n    unixListen:\n      socket: %s/dfdaemon.sock\n"
                    "storage:\n  multiplex: true\n"
                    "scheduler:\n  netAddrs:\n    - type: tcp\n      addr: %s:%d\n"
                    "host:\n  advertiseIP: %s\n  hostname: swarm%d\n"
                    "upload:\n  tcpListen:\n    listen: %s\n    port: %d\n  vortexPort: %d\n"
                    % (d, d, d, d, SCHED_IP, SCHED_PORT, host_ip(k), k, host_ip(k), GRPC_PORT,
                       VORTEX_PORT))
        level = ["--log-level", self.args.log_level] if self.args.log_level else []
        p = Proc(nsx(host_ns(k), self.args.dfget, "daemon", "--config", conf, *level),
                 os.path.join(d, "stdout.log"))
        self.procs.append(p)
        return p, d

    def core_log(self, d):
        try:
            with open(os.path.join(d, "log", "daemon", "core.log"), errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def origin_bytes(self, uri):
        """nginx's body bytes for `uri`, per client address (settled: lines land at request end)."""
        last = None
        for _ in range(30):
            per = {}
            with open(self.access_log) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 4 and parts[1] == uri:
                        per[parts[0]] = per.get(parts[0], 0) + int(parts[3])
            if per == last:
                return per
            last = per
            time.sleep(0.2)
        return last

    def run_once(self, n, tag):
        run_dir = os.path.join(self.work, tag)
        os.makedirs(run_dir)
        uri = "/%s.bin" % tag
        os.link(self.origin_file, os.path.join(self.work, "www", uri[1:]))
        sched = self.start_scheduler(run_dir)
        daemons = [self.start_daemon(run_dir, k) for k in range(1, n + 1)]
        try:
            for _, d in daemons:
                wait_for(lambda: "announced to the scheduler" in self.core_log(d), 30,
                         "daemon %s to announce itself" % d)
            return self.timed_clients(n, uri, daemons)
        finally:
            for p, _ in daemons:
                p.stop()
            sched.stop()
            if self.args.keep_logs:
                # Logs and configs stay for a look; the data and outputs (N file copies) go.
                for k in range(1, n + 1):
                    for sub in ("data", "out"):
                        shutil.rmtree(os.path.join(run_dir, "h%d" % k, sub), ignore_errors=True)
                shutil.copytree(run_dir, os.path.join(self.args.keep_logs, tag))
            shutil.rmtree(run_dir, ignore_errors=True)
            os.unlink(os.path.join(self.work, "www", uri[1:]))

    def timed_clients(self, n, uri, daemons):
        url = "http://%s:%d%s" % (ORIGIN_IP, ORIGIN_PORT, uri)
        tx0 = {k: Net.tx_bytes(host_ns(k), "eth0") for k in range(1, n + 1)}
        origin_tx0 = Net.tx_bytes(PREFIX + "origin", "eth0")
        jobs = []
        for k, (_, d) in enumerate(daemons, 1):
            out = os.path.join(d, "out", "f.bin")
            jobs.append((k, out, [self.args.dfget, "-u", url, "-O", out, "--daemon-sock",
                                  os.path.join(d, "dfdaemon.sock"), "--no-spawn"]))
        times, busy = self.all_at_once(jobs, "dfget")
        per_origin = self.origin_bytes(uri)
        logs = {k: self.core_log(d) for k, (_, d) in enumerate(daemons, 1)}
        return {
            "n": n,
            "size": self.size,
            "times_s": [round(times[k], 3) for k in range(1, n + 1)],
            "all_s": round(max(times.values()), 3),
            "origin_body_bytes": sum(per_origin.values()),
            "origin_link_bytes": Net.tx_bytes(PREFIX + "origin", "eth0") - origin_tx0,
            "origin_bytes_per_host": [per_origin.get(host_ip(k), 0) for k in range(1, n + 1)],
            "uploaded_per_host": [Net.tx_bytes(host_ns(k), "eth0") - tx0[k] for k in range(1, n + 1)],
            "got_parents": [("scheduler gave parents" in logs[k]) for k in range(1, n + 1)],
            "parents": {k: parents_of(logs[k], n) for k in range(1, n + 1)},
            "parent_failures": [logs[k].count("piece from parent failed") for k in range(1, n + 1)],
            "daemon_cpu_s": [round(cpu_seconds(p.p.pid), 2) for p, _ in daemons],
            "cpu_busy": busy,
            "load": loadavg(),
        }

    def all_at_once(self, jobs, what):
        """Starts every (host, output, command) of `jobs` at the same instant and waits for all:
        each host's wall time and the fraction of the machine's CPU busy meanwhile. A command that
        fails or an output that is not the file ends the benchmark."""
        cpu0 = cpu_busy()
        t0 = time.monotonic()
        clients = [(k, out, subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
                   for k, out, cmd in jobs]
        times = {}
        while len(times) < len(clients):
            for k, _, c in clients:
                if k not in times and c.poll() is not None:
                    times[k] = time.monotonic() - t0
            if time.monotonic() - t0 > CLIENT_LIMIT_S:
                raise RuntimeError("%s clients still running after %d s" % (what, CLIENT_LIMIT_S))
            time.sleep(0.005)
        busy = cpu_busy_since(cpu0)
        for k, out, c in clients:
            if c.returncode != 0:
                raise RuntimeError("host %d: %s failed (%d): %s" % (k, what, c.returncode, c.stderr.read()))
            if sha256_file(out) != self.digest:
                raise RuntimeError("host %d: %s output differs from the origin file" % (k, what))
        return times, busy

    def mesh_once(self, n, tag):
        """The machine's own limit for N hosts: every host's links carrying one file at once with
        no dfget at all — host k downloads the file with curl from host k+1's nginx (host N from
        host 1's; N = 1: from the origin), outputs on the same tmpfs. The same bytes cross the
        same veths, bridge and tbf queues as a swarm that takes one copy from the origin, so the
        swarm cannot finish sooner than this on this machine; the CPU busy fraction says whether
        the links or the cores are what limits it."""
        run_dir = os.path.join(self.work, tag)
        os.makedirs(run_dir)
        jobs = []
        for k in range(1, n + 1):
            src = "%s:%d" % ((ORIGIN_IP, ORIGIN_PORT) if n == 1 else (host_ip(k % n + 1), ORIGIN_PORT))
            out = os.path.join(run_dir, "h%d.bin" % k)
            jobs.append((k, out, nsx(host_ns(k), "curl", "-sSf", "-o", out, "http://%s/blob.bin" % src)))
        try:
            times, busy = self.all_at_once(jobs, "curl")
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)
        return {"n": n, "kind": "mesh", "times_s": [round(times[k], 3) for k in range(1, n + 1)],
                "all_s": round(max(times.values()), 3), "cpu_busy": busy, "load": loadavg()}

    def stop(self):
        for p in reversed(self.procs):
            try:
                p.stop()
            except Exception:
                pass
        if self.net:
            self.net.remove()
        shutil.rmtree(self.work, ignore_errors=True)


def cpu_seconds(pid):
    """utime + stime of a running process (`ip netns exec` execs the daemon: same pid)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, IndexError, ValueError):
        return float("nan")


def cpu_busy():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def cpu_busy_since(start):
    """The fraction of the machine's CPU time busy since `start` (`cpu_busy`)."""
    b, t = cpu_busy()
    return round((b - start[0]) / max(1, t - start[1]), 3)


def parents_of(core_log, n):
    """The hosts (1..n) the scheduler gave this host as parents, from its "parent added" lines."""
    ip_to_host = {host_ip(k): k for k in range(1, n + 1)}
    out = []
    for line in core_log.splitlines():
        if '"parent added"' not in line:
            continue
        try:
            ip = json.loads(line)["parent"].split("-")[0]
        except (ValueError, KeyError):
            continue
        if ip in ip_to_host and ip_to_host[ip] not in out:
            out.append(ip_to_host[ip])
    return out


def dag_bound_s(parents, size, link):
    """A lower bound on the time for all hosts to finish with the parents the scheduler gave: any
    set X of children receives |X| file copies, all through the uplinks of the hosts that are
    parents of some member of X (each at most one link rate), so T >= |X| * size / (|P(X)| * link);
    and every host needs size / link through its own downlink. Max over every set X (N <= 12)."""
    kids = [k for k, ps in parents.items() if ps]
    best = size / link
    if len(kids) > 12:
        return best
    for mask in range(1, 1 << len(kids)):
        xs = [kids[i] for i in range(len(kids)) if mask >> i & 1]
        ps = set(p for x in xs for p in parents[x])
        best = max(best, len(xs) * size / (len(ps) * link))
    return best


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def report(results, args, load_start, load_end):
    size = args.size_mib * 1024 * 1024
    link = args.rate_mibps * 1024 * 1024
    by_n, mesh = {}, {}
    for r in results:
        (mesh if r.get("kind") == "mesh" else by_n).setdefault(r["n"], []).append(r)
    alone = median([r["all_s"] for r in by_n.get(1, [])])
    print()
    print("File %d MiB, every link (hosts and origin) %d MiB/s each way (tbf, %s queue), %d run(s) per N."
          % (args.size_mib, args.rate_mibps, args.queue, args.runs))
    print("Load average at start %s, at end %s." % (load_start, load_end))
    print()
    print("| hosts | all finished (median) | vs one host alone | origin egress / file (body; link) "
          "| slowest host rate / link | median host rate / link | runs (all finished, s) "
          "| bound from the scheduler's parents (s, per run) | curl mesh, all links at once (median; runs) "
          "| swarm vs mesh | CPU busy, swarm / mesh |")
    print("|---:|---:|---:|---:|---:|---:|---|---|---:|---:|---:|")
    for n in sorted(by_n):
        rs = by_n[n]
        all_s = median([r["all_s"] for r in rs])
        egress = median([r["origin_body_bytes"] / size for r in rs])
        egress_link = median([r["origin_link_bytes"] / size for r in rs])
        slowest = median([size / max(r["times_s"]) / link for r in rs])
        typical = median([median([size / t / link for t in r["times_s"]]) for r in rs])
        bounds = " ".join("%.2f" % dag_bound_s({int(k): v for k, v in r["parents"].items()}, size, link)
                          for r in rs)
        ms = mesh.get(n, [])
        mesh_s = median([r["all_s"] for r in ms])
        print("| %d | %.2f s | %.2f× | %.3f; %.3f | %.0f %% | %.0f %% | %s | %s | %.2f s; %s | %.2f× | %.0f %% / %.0f %% |"
              % (n, all_s, all_s / alone, egress, egress_link, 100 * slowest, 100 * typical,
                 " ".join("%.2f" % r["all_s"] for r in rs), bounds, mesh_s,
                 " ".join("%.2f" % r["all_s"] for r in ms), all_s / mesh_s,
                 100 * median([r["cpu_busy"] for r in rs]), 100 * median([r["cpu_busy"] for r in ms])))
    print()
    for r in (r for r in results if r.get("kind") != "mesh"):
        print("N=%d: times %s; origin MiB per host %s; uploaded MiB per host %s; given parents %s; "
              "parent failures %s; daemon CPU s %s; load %s; parents %s"
              % (r["n"], r["times_s"], [round(b / 2**20) for b in r["origin_bytes_per_host"]],
                 [round(b / 2**20) for b in r["uploaded_per_host"]], r["got_parents"], r["parent_failures"],
                 r["daemon_cpu_s"], r["load"], r["parents"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", default="2,4,8")
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--rate-mibps", type=int, default=100)
    ap.add_argument("--queue", choices=["fifo", "pfifo_fast"], default="fifo",
                    help="each shaped link's queue under its tbf (see Net.shape)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--dfget", default=os.path.join(ROOT, "target", "release", "dfget"))
    tools = os.environ.get("DFGET_TOOLS", os.path.expanduser("~/.cache/dfget-tools"))
    ap.add_argument("--scheduler", default=os.path.join(tools, "scheduler-" + SCHEDULER_VERSION, "scheduler"))
    ap.add_argument("--work", default="/dev/shm" if os.path.isdir("/dev/shm") else None)
    ap.add_argument("--json", help="append every run's raw result here (JSON lines)")
    ap.add_argument("--no-mesh", action="store_true", help="skip the curl mesh runs (the machine's own limit)")
    ap.add_argument("--log-level", help="the daemons' log level (e.g. debug, with --keep-logs)")
    ap.add_argument("--keep-logs", help="copy each run's logs and configs (not its data) into this directory")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run as root: the bench makes network namespaces and tc qdiscs")
    for what, path in (("dfget (cargo build --release)", args.dfget),
                       ("Dragonfly's scheduler (scripts/test.sh builds it)", args.scheduler)):
        if not os.access(path, os.X_OK):
            sys.exit("%s not found at %s" % (what, path))
    ns = sorted({int(x) for x in args.hosts.split(",")})
    order = [1] + [n for n in ns if n != 1]
    bench = Bench(args)
    results = []
    load_start = loadavg()
    try:
        bench.setup(max(order))
        for rnd in range(args.runs):
            for n in (order if rnd % 2 == 0 else [order[0]] + order[:0:-1]):
                runs = [("swarm", lambda: bench.run_once(n, "r%dn%d" % (rnd, n)))]
                if not args.no_mesh:
                    runs.append(("mesh", lambda: bench.mesh_once(n, "m%dn%d" % (rnd, n))))
                for kind, run in (runs if rnd % 2 == 0 else runs[::-1]):
                    r = run()
                    if kind == "swarm":
                        print("round %d, N=%d: all finished in %.2f s, origin %.3f × file, CPU busy %.0f %%, load %s"
                              % (rnd, n, r["all_s"], r["origin_body_bytes"] / bench.size, 100 * r["cpu_busy"],
                                 r["load"]), flush=True)
                    else:
                        print("round %d, N=%d: curl mesh (no dfget) all finished in %.2f s, CPU busy %.0f %%"
                              % (rnd, n, r["all_s"], 100 * r["cpu_busy"]), flush=True)
                    results.append(r)
                    if args.json:
                        with open(args.json, "a") as f:
                            f.write(json.dumps(r) + "\n")
    finally:
        bench.stop()
    report(results, args, load_start, loadavg())


if __name__ == "__main__":
    main()
