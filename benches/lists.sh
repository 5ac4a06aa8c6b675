#!/usr/bin/env bash
# Bulk lists: `dfget -i LIST` (one connection to the daemon, entries spread over its cores)
# against `aria2c -i LIST -j16`, one `dfget` process per URL (`xargs -P16`) and curl with
# `xargs -P16`, all in the same run against the same nginx on 127.0.0.1; then the peak RSS of the
# daemon and of the client for a 100,000-line list.
#
#   benches/lists.sh [RUNS] [JOBS...]     (defaults: 5 runs; dfget -j: the daemon's default)
#   SCENARIOS="small large huge" (default) picks what runs; NO_BUILD=1 skips the release build.
#
# Scenarios: small = 1000 files x 64 KiB, large = 100 files x 16 MiB. Every run starts from a
# cold cache (the daemon is restarted on an empty data dir, untimed) and an empty output dir, and
# every output is checked (sha256 of all files). Prints median wall seconds, MiB/s and all runs.
# Needs nginx, aria2c, curl (apt-get install nginx-light aria2 curl). Everything lives in a temp
# dir and is stopped on exit.
set -euo pipefail
runs="${1:-5}"
shift || true
jobs_list=("${@:-default}")
scenarios="${SCENARIOS:-small large huge}"
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
pids=()
daemon_pid=""
cleanup() {
  [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# NO_BUILD=1 measures target/release/dfget as it is (the harness's --no-build).
[ -n "${NO_BUILD:-}" ] || cargo build --release --quiet --manifest-path "$root/Cargo.toml"
dfget="$root/target/release/dfget"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }

mkdir -p "$work/www/small" "$work/www/large" "$work/www/tiny" "$work/ngx" "$work/out"
has() { [[ " $scenarios " == *" $1 "* ]]; }
if has small; then for i in $(seq 1000); do head -c 65536 /dev/urandom > "$work/www/small/f$i.bin"; done; fi
if has large; then for i in $(seq 100); do head -c $((16 * 1024 * 1024)) /dev/urandom > "$work/www/large/f$i.bin"; done; fi
head -c 1024 /dev/urandom > "$work/www/tiny/t.bin"
port="$(free_port)"
cat > "$work/ngx/nginx.conf" <<NGX
daemon off; master_process off; worker_processes 1; pid $work/ngx/pid; error_log $work/ngx/error.log;
events { worker_connections 4096; }
http {
  access_log off; sendfile on; tcp_nopush on; keepalive_requests 1000000;
  client_body_temp_path $work/ngx/cb; proxy_temp_path $work/ngx/p; fastcgi_temp_path $work/ngx/f;
  uwsgi_temp_path $work/ngx/u; scgi_temp_path $work/ngx/s;
  server { listen 127.0.0.1:$port; root $work/www; }
}
NGX
nginx -p "$work/ngx" -c "$work/ngx/nginx.conf" & pids+=($!)
base="http://127.0.0.1:$port"
for s in small large; do
  has "$s" || continue
  n=1000; [ "$s" = large ] && n=100
  : > "$work/$s.list"
  for i in $(seq "$n"); do echo "$base/$s/f$i.bin" >> "$work/$s.list"; done
  (cd "$work/www/$s" && sha256sum f*.bin | sort -k2) > "$work/$s.sums"
done

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
# A daemon on an empty data dir (untimed): every run starts cold, with fresh pools.
fresh_daemon() {
  if [ -n "$daemon_pid" ]; then kill "$daemon_pid"; wait "$daemon_pid" 2>/dev/null || true; fi
  rm -rf "$work/data"
  "$dfget" daemon --config "$work/dfget.yaml" & daemon_pid=$!
  for _ in $(seq 200); do "$dfget" tasks ls --daemon-sock "$sock" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "daemon did not start" >&2; exit 1
}

# time_runs SCENARIO NAME CMD... : $runs cold runs into $work/out, outputs checked.
time_runs() {
  local scenario="$1" name="$2"; shift 2
  local times=() bytes
  bytes=$(du -sb "$work/www/$scenario" | cut -f1)
  for _ in $(seq "$runs"); do
    rm -rf "$work/out" && mkdir -p "$work/out"
    fresh_daemon
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { echo "$scenario/$name failed" >&2; exit 1; }
    t1=$(date +%s.%N)
    (cd "$work/out" && sha256sum f*.bin | sort -k2) | cmp -s - "$work/$scenario.sums" \
      || { echo "$scenario/$name: wrong outputs" >&2; exit 1; }
    times+=("$(echo "$t1 - $t0" | bc -l)")
  done
  local med
  med="$(printf '%s\n' "${times[@]}" | median)"
  printf '%-6s %-22s median %7.3f s  %8.1f MiB/s  runs: %s\n' "$scenario" "$name" "$med" \
    "$(echo "$bytes / 1048576 / $med" | bc -l)" "$(printf '%.3f ' "${times[@]}")"
}

dfget_list() { "$dfget" -i "$work/$1.list" -O "$work/out" --daemon-sock "$sock" --no-spawn --no-progress ${2:+-j "$2"}; }
dfget_xargs() { xargs -P16 -I{} sh -c '"$0" -u "$1" -O "$2/$(basename "$1")" --daemon-sock "$3" --no-spawn' "$dfget" {} "$work/out" "$sock" < "$work/$1.list"; }
curl_xargs() { (cd "$work/out" && xargs -P16 -n1 curl -sfO < "$work/$1.list"); }
aria2_list() { aria2c -q -i "$work/$1.list" -j16 -d "$work/out" --allow-overwrite=true --auto-file-renaming=false; }

echo "machine: $(nproc) cores, $(uname -r), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "aria2c $(aria2c --version | head -1 | awk '{print $3}'), curl $(curl --version | head -1 | awk '{print $2}'), nginx $(nginx -v 2>&1 | cut -d/ -f2)"
echo "$runs cold runs each; dfget -i with -j: ${jobs_list[*]}"
for scenario in small large; do
  has "$scenario" || continue
  for j in "${jobs_list[@]}"; do
    if [ "$j" = default ]; then time_runs "$scenario" "dfget -i" dfget_list "$scenario"
    else time_runs "$scenario" "dfget -i -j$j" dfget_list "$scenario" "$j"; fi
  done
  time_runs "$scenario" "aria2c -i -j16" aria2_list "$scenario"
  time_runs "$scenario" "xargs -P16 dfget" dfget_xargs "$scenario"
  time_runs "$scenario" "xargs -P16 curl" curl_xargs "$scenario"
done

has huge || exit 0
# Peak RSS for a 100,000-line list of 1 KiB entries (distinct URLs by query, so distinct tasks).
python3 - "$base/tiny/t.bin" "$work/huge.list" <<'PY'
import sys
with open(sys.argv[2], "w") as f:
    for i in range(100000):
        f.write(f"{sys.argv[1]}?n={i}\n")
PY
fresh_daemon
rm -rf "$work/out" && mkdir -p "$work/out"
t0=$(date +%s.%N)
/usr/bin/time -f '%M' -o "$work/client.rss" "$dfget" prefetch -i "$work/huge.list" --daemon-sock "$sock" --no-spawn --no-progress \
  2> "$work/huge.err" || { tail -3 "$work/huge.err" >&2; exit 1; }
t1=$(date +%s.%N)
daemon_kib=$(awk '/VmHWM/ {print $2}' "/proc/$daemon_pid/status")
printf 'huge   100000 x 1 KiB prefetch  wall %.1f s  client peak RSS %d KiB  daemon peak RSS %d KiB  (%s)\n' \
  "$(echo "$t1 - $t0" | bc -l)" "$(tail -1 "$work/client.rss")" "$daemon_kib" "$(tail -1 "$work/huge.err")"
