#!/usr/bin/env bash
# The demo: Fashion-MNIST (70,000 labelled images) ingested, sliced, two models trained and
# tested per slice; then, in a terminal, the web UI on http://127.0.0.1:7878 (Ctrl-C stops).
# Usage: bash scripts/demo.sh [workspace-dir]   (default ./slicetest-data)
#        SLICETEST_DEMO_SERVE=0 bash scripts/demo.sh   (do not start the UI)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/slicetest-target}"
# --workspace: the same feature set as the tests, so both share one build of DataFusion.
cargo build --quiet --workspace
ws="${1:-slicetest-data}"
"$CARGO_TARGET_DIR/debug/slicetest" --workspace "$ws" demo
if [ "${SLICETEST_DEMO_SERVE:-1}" != "0" ] && [ -t 0 ] && [ -t 1 ]; then
  echo
  echo "Starting the web UI (Ctrl-C stops it). Open http://127.0.0.1:7878/#/runs/mlp?baseline=linear"
  exec "$CARGO_TARGET_DIR/debug/slicetest" --workspace "$ws" serve
fi
