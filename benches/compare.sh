#!/usr/bin/env bash
# The one benchmark command: every end-to-end comparison of PERF.md in one run, peers alternating
# (dfget through its daemon vs curl, aria2c and oras-py; cold, capped per connection, ORAS, warm
# hits, a 4 KiB file, 100 concurrent clients), with CPU, peak RSS and disk writes per run.
# See benches/harness.py for the scenarios and options, e.g.
#   benches/compare.sh                      (everything, 3 runs each)
#   benches/compare.sh --runs 5 --only plain,warm --markdown /tmp/table.md
exec python3 "$(dirname "$0")/harness.py" "$@"
