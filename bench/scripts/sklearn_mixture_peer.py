"""The embedding-discovery peer of bench-discover: the same steps with scikit-learn.

Usage: sklearn_mixture_peer.py vectors.npy SAMPLE PCA_COMPONENTS MIXTURE_COMPONENTS SEED
Fits PCA on SAMPLE random rows, a diagonal GaussianMixture (k-means initialisation, as
sklearn's default) on their projections, then assigns every row to a component (projected
in chunks): the part of Domino's pipeline that sklearn provides, without its label and
prediction terms. Prints one JSON object: wall seconds, the peak RSS growth, EM iterations.
"""

import json
import sys
import time

import numpy as np
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main() -> None:
    vectors = np.load(sys.argv[1], mmap_mode="r")
    sample, pca_components, components, seed = (int(a) for a in sys.argv[2:6])
    before = rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False))
    x = np.asarray(vectors[rows], dtype=np.float64)
    pca = PCA(n_components=pca_components, svd_solver="full").fit(x)
    mixture = GaussianMixture(n_components=components, covariance_type="diag", random_state=seed)
    mixture.fit(pca.transform(x))
    assigned = np.empty(len(vectors), dtype=np.int32)
    for start in range(0, len(vectors), 100_000):
        chunk = np.asarray(vectors[start : start + 100_000], dtype=np.float64)
        assigned[start : start + len(chunk)] = mixture.predict(pca.transform(chunk))
    seconds = time.perf_counter() - started
    peak = rss_kb("VmHWM")
    print(json.dumps({"seconds": seconds, "peak_growth_mb": (peak - before) / 1024, "iterations": int(mixture.n_iter_)}))


if __name__ == "__main__":
    main()
