#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine with Rust and
# Python: the Fashion-MNIST Debian package and, with --python or --all, Chromium, npm's
# playwright-core and a virtual environment with the Python test packages
# ($SLICETEST_VENV, default ~/.cache/slicetest-venv). Idempotent: it installs only what is
# missing.
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
  # The Python tests run in a virtual environment of their own, made from
  # tests/python/requirements.txt alone (plus the client in python/, editable, so the tests
  # exercise this checkout's python/). Nothing installed by hand into the system Python
  # can satisfy a test there. It is refreshed when the requirements or the client's
  # pyproject change; .ci/run points SLICETEST_VENV at a new directory every run.
  venv="${SLICETEST_VENV:-$HOME/.cache/slicetest-venv}"
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -m venv "$venv" >/dev/null 2>&1; then
      # Debian's python3 keeps venv/ensurepip in a package of its own.
      rm -rf "$venv"
      echo "installing Debian package: python3-venv"
      $SUDO apt-get update -qq
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-venv >/dev/null
      python3 -m venv "$venv"
    fi
  fi
  want="$(cat tests/python/requirements.txt python/pyproject.toml | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$venv/.slicetest-requirements" 2>/dev/null)" != "$want" ]; then
    echo "installing Python test packages into $venv (tests/python/requirements.txt)"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r tests/python/requirements.txt
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -e './python[pandas]'
    echo "$want" > "$venv/.slicetest-requirements"
  fi
  # The web UI's end-to-end tests drive Debian's chromium with playwright-core (npm; no
  # browser download); its modules are type-checked with TypeScript's tsc.
  if [ ! -d tests/ui/node_modules/playwright-core ] || [ ! -d tests/ui/node_modules/typescript ]; then
    echo "installing playwright-core and typescript (npm ci --prefix tests/ui)"
    npm ci --prefix tests/ui --no-audit --no-fund --silent
  fi
fi
