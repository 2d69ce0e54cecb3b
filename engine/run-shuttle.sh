#!/bin/sh
# Model-checks the index insert/update path and the writer gate with shuttle
# (engine/tests/shuttle_index.rs; what is modelled is described at the top of that file).
# The --cfg changes every crate's flags, so it builds in its own target dir and leaves
# target/ alone. SHUTTLE_SCALE=10 runs ten times the iterations.
set -eu
cd "$(dirname "$0")/.."
RUSTFLAGS="--cfg shuttle" CARGO_TARGET_DIR=target/shuttle \
    exec cargo test -p segkv-engine --test shuttle_index --release "$@"
