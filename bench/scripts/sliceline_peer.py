"""The SliceLine peer of bench-discover: PyPI `sliceline` (0.3.x) on the same table.

Usage: sliceline_peer.py X.npy errors.npy ALPHA K MAX_LEVEL MIN_SUPPORT
Prints one JSON object: wall seconds of fit(), the peak RSS growth during it, whether
numba was used, and the top slices (one value or null per column) with their statistics.
"""

import json
import sys
import time

import numpy as np
from sliceline.slicefinder import Slicefinder, is_numba_available


def rss_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main() -> None:
    x = np.load(sys.argv[1])
    errors = np.load(sys.argv[2])
    alpha, k, max_level, min_support = float(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6])
    finder = Slicefinder(alpha=alpha, k=k, max_l=max_level, min_sup=min_support, verbose=False)
    before = rss_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS
    started = time.perf_counter()
    finder.fit(x, errors)
    seconds = time.perf_counter() - started
    peak = rss_kb("VmHWM")
    slices = [[None if v is None else int(v) for v in row] for row in finder.top_slices_]
    print(
        json.dumps(
            {
                "seconds": seconds,
                "peak_growth_mb": (peak - before) / 1024,
                "numba": bool(is_numba_available()),
                "slices": slices,
                "statistics": finder.top_slices_statistics_,
            }
        )
    )


if __name__ == "__main__":
    main()
