"""An Ultralytics YOLO segmentation dataset (data.yaml, images/, labels/) ingested with the
CLI, and a model's predictions uploaded as Ultralytics writes them — a folder of
`predict(save_txt=True, save_conf=True)` label files, and `val(save_json=True)`'s
predictions.json — scored through the real server. The reference is pycocotools on the
same data converted to COCO here, by YOLO's conventions: a polygon of fractions of the
image's size, its extent for the box, its rasterised area for the object's area."""

import json
import random
from math import cos, pi, sin

from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from conftest import Server, png_bytes, run, sql_arrow
from slicetest import Client

NAMES = ["person", "car", "dog"]
STATS = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
         "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]


def polygon(rng, cx, cy, rx, ry):
    """A convex polygon of fractions around (cx, cy), kept inside the image."""
    points = []
    for k in range(rng.randint(3, 7)):
        angle = 2 * pi * (k + rng.random() * 0.5) / 7
        points += [round(min(1.0, max(0.0, cx + rx * cos(angle))), 6),
                   round(min(1.0, max(0.0, cy + ry * sin(angle))), 6)]
    return points


def extent(points, width, height):
    """The box of a polygon of fractions, in pixels, as YOLO's segments2boxes makes it."""
    xs, ys = points[0::2], points[1::2]
    x0, y0 = min(xs), min(ys)
    return [x0 * width, y0 * height, (max(xs) - x0) * width, (max(ys) - y0) * height]


def rle(points, width, height):
    pixels = [v * (width if i % 2 == 0 else height) for i, v in enumerate(points)]
    return mask_utils.merge(mask_utils.frPyObjects([pixels], height, width))


def stats(evaluation):
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    return [float(s) for s in evaluation.stats]


