#!/usr/bin/env bash
# The project's test command (README, CI): installs the real servers the end-to-end tests use
# when they are missing, then runs every test. Each test starts its servers on 127.0.0.1 in a
# temp dir and stops them itself; this script only makes sure the programs exist.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || need_apt+=(nginx-light)
command -v docker-registry >/dev/null 2>&1 || need_apt+=(docker-registry)
command -v htpasswd >/dev/null 2>&1 || need_apt+=(apache2-utils)
command -v tinyproxy >/dev/null 2>&1 || [ -x /usr/sbin/tinyproxy ] || [ -x /usr/bin/tinyproxy ] || need_apt+=(tinyproxy)
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v ip >/dev/null 2>&1 || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || need_apt+=(iproute2)
# Dragonfly's manager (tests/e2e_manager.rs) needs a database and Redis. Debian keeps PostgreSQL's
# server programs in /usr/lib/postgresql/MAJOR/bin, off PATH.
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need_apt+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing test servers: ${need_apt[*]} (run as root, or: sudo apt-get install ${need_apt[*]})" >&2
    exit 1
  fi
  # Fresh machines have no package lists.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
if ! python3 -c "import oras.client" >/dev/null 2>&1; then
  python3 -m pip install -q oras
fi

# Go tools (the oras CLI, distribution v3): built once into a cache outside the repo.
command -v go >/dev/null 2>&1 || [ ! -x /usr/local/go/bin/go ] || PATH="$PATH:/usr/local/go/bin"
tools="${DFGET_TOOLS:-$HOME/.cache/dfget-tools}"
while read -r name module version; do
  case "$name" in ''|'#'*) continue ;; esac
  if [ ! -x "$tools/$name-$version/$name" ]; then
    command -v go >/dev/null 2>&1 || { echo "go is needed to build $module@$version" >&2; exit 1; }
    echo "building $module@$version into $tools/$name-$version" >&2
    GOBIN="$tools/$name-$version" go install "$module@$version"
  fi
done < scripts/go-tools.txt
export DFGET_TOOLS="$tools"

# Dragonfly's scheduler and manager (Go) for the cluster tests (tests/e2e_p2p.rs,
# tests/e2e_manager.rs), built once into a cache outside the repo. v2.5.1 is the first release whose
# scheduler runs without a manager (and without Redis unless configured); the manager is the same
# release. `go install MODULE/cmd/NAME@VERSION` cannot be used: it asks the module proxy for the
# module's version list (to check deprecation), which the proxy refuses for this module; building
# inside a throwaway module that requires the exact version, with the module's own go.sum, asks
# only for exact versions. Same cache layout as scripts/go-tools.txt: NAME-VERSION/NAME.
dragonfly_version=v2.5.1
for name in scheduler manager; do
  dir="$tools/$name-$dragonfly_version"
  [ -x "$dir/$name" ] && continue
  command -v go >/dev/null 2>&1 || { echo "Go is needed to build Dragonfly's $name for the cluster tests" >&2; exit 1; }
  echo "building Dragonfly's $name $dragonfly_version into $dir (once)" >&2
  mkdir -p "$dir"
  mod="$(mktemp -d)"
  (
    cd "$mod"
    export GOFLAGS=-mod=mod
    go mod init dfget-tools >/dev/null 2>&1
    go mod edit -require="d7y.io/dragonfly/v2@$dragonfly_version"
    go mod download "d7y.io/dragonfly/v2@$dragonfly_version"
    cat "$(go env GOMODCACHE)/d7y.io/dragonfly/v2@$dragonfly_version/go.sum" >> go.sum
    go build -trimpath -o "$dir/$name" "d7y.io/dragonfly/v2/cmd/$name"
  )
  rm -rf "$mod"
done

# RUST_TEST_THREADS rather than `-- --test-threads`: the bench targets (criterion) reject that flag.
RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}" cargo test --all-targets
