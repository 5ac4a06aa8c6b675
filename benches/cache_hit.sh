#!/usr/bin/env bash
# What a cache hit costs root and what it costs another user: root's OUT is a hard link into the
# cache; a non-root caller's OUT is made with the caller's own rights, and with
# fs.protected_hardlinks=1 a user cannot link root's cache file, so it gets a reflink or copy of
# its own (README, "Many users on one host").
#
#   sudo benches/cache_hit.sh [SIZE_MIB] [RUNS]        (defaults: 512 MiB, 5 runs)
#   DFGET=target/debug/dfget sudo benches/cache_hit.sh  (skip the release build)
#
# Needs root (it creates a throwaway user and group, removed on exit) and nginx. Prints, per
# caller, the median seconds of a cache hit (client start to exit: the daemon re-verifies the
# cached file's crcs, then exports), what OUT is (a link, or the caller's own file), and every run.
set -euo pipefail
size_mib="${1:-512}"
runs="${2:-5}"
root="$(cd "$(dirname "$0")/.." && pwd)"
[ "$(id -u)" = 0 ] || { echo "run as root: the bench creates a user" >&2; exit 1; }
work="$(mktemp -d)"
user="dfbench$$"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  userdel "$user" 2>/dev/null || true
  groupdel "$user" 2>/dev/null || true
  groupdel "${user}s" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

if [ -z "${DFGET:-}" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
  DFGET="$root/target/release/dfget"
fi
chmod 0711 "$work"
mkdir -p "$work/bin" && cp "$DFGET" "$work/bin/dfget" && chmod 0755 "$work/bin" "$work/bin/dfget"
dfget="$work/bin/dfget"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$work/www" "$work/ngx" "$work/out"
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/www/blob.bin"
port="$(free_port)"
cat > "$work/ngx/nginx.conf" <<NGX
daemon off; master_process off; worker_processes 1; pid $work/ngx/pid; error_log $work/ngx/error.log;
events { worker_connections 64; }
http {
  access_log off; sendfile on;
  client_body_temp_path $work/ngx/cb; proxy_temp_path $work/ngx/p; fastcgi_temp_path $work/ngx/f;
  uwsgi_temp_path $work/ngx/u; scgi_temp_path $work/ngx/s;
  server { listen 127.0.0.1:$port; root $work/www; }
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

groupadd "${user}s"
mkdir -p "$work/home"
useradd --no-create-home --home-dir "$work/home" --shell /usr/sbin/nologin --user-group "$user"
usermod -a -G "${user}s" "$user"
chown "$user:$user" "$work/home"
chgrp "${user}s" "$sock"

url="http://127.0.0.1:$port/blob.bin"
"$dfget" -u "$url" -O "$work/out/cold" --daemon-sock "$sock" --no-spawn   # fills the cache

median() { sort -n | awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
# hits NAME OUT CMD-PREFIX...: times RUNS cache hits into OUT.
hits() {
  local name="$1" out="$2"; shift 2
  local times=() method
  for _ in $(seq "$runs"); do
    rm -f "$out"
    local t0 t1
    t0=$(date +%s.%N)
    "$@" "$dfget" -u "$url" -O "$out" --daemon-sock "$sock" --no-spawn
    t1=$(date +%s.%N)
    times+=("$(echo "$t1 - $t0" | bc)")
    cmp -s "$out" "$work/www/blob.bin" || { echo "$name: wrong bytes" >&2; exit 1; }
  done
  [ "$(stat -c %h "$out")" -gt 1 ] && method="hardlink (nlink $(stat -c %h "$out"))" || method="own file, owner $(stat -c %U "$out")"
  printf '%-10s median %6ss  %s  runs: %s\n' "$name" "$(printf '%s\n' "${times[@]}" | median)" "$method" "${times[*]}"
}
echo "cache hit of $size_mib MiB, $runs runs, binary $DFGET"
hits root "$work/out/hit"
hits user "$work/home/hit" setpriv --reuid="$user" --regid="$user" --init-groups --
