#!/usr/bin/env python3
"""The peer of bench-tags: the pixel statistics of slicetest's `pixels` tagger computed
with PIL + numpy (vectorised per image, one process per core), on the same PNG files.

Usage: pixel_stats_peer.py FILE_LIST [--processes N]
FILE_LIST has one image path per line. Prints one JSON line: images, seconds, images_per_s.
The definitions follow docs/tags.md (luma = skimage rgb2gray weights, interior Laplacian,
256-bin entropy, HSV-rule dominant colour); embed/tests/fixtures/pixels/ holds the exact
reference implementation, this is the straightforward fast one a team would write.
"""
import json
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

NAMES = np.array(["black", "white", "gray", "red", "orange", "yellow", "green", "cyan", "blue", "purple", "pink", "brown"])


def stats(path):
    with Image.open(path) as im:
        gray_source = im.mode in ("L", "LA", "I;16")
        rgb = np.asarray(im.convert("RGB"), dtype=np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    luma = 0.2125 * r + 0.7154 * g + 0.0721 * b
    mx, mn = rgb.max(axis=2), rgb.min(axis=2)
    sat = np.where(mx > 0, (mx - mn) / np.where(mx > 0, mx, 1), 0)
    rg, yb = r - g, 0.5 * (r + g) - b
    colorfulness = np.sqrt(rg.std() ** 2 + yb.std() ** 2) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
    if luma.shape[0] >= 3 and luma.shape[1] >= 3:
        lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
        sharpness = lap.var()
    else:
        sharpness = 0.0
    hist = np.bincount(np.floor(luma + 0.5).astype(np.int64).ravel(), minlength=256)
    p = hist[hist > 0] / luma.size
    entropy = -(p * np.log2(p)).sum()
    is_gray = gray_source or (mx - mn).max() <= 2
    # Named colour per pixel (HSV rules of docs/tags.md), then the most frequent.
    v, delta = mx / 255, mx - mn
    hue = np.zeros_like(mx)
    nz = delta > 0
    rmax, gmax = nz & (mx == r), nz & (mx == g) & (mx != r)
    bmax = nz & ~rmax & ~gmax
    hue[rmax] = (60 * ((g - b)[rmax] / delta[rmax])) % 360
    hue[gmax] = 60 * ((b - r)[gmax] / delta[gmax]) + 120
    hue[bmax] = 60 * ((r - g)[bmax] / delta[bmax]) + 240
    bands = np.digitize(hue, [15, 45, 70, 165, 195, 255, 290, 345])
    by_hue = np.array([3, 4, 5, 6, 7, 8, 9, 10, 3])[bands]
    label = np.where(v < 0.2, 0, np.where(sat < 0.15, np.where(v > 0.8, 1, 2), by_hue))
    label = np.where((label == 3) | (label == 4), np.where(v < 0.6, 11, label), label)
    dominant = NAMES[np.bincount(label.ravel(), minlength=12).argmax()]
    h, w = luma.shape
    return (luma.mean() / 255, luma.std() / 255, sat.mean(), colorfulness, sharpness, entropy, is_gray, w / h, dominant)


def main():
    files = [line.strip() for line in open(sys.argv[1]) if line.strip()]
    processes = int(sys.argv[sys.argv.index("--processes") + 1]) if "--processes" in sys.argv else 2
    with Pool(processes) as pool:
        pool.map(stats, files[:processes * 8])  # warm-up: imports, page cache
        started = time.perf_counter()
        results = pool.map(stats, files, chunksize=256)
        seconds = time.perf_counter() - started
    assert len(results) == len(files)
    print(json.dumps({"images": len(files), "seconds": seconds, "images_per_s": len(files) / seconds}))


if __name__ == "__main__":
    main()
