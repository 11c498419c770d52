"""The f32 GEMM rate this machine reaches with the BLAS libraries people use: bench-embed's ceiling line.

Usage: gemm_ceiling.py [--size N] [--threads T] [--runs R]
Times C = A @ B for square N x N f32 matrices (fixed-seed N(0, 1) values; default N 2048,
big enough for any BLAS to run at its best rate) with numpy (whichever BLAS numpy was built
with: OpenBLAS in the PyPI wheels) and with torch.mm (MKL in PyTorch's x86 wheels), each
on T threads, best of R runs after one untimed warm-up. Prints JSON {size, threads,
numpy_gflops, numpy_blas, torch_gflops, torch}. A model whose work is nine tenths GEMM
cannot run much faster in f32 than the best of these rates allows, whatever its kernels.
"""

import argparse
import json
import os

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--size", type=int, default=2048)
parser.add_argument("--threads", type=int, default=os.cpu_count())
parser.add_argument("--runs", type=int, default=10)
args = parser.parse_args()

# The BLAS thread pools read these as they load.
for name in ["OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"]:
    os.environ[name] = str(args.threads)

import time  # noqa: E402

import numpy as np  # noqa: E402


def best_gflops(multiply):
    multiply()
    best = float("inf")
    for _ in range(args.runs):
        started = time.perf_counter()
        multiply()
        best = min(best, time.perf_counter() - started)
    return 2 * args.size**3 / best / 1e9


rng = np.random.default_rng(0)
a = rng.standard_normal((args.size, args.size), dtype=np.float32)
b = rng.standard_normal((args.size, args.size), dtype=np.float32)
result = {"size": args.size, "threads": args.threads, "numpy_gflops": best_gflops(lambda: a @ b)}
try:
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    result["numpy_blas"] = f"{blas.get('name')} {blas.get('version')}"
except Exception:  # older numpy: no dict mode
    result["numpy_blas"] = "unknown"
try:
    import torch

    torch.set_num_threads(args.threads)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    result["torch_gflops"] = best_gflops(lambda: torch.mm(ta, tb))
    result["torch"] = torch.__version__
except ImportError:
    result["torch_gflops"] = None
print(json.dumps(result))
