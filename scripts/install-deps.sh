#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine with Rust and
# Python: the Fashion-MNIST Debian package and the Python test packages. Idempotent:
# it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

apt_packages=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || apt_packages+=(dataset-fashion-mnist)
# The tests render the HTML report in Debian's headless Chromium (no browser downloads).
if [ "${1:-}" = "--python" ] || [ "${1:-}" = "--all" ]; then
  command -v chromium >/dev/null || apt_packages+=(chromium)
  command -v npm >/dev/null || apt_packages+=(nodejs npm)
fi
if [ "${#apt_packages[@]}" -gt 0 ]; then
  echo "installing Debian packages: ${apt_packages[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

if [ "${1:-}" = "--python" ] || [ "${1:-}" = "--all" ]; then
  if ! python3 -c 'import duckdb, pyarrow, pytest, sklearn, requests' 2>/dev/null; then
    echo "installing Python test packages"
    python3 -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
  fi
  # The web UI's end-to-end tests drive Debian's chromium with playwright-core (npm; no
  # browser download).
  if [ ! -d tests/ui/node_modules/playwright-core ]; then
    echo "installing playwright-core (npm ci --prefix tests/ui)"
    npm ci --prefix tests/ui --no-audit --no-fund --silent
  fi
  # The Python client, editable so the tests always exercise this checkout's python/.
  if ! python3 -c 'import slicetest, sys, pathlib; sys.exit(pathlib.Path(slicetest.__file__).resolve().parent != pathlib.Path("python/slicetest").resolve())' 2>/dev/null; then
    echo "installing the Python client (pip install -e ./python)"
    python3 -m pip install -q --disable-pip-version-check -e ./python
  fi
fi
