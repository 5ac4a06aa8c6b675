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

# RUST_TEST_THREADS rather than `-- --test-threads`: the bench targets (criterion) reject that flag.
RUST_TEST_THREADS="${RUST_TEST_THREADS:-2}" cargo test --all-targets
