#!/usr/bin/env python3
"""Who sent which piece to whom in one swarm run, from its kept debug logs.

    sudo benches/swarm.py --hosts 8 --runs 1 --log-level debug --keep-logs /tmp/swlog
    benches/swarm_flows.py /tmp/swlog/r0n8

Reads every host's core.log in the run directory (h1, h2, ...: host k is 10.213.0.(10+k), as
swarm.py lays them out) and prints, per uploading host: pieces uploaded, how many of them were
the piece's first, second, ... copy from that host, to whom, and the median upload time; then
pieces uploaded per second per host (a saturated 100 MiB/s uplink moves ~25 pieces of 4 MiB a
second), and the back-to-source host's repeat copies per second. It only reads the debug lines
"piece uploaded" (parent side) and "piece from parent" (child side).
"""

import collections
import datetime
import glob
import json
import os
import statistics
import sys


def when(ts):
    return datetime.datetime.strptime(ts, "%Y-%m-%d %H:%M:%S.%f").timestamp()


def host_of(addr):
    """'10.213.0.13:52290' -> 'h3'."""
    return "h%d" % (int(addr.split(":")[0].rsplit(".", 1)[1]) - 10)


def read(run_dir):
    ups, gets = [], []
    for d in sorted(glob.glob(os.path.join(run_dir, "h*"))):
        name = os.path.basename(d)
        with open(os.path.join(d, "log", "daemon", "core.log"), errors="replace") as f:
            for line in f:
                try:
                    j = json.loads(line)
                except ValueError:
                    continue
                if j.get("msg") == "piece uploaded" and "to" in j:
                    ups.append({"t": when(j["ts"]), "from": name, "to": host_of(j["to"]), "piece": j["piece"],
                                "copy": j.get("copy", 0), "ms": j["ms"]})
                elif j.get("msg") == "piece from parent":
                    gets.append({"t": when(j["ts"]), "host": name, "parent": host_of(j["parent"].split("-")[0]),
                                 "source": j.get("source", False)})
    return ups, gets


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    ups, gets = read(sys.argv[1])
    if not ups:
        sys.exit("no 'piece uploaded' debug lines: run swarm.py with --log-level debug --keep-logs DIR")
    t0 = min(u["t"] for u in ups)
    by_host = collections.defaultdict(list)
    for u in ups:
        by_host[u["from"]].append(u)
    for h, us in sorted(by_host.items()):
        copies = collections.Counter(min(u["copy"], 5) for u in us)
        to = collections.Counter(u["to"] for u in us)
        print("%-4s uploaded %4d pieces; copy 1..5+ %s; to %s; median %d ms"
              % (h, len(us), [copies.get(c, 0) for c in range(1, 6)], dict(sorted(to.items())),
                 statistics.median(u["ms"] for u in us)))
    secs = int(max(u["t"] for u in ups) - t0) + 1
    print("pieces uploaded per second:")
    print("sec  " + " ".join("%3d" % s for s in range(secs)))
    for h, us in sorted(by_host.items()):
        per = collections.Counter(int(u["t"] - t0) for u in us)
        print("%-4s " % h + " ".join("%3d" % per.get(s, 0) for s in range(secs)))
    source_parents = {g["parent"] for g in gets if g["source"]}
    for h in sorted(source_parents):
        per = collections.Counter(int(u["t"] - t0) for u in by_host.get(h, []) if u["copy"] > 1)
        print("%-4s repeat copies per second (the back-to-source host):" % h)
        print("     " + " ".join("%3d" % per.get(s, 0) for s in range(secs)))


if __name__ == "__main__":
    main()
