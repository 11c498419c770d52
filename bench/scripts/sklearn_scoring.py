"""The peer of bench-scoring: per-slice metrics with pandas + scikit-learn.

Usage: sklearn_scoring.py RUNS IMAGES_PARQUET PREDICTIONS_PARQUET MEMBER_FILE...
Each timed run reads the same files slicetest reads and, per slice, computes accuracy,
per-class precision/recall/F1 and macro-F1 (what slicetest reports for a run with
labels only). Prints JSON {p50_ms, slices}.
"""

import json
import statistics
import sys
import time

import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

runs, images_path, predictions_path, member_files = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]


def score():
    truth = pd.read_parquet(images_path, columns=["image_id", "label"]).dropna()
    preds = pd.read_parquet(predictions_path, columns=["image_id", "predicted"])
    joined = preds.merge(truth, on="image_id")
    out = []
    for path in member_files:
        members = pd.read_parquet(path, columns=["image_id"])
        s = joined.merge(members, on="image_id")
        y_true, y_pred = s["label"], s["predicted"]
        out.append(
            (
                accuracy_score(y_true, y_pred),
                precision_recall_fscore_support(y_true, y_pred, zero_division=0),
                f1_score(y_true, y_pred, average="macro", zero_division=0),
            )
        )
    return out


times = []
for _ in range(runs):
    start = time.perf_counter()
    result = score()
    times.append((time.perf_counter() - start) * 1000)
print(json.dumps({"p50_ms": statistics.median(times), "slices": len(result)}))
