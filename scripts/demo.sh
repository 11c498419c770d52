#!/usr/bin/env bash
# The demo: Fashion-MNIST (70,000 labelled images) ingested into a workspace and queried.
# Usage: bash scripts/demo.sh [workspace-dir]   (default ./slicetest-data)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/slicetest-target}"
cargo build --quiet --bin slicetest
"$CARGO_TARGET_DIR/debug/slicetest" --workspace "${1:-slicetest-data}" demo
