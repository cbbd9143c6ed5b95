#!/usr/bin/env bash
# The side-by-side comparison of issue 7, in one command (see BENCHMARKS.md):
#
#   scripts/bench-compare.sh                 # nginx vs the broker (http and process adapters) vs bare actix
#   scripts/bench-compare.sh --rounds 5 --duration 20s
#   scripts/bench-compare.sh sessions        # 1 000 000 stored sessions, memory, expiry sweep
#
# Builds the release binaries, then runs `soapbench compare` (or `soapbench sessions`) with the
# remaining arguments; `soapbench compare --help` lists them. Needs nginx for the comparison
# (Debian: apt-get install nginx-light); no root, no system configuration: everything runs from a
# temporary directory on loopback ports. Benchmarks never pass or fail on speed: the exit status
# only says whether every run could be made.
set -euo pipefail

cd "$(dirname "$0")/.."
target_dir="${CARGO_TARGET_DIR:-target}"

mode=compare
if [[ "${1:-}" == "sessions" || "${1:-}" == "compare" ]]; then
    mode="$1"
    shift
fi

if [[ "$mode" == compare ]] && ! command -v nginx >/dev/null && [[ ! -x /usr/sbin/nginx ]]; then
    echo "bench-compare: nginx is not installed (Debian: apt-get install nginx-light)" >&2
    exit 1
fi

cargo build --release -p broker --bins --examples
cargo build --release -p broker-tests --bin soapbench

exec "$target_dir/release/soapbench" "$mode" --bin-dir "$target_dir/release" "$@"
