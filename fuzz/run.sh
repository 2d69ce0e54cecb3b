#!/usr/bin/env bash
# Runs each fuzz target for a bounded time (default 60 s each), seeded from the checked-in
# corpus in fuzz/corpus/<target>/. New inputs go to fuzz/work/<target>/ (not checked in);
# a failing input is saved under fuzz/artifacts/<target>/ and the script stops with its status.
#
#   fuzz/run.sh [SECONDS] [TARGET...]        e.g. fuzz/run.sh 300 recovery
#
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`). Builds into
# fuzz/target, apart from the main workspace's target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(resp record recovery)
for t in "${targets[@]}"; do
    mkdir -p "fuzz/work/$t"
    echo "== $t: ${secs}s"
    # -rss_limit_mb / -malloc_limit_mb: an input that makes a check allocate more than this is a
    # failure (the parsers must never ask for memory the input does not justify).
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=1024 -malloc_limit_mb=512 \
        -max_len=8192 -print_final_stats=1
done
