#!/usr/bin/env bash
# Compile-checks the `cuda` feature on a machine with no GPU and no CUDA install: the CUDA
# toolkit comes from PyPI (NVIDIA's wheels) into a venv, candle's kernels are compiled to
# PTX by its nvcc, and `cargo check` type-checks every cuda-gated line. It does not link
# or run anything (no driver here): on a GPU machine, build with `--features cuda` and
# run `slicetest embed --device cuda` instead.
#
# cudarc 0.19.10 (candle 0.11's) knows CUDA up to 13.4, hence the pins; all five wheels
# must be the same minor version, or ptxas rejects what cicc wrote.
# Usage: bash scripts/check-cuda.sh   (12-16 minutes cold on 2 cores, 150 MB of wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${SLICETEST_CUDA_VENV:-$HOME/.venvs/cuda-13.4}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet "nvidia-cuda-nvcc==13.4.*" "nvidia-cuda-crt==13.4.*" \
  "nvidia-nvvm==13.4.*" "nvidia-cuda-runtime==13.4.*" "nvidia-cuda-cccl==13.3.*"
cuda="$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')"
export PATH="$cuda/bin:$PATH" CUDA_ROOT="$cuda" CUDA_PATH="$cuda" CUDA_HOME="$cuda"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}" # Hopper (H100/H200); 80 for A100, 89 for L4
# A target directory of its own: the cuda feature changes candle's build.
export CARGO_TARGET_DIR="${SLICETEST_CUDA_TARGET:-$HOME/.cache/slicetest-target-cuda}"
cargo check -p slicetest-embed --features cuda
echo "cuda feature: compiles (kernels built for compute capability $CUDA_COMPUTE_CAP with $(nvcc --version | tail -1))"