def test_a_yolo_dataset_and_its_predictions_score_as_pycocotools_scores_them(tmp_path):
    rng = random.Random(11)
    root = tmp_path / "shapes-seg"
    (root / "images" / "val").mkdir(parents=True)
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "val").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    (root / "data.yaml").write_text(
        "# as Ultralytics writes it\npath: .\ntrain: images/train\nval: images/val\n"
        "names:\n  0: person\n  1: car\n  2: dog\n")
    predicted = tmp_path / "predict" / "labels"
    predicted.mkdir(parents=True)
    truth, detections, sizes = {}, {}, {}
    for n in range(1, 19):
        stem = f"{n:06d}"
        split = "train" if n > 14 else "val"
        width, height = rng.choice([(64, 48), (96, 64), (80, 80)])
        sizes[stem] = (width, height)
        (root / "images" / split / f"{stem}.png").write_bytes(png_bytes(width, height, n))
        objects = [(rng.randrange(3), polygon(rng, rng.uniform(0.25, 0.75), rng.uniform(0.25, 0.75),
                                              rng.uniform(0.05, 0.25), rng.uniform(0.05, 0.25)))
                   for _ in range(rng.randint(0, 4))]
        if objects:  # an image without objects has no label file, as in Ultralytics
            (root / "labels" / split / f"{stem}.txt").write_text(
                "".join(f"{k} {' '.join(map(str, p))}\n" for k, p in objects))
        truth[stem] = objects
        # The model finds most objects a little off, misnames some, and adds a false one.
        found = []
        for k, points in objects:
            if rng.random() < 0.8:
                shift = rng.uniform(-0.03, 0.03)
                moved = [round(min(1.0, max(0.0, v + shift)), 6) for v in points]
                found.append((k if rng.random() < 0.85 else (k + 1) % 3, moved, round(rng.uniform(0.3, 0.99), 5)))
        if rng.random() < 0.5:
            found.append((rng.randrange(3), polygon(rng, 0.5, 0.5, 0.1, 0.1), round(rng.uniform(0.05, 0.5), 5)))
        if split == "val" and found:
            (predicted / f"{stem}.txt").write_text(
                "".join(f"{k} {' '.join(map(str, p))} {conf}\n" for k, p, conf in found))
        detections[stem] = found if split == "val" else []

    workspace = tmp_path / "ws"
    run(workspace, "init")
    out = run(workspace, "ingest", "-d", "shapes", "--quiet", str(root / "data.yaml"))
    assert out.returncode == 0, out.stderr
    splits = sql_arrow(workspace, "SELECT split, count(*) AS n FROM images GROUP BY split ORDER BY split").to_pydict()
    assert splits == {"split": ["train", "val"], "n": [4, 14]}

    # The reference: the same data as COCO, with the YOLO conventions written out here.
    val = [stem for stem in truth if stem <= "000014"]
    gt = {"images": [], "annotations": [], "categories": [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)]}
    for stem in val:
        width, height = sizes[stem]
        gt["images"].append({"id": int(stem), "width": width, "height": height})
        for k, points in truth[stem]:
            pixels = [v * (width if i % 2 == 0 else height) for i, v in enumerate(points)]
            gt["annotations"].append({
                "id": len(gt["annotations"]) + 1, "image_id": int(stem), "category_id": k + 1,
                "bbox": extent(points, width, height), "segmentation": [pixels],
                "area": float(mask_utils.area(rle(points, width, height))), "iscrowd": 0})
    boxes, masks = [], []
    for stem in val:
        width, height = sizes[stem]
        for k, points, conf in detections[stem]:
            boxes.append({"image_id": int(stem), "category_id": k + 1, "bbox": extent(points, width, height),
                          "score": conf})
            mask = rle(points, width, height)
            masks.append({"image_id": int(stem), "category_id": k + 1, "score": conf,
                          "segmentation": {"size": mask["size"], "counts": mask["counts"].decode()}})
    coco = COCO()
    coco.dataset = gt
    coco.createIndex()
    want_boxes = stats(COCOeval(coco, coco.loadRes(json.loads(json.dumps(boxes))), "bbox"))
    want_masks = stats(COCOeval(coco, coco.loadRes(json.loads(json.dumps(masks))), "segm"))
    assert 0.2 < want_boxes[0] < 0.9 and 0.2 < want_masks[0] < 0.9 and want_boxes != want_masks, (want_boxes, want_masks)

    server = Server(workspace)
    try:
        client = Client(server.url)
        client.create_slice("val", "SELECT image_id FROM images WHERE split = 'val'", min_samples=1)
        client.freeze("val")
        # The folder of label files, uploaded from the CLI.
        out = run(workspace, "run", "upload", str(predicted), "--run", "yolo-txt", "--model", "yolo11n-seg")
        assert out.returncode == 0, out.stderr
        report = client.report("yolo-txt")
        got = next(s for s in report["slices"] if s["slice"] == "val")["detection"]
        assert [-1.0 if got["coco"][s] is None else got["coco"][s] for s in STATS] == want_boxes
        assert [-1.0 if got["mask"][s] is None else got["mask"][s] for s in STATS] == want_masks

        # The same folder from Python, by its path: zipped by the client, unpacked by the
        # server, read as the CLI reads it.
        manifest = client.upload_predictions("yolo-http", predicted, model="yolo11n-seg", model_version="1")
        assert manifest["source"] == predicted.name and manifest["task"] == "detection"
        got = next(s for s in client.report("yolo-http")["slices"] if s["slice"] == "val")["detection"]
        assert [-1.0 if got["coco"][s] is None else got["coco"][s] for s in STATS] == want_boxes
        assert [-1.0 if got["mask"][s] is None else got["mask"][s] for s in STATS] == want_masks

        # predictions.json as val(save_json=True) writes it: the stem as a number for
        # image_id, class + 1 for category_id, boxes rounded to 3 places and RLE masks.
        saved = [{"image_id": b["image_id"], "category_id": b["category_id"],
                  "bbox": [round(v, 3) for v in b["bbox"]], "score": b["score"],
                  "segmentation": m["segmentation"]} for b, m in zip(boxes, masks)]
        client.upload_predictions("yolo-json", saved, model="yolo11n-seg", model_version="1")
        got = next(s for s in client.report("yolo-json")["slices"] if s["slice"] == "val")["detection"]
        assert [-1.0 if got["mask"][s] is None else got["mask"][s] for s in STATS] == want_masks
        # ... and the file it is saved in, by its path.
        (tmp_path / "predictions.json").write_text(json.dumps(saved))
        manifest = client.upload_predictions("yolo-file", tmp_path / "predictions.json", model="yolo11n-seg",
                                             model_version="1")
        assert manifest["source"] == "predictions.json"
        by_file = next(s for s in client.report("yolo-file")["slices"] if s["slice"] == "val")["detection"]
        assert by_file["coco"] == got["coco"] and by_file["mask"] == got["mask"]
        rounded = COCOeval(coco, coco.loadRes(json.loads(json.dumps(
            [{k: v for k, v in r.items() if k != "segmentation"} for r in saved]))), "bbox")
        assert [-1.0 if got["coco"][s] is None else got["coco"][s] for s in STATS] == stats(rounded)
    finally:
        assert server.stop() == 0
