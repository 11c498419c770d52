"""Generated COCO instance-segmentation files for bench-masks.

usage: coco_masks_data.py OUT_DIR IMAGES SEED

Writes OUT_DIR/instances.json (640×480 images, 1-12 objects each in 20 categories:
polygons of 3-16 points, some of two parts, about 1% crowds as uncompressed RLE) and
OUT_DIR/results.json (a Mask R-CNN-like run: each object found with probability 0.8 as a
moved and scaled copy of its mask, now and then in another category, plus 0-3 false
positives an image; compressed RLE `segmentation` and the mask's `bbox`). Prints one JSON
object with the counts.
"""

import json
import random
import sys
from pathlib import Path

import numpy as np
from pycocotools import mask as mask_utils

out, images, seed = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
W, H, CATEGORIES = 640, 480, list(range(1, 21))


def polygon(cx, cy, radius):
    points = rng.randint(3, 16)
    angles = sorted(rng.uniform(0, 2 * np.pi) for _ in range(points))
    out = []
    for a in angles:
        r = radius * rng.uniform(0.6, 1.0)
        out += [round(cx + r * np.cos(a), 2), round(cy + r * np.sin(a), 2)]
    return out


def result(image_id, category, polygons):
    rle = mask_utils.merge(mask_utils.frPyObjects(polygons, H, W))
    if mask_utils.area(rle) == 0:
        return None
    return {"image_id": image_id, "category_id": category, "score": round(rng.random(), 4),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
            "segmentation": {"size": [H, W], "counts": rle["counts"].decode()}}


image_list, annotations, results = [], [], []
for n in range(images):
    image_id = n + 1
    image_list.append({"id": image_id, "file_name": f"{image_id:06d}.png", "width": W, "height": H})
    for _ in range(rng.randint(1, 12)):
        category = rng.choice(CATEGORIES)
        radius = rng.choice([rng.uniform(4, 20), rng.uniform(20, 60), rng.uniform(60, 200)])
        cx, cy = rng.uniform(0, W), rng.uniform(0, H)
        if rng.random() < 0.01:
            m = np.zeros((H, W), np.uint8, order="F")
            m[int(cy / 2): int(cy / 2) + 80, int(cx / 2): int(cx / 2) + 120] = 1
            rle = mask_utils.encode(m)
            flat, counts, value, run = m.flatten(order="F"), [], 0, 0
            change = np.flatnonzero(np.diff(flat.astype(np.int8))) + 1
            edges = [0, *change.tolist(), flat.size]
            counts = [edges[i + 1] - edges[i] for i in range(len(edges) - 1)]
            if flat[0] == 1:
                counts = [0, *counts]
            segmentation, crowd = {"counts": counts, "size": [H, W]}, 1
        else:
            segmentation = [polygon(cx, cy, radius)]
            if rng.random() < 0.1:
                segmentation.append(polygon(cx + radius, cy, radius / 2))
            rle, crowd = mask_utils.merge(mask_utils.frPyObjects(segmentation, H, W)), 0
        area = float(mask_utils.area(rle))
        if area == 0:
            continue
        annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": category,
                            "segmentation": segmentation, "area": area,
                            "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": crowd})
        if crowd or rng.random() > 0.8:
            continue
        dx, dy, s = rng.uniform(-0.1, 0.1) * radius, rng.uniform(-0.1, 0.1) * radius, rng.uniform(0.9, 1.1)
        moved = [[round((v - (cx if k % 2 == 0 else cy)) * s + (cx + dx if k % 2 == 0 else cy + dy), 2)
                  for k, v in enumerate(p)] for p in segmentation]
        found = result(image_id, category if rng.random() < 0.9 else rng.choice(CATEGORIES), moved)
        if found:
            results.append(found)
    for _ in range(rng.randint(0, 3)):
        found = result(image_id, rng.choice(CATEGORIES), [polygon(rng.uniform(0, W), rng.uniform(0, H), 30)])
        if found:
            results.append(found)

out.mkdir(parents=True, exist_ok=True)
(out / "instances.json").write_text(json.dumps(
    {"images": image_list, "annotations": annotations,
     "categories": [{"id": c, "name": f"class {c}"} for c in CATEGORIES]}, separators=(",", ":")))
(out / "results.json").write_text(json.dumps(results, separators=(",", ":")))
print(json.dumps({"images": images, "annotations": len(annotations), "detections": len(results)}))
