#!/usr/bin/env bash
# End-to-end download speed: dfget (through its daemon, cold cache each run) against curl, aria2c
# and, for ORAS, oras-py — all in the same run, against the same local servers on 127.0.0.1.
#
#   benches/compare.sh [SIZE_MIB] [RUNS]        (defaults: 512 MiB, 5 runs)
#
# Scenarios:
#   nginx-plain   nginx serving a file, no limits (loopback: measures our overhead, not the network)
#   nginx-capped  the same file with `limit_rate 25m` per connection, like a CDN's per-connection cap:
#                 what ranged parallel fetching is for
#   oras          a SIF blob of SIZE_MIB pushed with oras-py to docker-registry 2.8: dfget oras:// vs
#                 oras-py pull vs curl of the bare blob URL
# Prints one line per tool and scenario: median seconds, MiB/s, and every run. Needs: nginx,
# docker-registry, curl, aria2c, python3 with oras (scripts/test.sh installs all but aria2c:
# apt-get install aria2). Everything lives in a temp dir and is stopped on exit.
set -euo pipefail
size_mib="${1:-512}"
runs="${2:-5}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

cargo build --release --quiet --manifest-path "$root/Cargo.toml"
dfget="$root/target/release/dfget"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

mkdir -p "$work/www" "$work/ngx" "$work/out"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/www/blob.bin"
want="$(sha256sum "$work/www/blob.bin" | cut -d' ' -f1)"

nginx_port="$(free_port)"
capped_port="$(free_port)"
cat > "$work/ngx/nginx.conf" <<NGX
daemon off; master_process off; worker_processes 1; pid $work/ngx/pid; error_log $work/ngx/error.log;
events { worker_connections 1024; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  client_body_temp_path $work/ngx/cb; proxy_temp_path $work/ngx/p; fastcgi_temp_path $work/ngx/f;
  uwsgi_temp_path $work/ngx/u; scgi_temp_path $work/ngx/s;
  server { listen 127.0.0.1:$nginx_port; root $work/www; }
  server { listen 127.0.0.1:$capped_port; root $work/www; limit_rate 25m; }
}
NGX
nginx -p "$work/ngx" -c "$work/ngx/nginx.conf" & pids+=($!)

sock="$work/dfdaemon.sock"
cat > "$work/dfget.yaml" <<YAML
dataDir: $work/data
logDir: $work/log
download:
  downloadGRPC:
    unixListen:
      socket: $sock
storage:
  multiplex: true
YAML
"$dfget" daemon --config "$work/dfget.yaml" & pids+=($!)
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
sleep 0.5

# median of the numbers on stdin
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

# time_runs NAME SCENARIO CMD... : runs CMD $runs times (output $work/out/f), checks the sha256.
time_runs() {
  local name="$1" scenario="$2"; shift 2
  local times=()
  for i in $(seq "$runs"); do
    rm -f "$work/out/f"
    rm_all_tasks
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    [ "$(sha256sum "$work/out/f" | cut -d' ' -f1)" = "$want" ] || { echo "$name/$scenario: wrong output" >&2; exit 1; }
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  local med
  med="$(printf '%s\n' "${times[@]}" | median)"
  printf '%-14s %-8s median %7.3f s  %8.1f MiB/s  runs: %s\n' "$scenario" "$name" "$med" \
    "$(echo "$size_mib / $med" | bc -l)" "$(printf '%.2f ' "${times[@]}")"
}

# Keeps the cache (and the disk) empty between runs; not timed.
rm_all_tasks() {
  for id in $("$dfget" tasks ls --json --daemon-sock "$sock" | python3 -c 'import json,sys; print(" ".join(t["id"] for t in json.load(sys.stdin)))'); do
    "$dfget" tasks rm --force --daemon-sock "$sock" "$id" >/dev/null
  done
}

# A fresh task per dfget run: a different --tag gives a different task id (no cache hit).
dfget_run() { "$dfget" --daemon-sock "$sock" --no-spawn --tag "run-$RANDOM$RANDOM" -u "$1" -O "$work/out/f"; }

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "file: $size_mib MiB, $runs runs each, cold cache for dfget (new task id per run)"
for scenario in nginx-plain nginx-capped; do
  port=$nginx_port; [ "$scenario" = nginx-capped ] && port=$capped_port
  url="http://127.0.0.1:$port/blob.bin"
  time_runs dfget "$scenario" dfget_run "$url"
  time_runs curl "$scenario" curl -sf -o "$work/out/f" "$url"
  if command -v aria2c >/dev/null; then
    time_runs aria2c "$scenario" aria2c -q -x 8 -s 8 -k 4M --allow-overwrite=true --auto-file-renaming=false \
      -d "$work/out" -o f "$url"
  fi
done

# ORAS: docker-registry + oras-py push, then the three pullers.
reg_port="$(free_port)"
cat > "$work/registry.yml" <<REG
version: 0.1
log: { level: error }
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: 127.0.0.1:$reg_port }
REG
docker-registry serve "$work/registry.yml" >"$work/registry.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$reg_port/v2/" >/dev/null && break; sleep 0.1; done
mkdir -p "$work/push" && cp "$work/www/blob.bin" "$work/push/img.sif" && echo '{}' > "$work/push/cfg.json"
(cd "$work/push" && python3 - "$reg_port" <<'PY'
import sys, oras.client
h = f"127.0.0.1:{sys.argv[1]}"
oras.client.OrasClient(hostname=h, insecure=True).push(
    target=f"{h}/bench/img:v1", files=["img.sif:application/vnd.sylabs.sif.layer.v1.sif"],
    manifest_config="cfg.json:application/vnd.sylabs.sif.config.v1+json")
PY
) >/dev/null
oras_pull() {
  rm -rf "$work/orasout" && mkdir -p "$work/orasout"
  (cd "$work/orasout" && python3 -c "import oras.client,sys; oras.client.OrasClient(hostname='127.0.0.1:$reg_port', insecure=True).pull(target='127.0.0.1:$reg_port/bench/img:v1', outdir='.')")
  mv "$work/orasout/img.sif" "$work/out/f"
}
time_runs dfget oras dfget_run "oras://127.0.0.1:$reg_port/bench/img:v1"
time_runs oras-py oras oras_pull
time_runs curl oras curl -sfL -o "$work/out/f" "http://127.0.0.1:$reg_port/v2/bench/img/blobs/sha256:$want"
