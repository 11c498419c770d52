#!/usr/bin/env python3
"""The peer of bench-segmentation: mask import statistics and segmentation confusion
matrices with Pillow + NumPy (+ SciPy for regions), one process per core, on the same PNG
label maps (8-bit grayscale, value = class id, 255 = ignore).

Usage:
  segmentation_numpy.py import GT_DIR --classes K [--processes N]
      per mask: decode (PIL), per-class pixel histogram (np.bincount), 8-connected
      regions per class present (scipy.ndimage.label, 3x3 structure).
  segmentation_numpy.py score GT_DIR --pred PRED_DIR --classes K [--processes N]
      per image: decode GT and prediction (PIL), K x K confusion of the labelled pixels
      (np.bincount(gt[m] * K + pred[m], minlength=K*K)); summed; per-class IoU, mIoU.

Prints one JSON line: masks, seconds (the timed part: after the pool is up and warmed on
a few files), masks_per_s, and the results the bench compares with slicetest's
(import: labelled_pixels, pixels and regions per class; score: confusion, mean_iou).
"""
import json
import os
import sys
import time
from multiprocessing import Pool

import numpy as np
from PIL import Image

IGNORE = 255
EIGHT = np.ones((3, 3), dtype=bool)
K = 0  # set from --classes before the pool forks


def decode(path):
    with Image.open(path) as im:
        return np.asarray(im)


def import_one(path):
    from scipy import ndimage

    labels = decode(path)
    counts = np.bincount(labels.ravel(), minlength=256)
    pixels = counts[:K]
    if counts[K:IGNORE].any() or counts[IGNORE + 1:].any():
        raise ValueError(f"{path}: class ids outside 0..{K - 1} and {IGNORE}")
    regions = np.zeros(K, dtype=np.int64)
    for k in np.flatnonzero(pixels):
        regions[k] = ndimage.label(labels == k, structure=EIGHT)[1]
    return pixels.astype(np.int64), regions


def score_one(paths):
    gt, pred = decode(paths[0]), decode(paths[1])
    if gt.shape != pred.shape:
        raise ValueError(f"{paths[1]}: {pred.shape} vs ground truth {gt.shape}")
    m = gt != IGNORE
    return np.bincount(gt[m].astype(np.int64) * K + pred[m], minlength=K * K)


def init(k):
    global K
    K = k


def main():
    mode, gt_dir = sys.argv[1], sys.argv[2]
    arg = lambda name, default: sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default
    k = int(arg("--classes", "19"))
    processes = int(arg("--processes", "2"))
    names = sorted(n for n in os.listdir(gt_dir) if n.endswith(".png"))
    if mode == "import":
        work, fn = [os.path.join(gt_dir, n) for n in names], import_one
    elif mode == "score":
        pred_dir = arg("--pred", None)
        work, fn = [(os.path.join(gt_dir, n), os.path.join(pred_dir, n)) for n in names], score_one
    else:
        sys.exit(f"unknown mode {mode} (import or score)")
    init(k)
    with Pool(processes, initializer=init, initargs=(k,)) as pool:
        pool.map(fn, work[: processes * 2])  # warm-up: imports (scipy), page cache
        started = time.perf_counter()
        chunk = max(1, len(work) // (processes * 8))
        results = pool.map(fn, work, chunksize=chunk)
        if mode == "import":
            pixels = np.sum([r[0] for r in results], axis=0)
            regions = np.sum([r[1] for r in results], axis=0)
        else:
            confusion = np.sum(results, axis=0).reshape(k, k)
            tp = np.diag(confusion).astype(np.float64)
            union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
            with np.errstate(invalid="ignore", divide="ignore"):
                iou = tp / union
            mean_iou = float(np.nanmean(iou))
        seconds = time.perf_counter() - started
    out = {"masks": len(work), "seconds": seconds, "masks_per_s": len(work) / seconds, "processes": processes}
    if mode == "import":
        out.update(labelled_pixels=int(pixels.sum()), pixels=pixels.tolist(), regions=regions.tolist())
    else:
        out.update(confusion=confusion.tolist(), mean_iou=mean_iou)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
