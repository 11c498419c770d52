"""The FAISS peer of vector search: HNSW build time, single-query latency, recall@k, size.

Usage: faiss_hnsw.py [--n N] [--dim D] [--m M] [--ef-construction EFC] [--ef-search EFS]
                     [--queries Q] [--k K] [--seed S] [--threads T]
                     [--vectors PATH] [--queries-file PATH] [--keep DIR]
Vectors: with --vectors, a raw little-endian float32 file, row-major N x D (N is taken from
the file size and --n is ignored); otherwise N random unit vectors (numpy default_rng(seed),
standard normal, L2-normalised). Queries likewise from --queries-file (Q x D, Q from the file)
or default_rng(seed + 1). Builds faiss.IndexHNSWFlat(D, M, METRIC_INNER_PRODUCT) with
efConstruction = EFC (timed: build_s, with T OpenMP threads), sets efSearch = EFS, then searches
the queries one at a time (per-query latency p50/p99). Exact top-k comes from a brute-force
IndexFlatIP (recall@k = |hnsw top-k intersect exact top-k| / (Q * k)); the flat index's own
single-query p50 is reported too. bytes_per_vector = len(serialize_index(hnsw)) / N.
Prints JSON {n, dim, m, ef_construction, ef_search, k, build_s, hnsw_p50_ms, hnsw_p99_ms,
recall_at_k, flat_p50_ms, bytes_per_vector, faiss, simd_level}.
With --keep DIR the built index is written to DIR (named by N, D, M, EFC and the SIMD level,
with its build time beside it) and read back by the next run with the same settings instead of
built again: build_s is then the earlier run's, and "reused" says so.
With SLICETEST_CPU_KERNEL=avx2 (slicetest's own kernels kept off AVX-512) FAISS's SIMD level
is set to AVX2 too, unless FAISS_SIMD_LEVEL names one: both sides as on an AVX2-only CPU.
"""

import argparse
import json
import os
import time

import faiss
import numpy as np

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--n", type=int, default=1_000_000)
parser.add_argument("--dim", type=int, default=512)
parser.add_argument("--m", type=int, default=16)
parser.add_argument("--ef-construction", type=int, default=200)
parser.add_argument("--ef-search", type=int, default=64)
parser.add_argument("--queries", type=int, default=200)
parser.add_argument("--k", type=int, default=10)
parser.add_argument("--seed", type=int, default=7)
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--rounds", type=int, default=1, help="passes over the queries; latencies of all count")
parser.add_argument("--vectors", help="raw float32 LE file, N x D row-major")
parser.add_argument("--queries-file", help="raw float32 LE file, Q x D row-major")
parser.add_argument("--keep", help="directory to keep the built index in and reuse it from")
args = parser.parse_args()
faiss.omp_set_num_threads(args.threads)
if os.environ.get("SLICETEST_CPU_KERNEL") == "avx2" and "FAISS_SIMD_LEVEL" not in os.environ:
    faiss.SIMDConfig.set_level(faiss.SIMDLevel_AVX2)


def simd_level():
    """FAISS's SIMD level (versions without run-time dispatch: what the loader picked)."""
    try:
        return faiss.SIMDConfig.get_level_name()
    except AttributeError:
        return getattr(faiss, "_loaded_instruction_set", "unknown")


def read_raw(path, dim):
    data = np.fromfile(path, dtype="<f4")
    if data.size == 0 or data.size % dim:
        raise SystemExit(f"{path}: {data.size} floats is not a non-empty multiple of dim {dim}")
    return np.ascontiguousarray(data.reshape(-1, dim), dtype=np.float32)


def random_unit(rows, dim, seed):
    x = np.random.default_rng(seed).standard_normal((rows, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def percentile_ms(times, q):
    return float(np.percentile(np.asarray(times) * 1000, q))


def one_at_a_time(index, queries, k):
    times, ids = [], []
    for i in range(len(queries)):
        q = queries[i : i + 1]
        start = time.perf_counter()
        _, labels = index.search(q, k)
        times.append(time.perf_counter() - start)
        ids.append(labels[0])
    return times, np.stack(ids)


xb = read_raw(args.vectors, args.dim) if args.vectors else random_unit(args.n, args.dim, args.seed)
xq = read_raw(args.queries_file, args.dim) if args.queries_file else random_unit(args.queries, args.dim, args.seed + 1)
n, dim = xb.shape

kept = None
if args.keep:
    os.makedirs(args.keep, exist_ok=True)
    kept = os.path.join(args.keep, f"faiss-hnsw-{n}x{dim}-m{args.m}-efc{args.ef_construction}-{simd_level()}.index")
if kept and os.path.exists(kept) and os.path.exists(kept + ".json"):
    index = faiss.read_index(kept)
    build_s = json.load(open(kept + ".json"))["build_s"]
    reused = True
else:
    index = faiss.IndexHNSWFlat(dim, args.m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    start = time.perf_counter()
    index.add(xb)
    build_s = time.perf_counter() - start
    reused = False
    if kept:
        faiss.write_index(index, kept)
        with open(kept + ".json", "w") as f:
            json.dump({"build_s": build_s}, f)
index.hnsw.efSearch = args.ef_search

index.search(xq[:1], args.k)  # warm-up
hnsw_times = []
for _ in range(args.rounds):
    times, hnsw_ids = one_at_a_time(index, xq, args.k)
    hnsw_times += times

flat = faiss.IndexFlatIP(dim)
flat.add(xb)
_, exact_ids = flat.search(xq, args.k)  # batched: the ground truth
flat.search(xq[:1], args.k)  # warm-up
flat_times, _ = one_at_a_time(flat, xq, args.k)

hits = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(hnsw_ids, exact_ids))
recall = hits / (len(xq) * args.k)

print(
    json.dumps(
        {
            "n": n,
            "dim": dim,
            "m": args.m,
            "ef_construction": args.ef_construction,
            "ef_search": args.ef_search,
            "k": args.k,
            "build_s": build_s,
            "reused": reused,
            "hnsw_p50_ms": percentile_ms(hnsw_times, 50),
            "hnsw_p99_ms": percentile_ms(hnsw_times, 99),
            "recall_at_k": recall,
            "flat_p50_ms": percentile_ms(flat_times, 50),
            "bytes_per_vector": faiss.serialize_index(index).nbytes / n,
            "faiss": faiss.__version__,
            "simd_level": simd_level(),
        }
    )
)
