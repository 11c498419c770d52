#!/usr/bin/env bash
# The whole test suite: Rust unit, integration and sqllogictest tests, then the Python
# tests (CLI end to end, and result parity with DuckDB on the same Parquet).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --all
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/slicetest-target}"
venv="${SLICETEST_VENV:-$HOME/.cache/slicetest-venv}"
# The sqllogictest runner starts a local S3 server (moto) with this Python for its
# cluster-on-S3 run; here it must work.
SLICETEST_PYTHON="$venv/bin/python" cargo test --workspace --locked
# `cargo test` built target/debug/slicetest for the integration tests; the Python tests use
# it, in the virtual environment install-deps.sh made from tests/python/requirements.txt.
SLICETEST_BIN="$CARGO_TARGET_DIR/debug/slicetest" "$venv/bin/python" -m pytest -q tests/python
