#!/usr/bin/env python3
"""End-to-end benchmark harness: dfget (through its daemon) against curl, aria2c and oras-py, all
in one run, tools alternating round by round, against servers this script starts and stops itself.

    benches/compare.sh [--runs N] [--only a,b] [--json FILE] [--markdown FILE]

Scenarios (names for --only):
  plain      cold 1 GiB and 4 GiB from nginx on 127.0.0.1: dfget, curl, aria2c -x8
  capped     nginx inside a network namespace made here, behind a veth whose egress is shaped
             with tc (HTB, one 25 MiB/s class per TCP flow, hashed on the client port): a true
             per-connection cap. dfget, aria2c -x8, curl
  oras       256 MiB and 1 GiB SIF pushed with oras-py to docker-registry: dfget oras:// (digest
             verified), the same with one connection (maxConnsPerHost: 1), oras-py pull, curl of
             the bare blob URL
  warm       cache hit of a finished 1 GiB and 4 GiB task (a new OUT each time)
  tiny       a 4 KiB file: latency of dfget (cold) and curl
  fanout     100 concurrent dfget of one 256 MiB URL vs one dfget, all started at one instant
             (parked on a pipe, then released together); origin bytes counted from
             nginx's access log (each piece fetched once = the file's size)
For every run it records: wall seconds, CPU seconds (client rusage; for dfget plus the daemon's
utime+stime delta), the daemon's peak RSS (VmHWM, reset before each run) and the bytes that reached
the block device under the work dir (write sectors in /sys/dev/block/MAJ:MIN/stat; /proc/PID/io
would count every dirtied page-cache byte, synced or not). Every output's sha256 is checked.

Needs root for `capped` (ip netns, tc); skipped otherwise. Tools: nginx, docker-registry, curl,
aria2c, python3 with `oras` (scripts/test.sh installs all but aria2c: apt-get install aria2).
Speed is never asserted anywhere: this prints numbers; PERF.md records them.
"""

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

MIB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")
NS = "dfgbench%d" % os.getpid()
CAP_BYTES_PER_S = 25 * MIB


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw).stdout


def wait_until(pred, timeout=20.0, what="server"):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit("benchmark: %s did not come up" % what)


def port_open(host, port):
    with socket.create_connection((host, port), timeout=0.5):
        return True


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(8 * MIB)
            if not b:
                return h.hexdigest()
            h.update(b)


def make_file(path, size):
    """Random content (incompressible), written once per size."""
    with open("/dev/urandom", "rb") as src, open(path, "wb") as dst:
        chunk = src.read(16 * MIB)
        left = size
        n = 0
        while left > 0:
            # Vary each block cheaply so no two blocks are equal.
            block = n.to_bytes(8, "little") + chunk[8:]
            dst.write(block[: min(left, len(block))])
            left -= len(block)
            n += 1


class BlockDev:
    """Write sectors of the block device that holds `path`."""

    def __init__(self, path):
        st = os.stat(path)
        self.stat = "/sys/dev/block/%d:%d/stat" % (os.major(st.st_dev), os.minor(st.st_dev))
        if not os.path.exists(self.stat):
            self.stat = None

    def written_bytes(self):
        if not self.stat:
            return 0
        with open(self.stat) as f:
            return int(f.read().split()[6]) * 512


def proc_cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def reset_hwm(pid):
    with open("/proc/%d/clear_refs" % pid, "w") as f:
        f.write("5")


