#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 60) each. Uses nightly with AddressSanitizer when a
# nightly toolchain is installed, else stable without a sanitizer (`-s none`); debug assertions and
# overflow checks are on either way. Exits non-zero if any target crashed (artifacts/<target>/).
set -uo pipefail
seconds="${1:-60}"
cd "$(dirname "$0")"
here="$PWD"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz missing: cargo install cargo-fuzz" >&2
    exit 2
fi
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    toolchain=(+nightly) sanitizer=address
else
    toolchain=() sanitizer=none
fi

failed=()
for target in ${FUZZ_TARGETS:-response_head chunked content_range oras_reference oras_manifest api_request config}; do
    echo "== $target: ${seconds}s, sanitizer=$sanitizer"
    mkdir -p "$here/corpus/$target"
    dict=()
    [ -f "dict/$target.dict" ] && dict=(-dict="$here/dict/$target.dict")
    if ! cargo "${toolchain[@]}" fuzz run -s "$sanitizer" -a "$target" "$here/corpus/$target" "$here/seeds/$target" \
        -- -max_total_time="$seconds" -max_len=70000 "${dict[@]}"; then
        failed+=("$target")
    fi
done

if [ "${#failed[@]}" -ne 0 ]; then
    echo "FUZZ FAILURES: ${failed[*]} (see artifacts/)" >&2
    exit 1
fi
echo "all fuzz targets ran ${seconds}s without a crash"
