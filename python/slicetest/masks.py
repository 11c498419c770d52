"""Segmentation predictions in the form ``Client.upload_predictions`` sends: one COCO RLE
mask per (image, predicted class), the COCO-stuff results format. NumPy only (no
pycocotools needed); the encoding is byte-for-byte pycocotools' ``mask.encode``."""

from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np


def rle_counts(mask: "np.ndarray") -> str:
    """COCO's compressed RLE text of a 2-D binary mask (runs down the columns, 0s first)."""
    flat = np.asarray(mask, dtype=bool).flatten(order="F")
    bounds = np.concatenate([[0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts = [0] + counts
    out = []
    for i, n in enumerate(counts):
        x = n - counts[i - 2] if i > 2 else n
        while True:
            c = x & 0x1F
            x >>= 5  # arithmetic shift, as in pycocotools' C
            more = x != -1 if c & 0x10 else x != 0
            out.append(chr((c | 0x20 if more else c) + 48))
            if not more:
                break
    return "".join(out)


def segmentation_results(
    image_id: Union[str, int],
    label_map: "np.ndarray",
    classes: Optional[Iterable[int]] = None,
) -> List[Dict[str, Any]]:
    """The results entries of one predicted label map (height × width class ids): a mask
    per class present (or per class of ``classes``), ready for
    ``Client.upload_predictions(run, results, ...)``. ``image_id`` is the dataset's image
    id, or the COCO id for a dataset ingested from a COCO file."""
    labels = np.asarray(label_map)
    if labels.ndim != 2:
        raise ValueError(f"a label map has two dimensions (height, width), got shape {labels.shape}")
    height, width = labels.shape
    wanted = np.unique(labels) if classes is None else classes
    return [
        {
            "image_id": image_id,
            "category_id": int(k),
            "segmentation": {"size": [int(height), int(width)], "counts": rle_counts(labels == k)},
        }
        for k in wanted
        if (labels == k).any()
    ]