def hwm_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="dfget-bench-")
        self.procs = []
        self.netns = False
        self.results = []  # dicts: scenario, tool, runs: [{wall, cpu, disk, rss}]
        self.notes = []
        self.dev = BlockDev(self.work)
        self.files = {}
        self.dfget = os.path.join(ROOT, "target", "release", "dfget")
        self.daemons = {}

    # ---- servers -------------------------------------------------------------------------------

    def spawn(self, cmd, log, **kw):
        p = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, **kw)
        self.procs.append(p)
        return p

    def file(self, size):
        if size not in self.files:
            path = os.path.join(self.work, "www", "f%d.bin" % size)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            make_file(path, size)
            self.files[size] = (path, sha256_file(path))
        return self.files[size]

    def nginx(self, name, listen, netns=None, rate_log=False):
        d = os.path.join(self.work, "ngx-" + name)
        os.makedirs(d, exist_ok=True)
        alog = os.path.join(d, "access.log")
        log_line = ("log_format b '$body_bytes_sent $status'; access_log %s b;" % alog) if rate_log else "access_log off;"
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(
                "daemon off; master_process off; worker_processes 1; pid %(d)s/pid; error_log %(d)s/error.log;\n"
                "events { worker_connections 4096; }\n"
                "http { %(log)s sendfile on; tcp_nopush on; keepalive_requests 100000;\n"
                "  client_body_temp_path %(d)s/cb; proxy_temp_path %(d)s/p; fastcgi_temp_path %(d)s/f;\n"
                "  uwsgi_temp_path %(d)s/u; scgi_temp_path %(d)s/s;\n"
                "  server { listen %(listen)s; root %(www)s; } }\n"
                % {"d": d, "log": log_line, "listen": listen, "www": os.path.join(self.work, "www")}
            )
        cmd = ["nginx", "-p", d, "-c", conf]
        if netns:
            cmd = ["ip", "netns", "exec", netns] + cmd
        p = self.spawn(cmd, os.path.join(d, "stdout.log"))
        host, port = listen.rsplit(":", 1)
        wait_until(lambda: port_open(host, int(port)), what="nginx " + name)
        return p, alog

    def daemon(self, name, extra_yaml=""):
        """A dfget daemon with its own socket, data and log dirs."""
        if name in self.daemons:
            return self.daemons[name]
        d = os.path.join(self.work, "daemon-" + name)
        os.makedirs(d, exist_ok=True)
        sock = os.path.join(d, "dfdaemon.sock")
        conf = os.path.join(d, "dfget.yaml")
        with open(conf, "w") as f:
            f.write(
                "dataDir: %s/data\nlogDir: %s/log\nstorage:\n  multiplex: true\n"
                "download:\n  downloadGRPC:\n    unixListen:\n      socket: %s\n%s" % (d, d, sock, extra_yaml)
            )
        p = self.spawn([self.dfget, "daemon", "--config", conf], os.path.join(d, "stdout.log"))

        def healthy():
            s = socket.socket(socket.AF_UNIX)
            s.connect(sock)
            s.sendall(b"GET /healthy HTTP/1.1\r\nHost: d\r\nConnection: close\r\n\r\n")
            ok = s.recv(64).startswith(b"HTTP/1.1 200")
            s.close()
            return ok

        wait_until(healthy, what="dfget daemon " + name)
        self.daemons[name] = (p, sock)
        return p, sock

    def make_netns(self):
        """nginx's namespace: veth pair, 10.209.x/30, HTB per-flow classes on the server's egress."""
        if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
            return None
        host_if, ns_if = "dfgh%d" % (os.getpid() % 10000), "dfgn%d" % (os.getpid() % 10000)
        a, b = "10.209.%d.1" % (os.getpid() % 250), "10.209.%d.2" % (os.getpid() % 250)
        try:
            sh("ip", "netns", "add", NS)
            self.netns = True
            sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
            sh("ip", "link", "set", ns_if, "netns", NS)
            sh("ip", "addr", "add", a + "/30", "dev", host_if)
            sh("ip", "link", "set", host_if, "up")
            nx = ["ip", "netns", "exec", NS]
            sh(*nx, "ip", "addr", "add", b + "/30", "dev", ns_if)
            sh(*nx, "ip", "link", "set", ns_if, "up")
            sh(*nx, "ip", "link", "set", "lo", "up")
            rate = "%dbps" % CAP_BYTES_PER_S  # tc: "bps" = bytes per second
            lines = [
                "qdisc add dev %s root handle 1: htb default 1" % ns_if,
                "class add dev %s parent 1: classid 1:1 htb rate 40gbit quantum 200000" % ns_if,
                "filter add dev %s parent 1: prio 1 handle 2: protocol ip u32 divisor 256" % ns_if,
            ]
            for i in range(256):
                lines.append(
                    "class add dev %s parent 1: classid 1:%x htb rate %s ceil %s burst 64k cburst 64k quantum 60000"
                    % (ns_if, 0x100 + i, rate, rate)
                )
                lines.append(
                    "filter add dev %s parent 1: prio 1 protocol ip u32 ht 2:%x: match u32 0 0 flowid 1:%x"
                    % (ns_if, i, 0x100 + i)
                )
            # TCP (no IP options: offset 20) destination port = the client's port; bits 1..8 pick
            # the class (Linux hands out consecutive even ports to one client's connections).
            lines.append(
                "filter add dev %s parent 1: prio 1 protocol ip u32 ht 800:: match ip protocol 6 0xff "
                "hashkey mask 0x000001fe at 20 link 2:" % ns_if
            )
            subprocess.run(nx + ["tc", "-batch", "-"], input="\n".join(lines) + "\n", check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
            return b
        except (subprocess.CalledProcessError, OSError) as e:
            self.notes.append("capped scenario skipped: could not build the namespace (%s)" % e)
            return None

    def cleanup(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        if self.netns:
            subprocess.run(["ip", "netns", "del", NS], stderr=subprocess.DEVNULL)
        shutil.rmtree(self.work, ignore_errors=True)

    # ---- measuring -----------------------------------------------------------------------------

    def rm_tasks(self, sock):
        out = sh(self.dfget, "tasks", "ls", "--json", "--daemon-sock", sock)
        for t in json.loads(out):
            sh(self.dfget, "tasks", "rm", "--force", "--daemon-sock", sock, t["id"])

    def measure(self, cmd, out, want, daemon=None, cwd=None, check=True):
        """One timed run of `cmd`: wall, CPU (client + daemon), disk bytes, daemon peak RSS."""
        if out and os.path.exists(out):
            os.unlink(out)
        os.sync()
        dpid = daemon.pid if daemon else None
        if dpid:
            reset_hwm(dpid)
            d0 = proc_cpu_s(dpid)
        w0 = self.dev.written_bytes()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=cwd)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        err = p.stderr.read().decode(errors="replace")
        p.stderr.close()
        disk = self.dev.written_bytes() - w0
        cpu = ru.ru_utime + ru.ru_stime
        rss = None
        if dpid:
            cpu += proc_cpu_s(dpid) - d0
            rss = hwm_bytes(dpid)
        if p.returncode != 0:
            raise SystemExit("benchmark: %s failed (%d): %s" % (cmd[0], p.returncode, err[-2000:]))
        if check and out and sha256_file(out) != want:
            raise SystemExit("benchmark: %s wrote a wrong output" % cmd[0])
        return {"wall": wall, "cpu": cpu, "disk": disk, "rss": rss}

    def record(self, scenario, tool, size, runs):
        self.results.append({"scenario": scenario, "tool": tool, "size": size, "runs": runs})
        med = statistics.median(r["wall"] for r in runs)
        print("%-22s %-30s median %8.3f s  %9.1f MiB/s  runs: %s" % (
            scenario, tool, med, size / MIB / med if med else 0, " ".join("%.3f" % r["wall"] for r in runs)), flush=True)

    def rounds(self, scenario, size, tools, runs):
        """tools: [(name, fn(round) -> measurement)]; one run of each tool per round (alternating)."""
        acc = {name: [] for name, _ in tools}
        for i in range(runs):
            order = tools if i % 2 == 0 else list(reversed(tools))
            for name, fn in order:
                acc[name].append(fn(i))
        for name, _ in tools:
            self.record(scenario, name, size, acc[name])

    # ---- the tools -----------------------------------------------------------------------------

    def dfget_cmd(self, sock, url, out, tag=None, digest=None):
        cmd = [self.dfget, "--daemon-sock", sock, "--no-spawn", "-u", url, "-O", out]
        if tag:
            cmd += ["--tag", tag]
        if digest:
            cmd += ["--digest", digest]
        return cmd

    def cold_dfget(self, name, url, want, size):
        p, sock = self.daemon(name)
        out = os.path.join(self.work, "out", "dfget")

        def run(i):
            self.rm_tasks(sock)
            return self.measure(self.dfget_cmd(sock, url, out, tag="cold-%d-%d" % (size, time.time_ns())), out, want, p)

        return run

    def curl(self, url, want):
        out = os.path.join(self.work, "out", "curl")
        return lambda i: self.measure(["curl", "-sfL", "-o", out, url], out, want)

    def aria2c(self, url, want):
        out = os.path.join(self.work, "out", "aria2c")
        return lambda i: self.measure(
            ["aria2c", "-q", "-x", "8", "-s", "8", "-k", "4M", "--allow-overwrite=true", "--auto-file-renaming=false",
             "--file-allocation=falloc", "-d", os.path.dirname(out), "-o", "aria2c", url], out, want)

    # ---- scenarios -----------------------------------------------------------------------------

    def plain(self):
        port = free_port()
        self.nginx("plain", "127.0.0.1:%d" % port)
        for size in (self.args.plain_mib[0] * MIB, self.args.plain_mib[1] * MIB):
            path, want = self.file(size)
            url = "http://127.0.0.1:%d/%s" % (port, os.path.basename(path))
            tools = [("dfget", self.cold_dfget("default", url, want, size)), ("curl", self.curl(url, want))]
            if shutil.which("aria2c"):
                tools.append(("aria2c -x8", self.aria2c(url, want)))
            self.rounds("plain %d MiB" % (size // MIB), size, tools, self.args.runs)

    def capped(self):
        addr = self.make_netns()
        if not addr:
            print("capped: skipped (needs root, ip, tc)", flush=True)
            return
        port = 8080
        self.nginx("capped", "%s:%d" % (addr, port), netns=NS)
        size = self.args.capped_mib * MIB
        path, want = self.file(size)
        url = "http://%s:%d/%s" % (addr, port, os.path.basename(path))
        tools = [("dfget", self.cold_dfget("default", url, want, size))]
        if shutil.which("aria2c"):
            tools.append(("aria2c -x8", self.aria2c(url, want)))
        tools.append(("curl", self.curl(url, want)))
        self.rounds("capped %d MiB" % (size // MIB), size, tools, self.args.runs)

    def registry(self):
        port = free_port()
        d = os.path.join(self.work, "registry")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "config.yml")
        with open(conf, "w") as f:
            f.write("version: 0.1\nlog: { level: error }\nstorage: { filesystem: { rootdirectory: %s/data } }\n"
                    "http: { addr: 127.0.0.1:%d }\n" % (d, port))
        self.spawn(["docker-registry", "serve", conf], os.path.join(d, "log"))
        wait_until(lambda: port_open("127.0.0.1", port), what="docker-registry")
        return port

    def push(self, reg_port, size):
        path, want = self.file(size)
        d = os.path.join(self.work, "push%d" % size)
        os.makedirs(d, exist_ok=True)
        os.link(path, os.path.join(d, "img.sif"))
        with open(os.path.join(d, "cfg.json"), "w") as f:
            f.write("{}")
        h = "127.0.0.1:%d" % reg_port
        code = ("import oras.client; oras.client.OrasClient(hostname=%r, insecure=True).push(target=%r, "
                "files=['img.sif:application/vnd.sylabs.sif.layer.v1.sif'], "
                "manifest_config='cfg.json:application/vnd.sylabs.sif.config.v1+json')" % (h, "%s/bench/img:s%d" % (h, size)))
        subprocess.run([sys.executable, "-c", code], cwd=d, check=True, stdout=subprocess.DEVNULL)
        return "%s/bench/img:s%d" % (h, size), want

    def oras(self):
        reg = self.registry()
        one = self.daemon("oneconn", "oras:\n  maxConnsPerHost: 1\n")
        for mib in self.args.oras_mib:
            size = mib * MIB
            ref, want = self.push(reg, size)
            blob = "http://127.0.0.1:%d/v2/bench/img/blobs/sha256:%s" % (reg, want)
            pulldir = os.path.join(self.work, "orasout")

            def dfget_oras(daemon):
                p, sock = self.daemon(daemon)
                out = os.path.join(self.work, "out", "dfget-" + daemon)

                def run(i):
                    self.rm_tasks(sock)
                    return self.measure(self.dfget_cmd(sock, "oras://" + ref, out), out, want, p)

                return run

            def oras_py(i):
                shutil.rmtree(pulldir, ignore_errors=True)
                os.makedirs(pulldir)
                code = ("import oras.client; oras.client.OrasClient(hostname='127.0.0.1:%d', insecure=True)"
                        ".pull(target=%r, outdir='.')" % (reg, ref))
                m = self.measure([sys.executable, "-c", code], None, want, cwd=pulldir)
                if sha256_file(os.path.join(pulldir, "img.sif")) != want:
                    raise SystemExit("benchmark: oras-py wrote a wrong output")
                return m

            tools = [("dfget oras://", dfget_oras("default")), ("dfget oras:// 1 conn", dfget_oras("oneconn")),
                     ("oras-py", oras_py), ("curl blob", self.curl(blob, want))]
            assert one
            self.rounds("oras %d MiB" % mib, size, tools, self.args.runs)

    def warm(self):
        port = free_port()
        self.nginx("warm", "127.0.0.1:%d" % port)
        p, sock = self.daemon("default")
        for mib in self.args.plain_mib:
            size = mib * MIB
            path, want = self.file(size)
            url = "http://127.0.0.1:%d/%s" % (port, os.path.basename(path))
            self.rm_tasks(sock)
            tag = "warm-%d" % time.time_ns()
            first = os.path.join(self.work, "out", "warm-first")
            self.measure(self.dfget_cmd(sock, url, first, tag=tag), first, want, p)
            out = os.path.join(self.work, "out", "warm")
            runs = []
            for i in range(max(self.args.runs, 5)):
                m = self.measure(self.dfget_cmd(sock, url, out, tag=tag), out, want, p, check=False)
                if os.stat(out).st_ino != os.stat(first).st_ino and sha256_file(out) != want:
                    raise SystemExit("benchmark: warm hit wrote a wrong output")
                runs.append(m)
            self.record("warm hit %d MiB" % mib, "dfget", size, runs)
            os.unlink(first)

    def tiny(self):
        port = free_port()
        self.nginx("tiny", "127.0.0.1:%d" % port)
        size = 4096
        path, want = self.file(size)
        url = "http://127.0.0.1:%d/%s" % (port, os.path.basename(path))
        tools = [("dfget", self.cold_dfget("default", url, want, size)), ("curl", self.curl(url, want))]
        self.rounds("4 KiB latency", size, tools, max(self.args.runs, 11))

    def released(self, cmds, daemon):
        """Runs `cmds` all at once: every process is started first, parked on a shared pipe (a
        shell `read`, then `exec` of the command), and the clock starts when one write releases
        them all. Without the barrier the wall time of 100 clients is mostly this script's own
        fork+exec loop (100 `Popen` of dfget take 0.15-0.4 s on this machine, as long as the
        download), not dfget. Returns one run's figures; a failed command ends the benchmark."""
        r, w = os.pipe()
        park = 'read _ <&%d && exec "$@"' % r
        ps = [subprocess.Popen(["sh", "-c", park, "sh"] + cmd, pass_fds=(r,), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for cmd in cmds]
        os.close(r)
        time.sleep(0.5)  # every shell reaches its `read`
        os.sync()
        reset_hwm(daemon.pid)
        d0, w0 = proc_cpu_s(daemon.pid), self.dev.written_bytes()
        t0 = time.perf_counter()
        os.write(w, b"\n" * len(cmds))
        os.close(w)
        cpu = 0.0
        for q in ps:
            _, status, ru = os.wait4(q.pid, 0)
            cpu += ru.ru_utime + ru.ru_stime
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit("benchmark: one of the concurrent dfget failed")
        wall = time.perf_counter() - t0
        return {"wall": wall, "cpu": cpu + proc_cpu_s(daemon.pid) - d0, "disk": self.dev.written_bytes() - w0,
                "rss": hwm_bytes(daemon.pid)}

    def fanout(self):
        port = free_port()
        _, alog = self.nginx("fanout", "127.0.0.1:%d" % port, rate_log=True)
        p, sock = self.daemon("default")
        size = self.args.fanout_mib * MIB
        path, want = self.file(size)
        url = "http://127.0.0.1:%d/%s" % (port, os.path.basename(path))
        n = self.args.fanout_n
        one, many, origin = [], [], []
        for i in range(self.args.runs):
            self.rm_tasks(sock)
            out = os.path.join(self.work, "out", "one")
            if os.path.exists(out):
                os.unlink(out)
            one.append(self.released([self.dfget_cmd(sock, url, out, tag="one-%d" % time.time_ns())], p))
            if sha256_file(out) != want:
                raise SystemExit("benchmark: dfget wrote a wrong output")
            self.rm_tasks(sock)
            tag = "many-%d" % time.time_ns()
            outs = [os.path.join(self.work, "out", "many%d" % k) for k in range(n)]
            for o in outs:
                if os.path.exists(o):
                    os.unlink(o)
            open(alog, "w").close()
            many.append(self.released([self.dfget_cmd(sock, url, o, tag=tag) for o in outs], p))
            inodes = {}
            for o in outs:
                st = os.stat(o)
                if st.st_ino not in inodes:
                    inodes[st.st_ino] = sha256_file(o)
            if set(inodes.values()) != {want}:
                raise SystemExit("benchmark: a concurrent dfget wrote a wrong output")
            time.sleep(0.2)  # nginx writes its access log line after the response
            with open(alog) as f:
                origin.append(sum(int(l.split()[0]) for l in f if l.strip()))
        self.record("fanout %d MiB" % (size // MIB), "1 dfget", size, one)
        self.record("fanout %d MiB" % (size // MIB), "%d concurrent dfget" % n, size, many)
        self.notes.append("fanout: origin body bytes per %d-client run: %s (file: %d); clients released "
                          "together from a barrier (`released`)" % (n, origin, size))
        self.fanout_origin = origin

    # ---- report --------------------------------------------------------------------------------

    def machine(self):
        model = ""
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        fs = "?"
        with open("/proc/mounts") as f:
            best = ""
            for line in f:
                dev, mnt, typ = line.split()[:3]
                if self.work.startswith(mnt) and len(mnt) >= len(best):
                    best, fs = mnt, "%s (%s)" % (typ, dev)
        vers = {}
        for tool, cmd in (("nginx", ["nginx", "-v"]), ("curl", ["curl", "--version"]),
                          ("aria2c", ["aria2c", "--version"]), ("docker-registry", ["docker-registry", "--version"])):
            if shutil.which(cmd[0]):
                r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                first = r.stdout.strip().splitlines()[0] if r.stdout.strip() else "?"
                vers[tool] = " ".join(first.replace("nginx version: ", "").split()[:3])
        try:
            import importlib.metadata
            vers["oras-py"] = "oras-py " + importlib.metadata.version("oras")
        except Exception:  # noqa: BLE001 - a missing package just has no version line
            pass
        return {"cores": os.cpu_count(), "cpu": model, "kernel": os.uname().release, "mem_gib": round(mem, 1),
                "fs": fs, "versions": vers, "loadavg_start": self.load0, "loadavg_end": os.getloadavg()}

    def markdown(self):
        m = self.machine()
        lines = ["Machine: %d cores (%s), %.0f GiB RAM, Linux %s, %s work dir. Load average at start %s, at end %s "
                 "(other builds share the cores)." % (m["cores"], m["cpu"], m["mem_gib"], m["kernel"], m["fs"],
                                                    "/".join("%.1f" % x for x in m["loadavg_start"]),
                                                    "/".join("%.1f" % x for x in m["loadavg_end"])),
                 "Peers: " + "; ".join("%s" % v for v in m["versions"].values()) + ".", "",
                 "| scenario | tool | median wall | MiB/s | wall vs curl | CPU s/GiB | daemon peak RSS | disk written | runs |",
                 "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        by_scn = {}
        for r in self.results:
            by_scn.setdefault(r["scenario"], []).append(r)
        for scn, rs in by_scn.items():
            ref = None
            for r in rs:
                if r["tool"].startswith("curl") or r["tool"] in ("1 dfget",):
                    ref = statistics.median(x["wall"] for x in r["runs"])
            for r in rs:
                med = statistics.median(x["wall"] for x in r["runs"])
                cpu = statistics.median(x["cpu"] for x in r["runs"])
                gib = r["size"] / 2**30
                rss = [x["rss"] for x in r["runs"] if x["rss"]]
                disk = statistics.median(x["disk"] for x in r["runs"]) / MIB
                ratio = ("%.2f×" % (med / ref)) if ref and "warm" not in scn else "—"
                cpu_s = ("%.2f" % (cpu / gib)) if gib >= 0.25 else ("%.1f ms" % (cpu * 1000))
                wall = ("%.3f s" % med) if med >= 0.1 else ("%.1f ms" % (med * 1000))
                lines.append("| %s | %s | %s | %s | %s | %s | %s | %.0f MiB | %s |" % (
                    scn, r["tool"], wall, ("%.0f" % (r["size"] / MIB / med)) if r["size"] >= MIB else "—",
                    ratio, cpu_s, ("%.0f MiB" % (max(rss) / MIB)) if rss else "—", disk,
                    " ".join(("%.3f" % x["wall"]) if x["wall"] >= 0.1 else ("%.1fms" % (x["wall"] * 1000))
                             for x in r["runs"])))
        lines.append("")
        lines.append("Wall ratios are to curl in the same scenario (fanout: to one dfget). CPU s/GiB = client + daemon "
                     "CPU time (utime+stime) per GiB, the origin's not included (for the 4 KiB row: CPU ms per run). "
                     "Disk written = median bytes the block device wrote during a run (everyone's writes, so other "
                     "helpers' builds show up as noise).")
        for n in self.notes:
            lines.append("- " + n)
        return "\n".join(lines) + "\n"

    def run(self):
        self.load0 = os.getloadavg()
        if not self.args.no_build:
            subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path",
                            os.path.join(ROOT, "Cargo.toml")], check=True)
        os.makedirs(os.path.join(self.work, "out"), exist_ok=True)
        only = set(self.args.only.split(",")) if self.args.only else None
        for name in ("plain", "capped", "oras", "warm", "tiny", "fanout"):
            if only is None or name in only:
                getattr(self, name)()
        md = self.markdown()
        print(md)
        if self.args.markdown:
            with open(self.args.markdown, "w") as f:
                f.write(md)
        if self.args.json:
            with open(self.args.json, "w") as f:
                json.dump({"machine": self.machine(), "results": self.results, "notes": self.notes}, f, indent=1)



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--plain-mib", type=int, nargs=2, default=[1024, 4096])
    ap.add_argument("--capped-mib", type=int, default=512)
    ap.add_argument("--oras-mib", type=int, nargs="+", default=[256, 1024])
    ap.add_argument("--fanout-mib", type=int, default=256)
    ap.add_argument("--fanout-n", type=int, default=100)
    ap.add_argument("--no-build", action="store_true", help="use target/release/dfget as it is")
    ap.add_argument("--json")
    ap.add_argument("--markdown")
    args = ap.parse_args()
    b = Bench(args)
    try:
        b.run()
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
