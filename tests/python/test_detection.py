"""Detection runs through the real server and the Python client: a COCO dataset's boxes,
a COCO results list uploaded with `upload_predictions`, the run's per-slice COCO numbers
and slice tests, and the boxes in SQL."""

import json
from pathlib import Path

import pytest

from conftest import Server, png_bytes, run
from slicetest import Client, SlicetestError

# Three 64x48 images; "person" boxes, one of them small, and a car.
INSTANCES = {
    "images": [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}, {"id": 3, "file_name": "c.png"}],
    "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 40, 40], "area": 1600, "iscrowd": 0},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 10, 4, 4], "area": 16, "iscrowd": 0},
        {"id": 3, "image_id": 3, "category_id": 3, "bbox": [0, 0, 40, 20], "area": 800, "iscrowd": 0},
    ],
}
# The person in a.png and the car are found; the small person in b.png is missed, and a
# false car appears in b.png.
RESULTS = [
    {"image_id": 1, "category_id": 1, "bbox": [2, 2, 40, 40], "score": 0.9},
    {"image_id": 3, "category_id": 3, "bbox": [0, 0, 40, 20], "score": 0.8},
    {"image_id": 2, "category_id": 3, "bbox": [30, 20, 10, 10], "score": 0.7},
]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("detection")
    src = root / "src"
    src.mkdir()
    for i, name in enumerate(["a.png", "b.png", "c.png"]):
        (src / name).write_bytes(png_bytes(64, 48, i))
    (src / "instances.json").write_text(json.dumps(INSTANCES))
    workspace = root / "ws"
    run(workspace, "init")
    run(workspace, "ingest", "-d", "street", "--quiet", str(src / "instances.json"))
    run(workspace, "slice", "create", "tiny-people", "--min-class-recall", "person=0.5", "--min-samples", "1",
        "SELECT DISTINCT image_id FROM objects WHERE category = 'person' AND w * h < 32 * 32")
    run(workspace, "slice", "freeze", "tiny-people")
    server = Server(workspace)
    yield Client(server.url)
    assert server.stop() == 0


def test_a_coco_results_list_is_a_detection_run_scored_per_slice(client):
    manifest = client.upload_predictions("det", RESULTS, model="det", model_version="1")
    assert manifest["task"] == "detection" and manifest["predictions"] == 3
    boxes = client.sql("SELECT image_id, category, score FROM predicted_objects WHERE run = 'det' ORDER BY score DESC")
    assert boxes.to_pydict() == {"image_id": ["a.png", "c.png", "b.png"], "category": ["person", "car", "car"],
                                 "score": [0.9, 0.8, 0.7]}
    objects = client.sql("SELECT count(*) AS n FROM objects WHERE category = 'person'").to_pydict()
    assert objects == {"n": [2]}

    report = client.report("det")
    overall = report["overall"]["detection"]
    # pycocotools on these files: person AP 0.5 (1 of 2 found, precision 1), car AP 1.0
    # at every threshold (the false car scores lower than the true one).
    assert overall["images"] == 3 and overall["objects"] == 3
    classes = {c["category"]: c for c in overall["classes"]}
    assert classes["person"]["ap50"] == pytest.approx(0.504950495049505, abs=1e-12)
    assert classes["car"]["ap50"] == pytest.approx(1.0, abs=1e-12)
    tiny = next(s for s in report["slices"] if s["slice"] == "tiny-people")
    assert tiny["detection"]["images"] == 1
    assert tiny["checks"] == [{"metric": "recall.person", "value": 0.0, "threshold": 0.5, "passed": False}]
    verdicts = client.test("det")
    assert verdicts["passed"] is False and verdicts["failing"] == ["tiny-people"]


def test_a_detection_on_an_unknown_category_is_refused_whole(client):
    bad = RESULTS + [{"image_id": 1, "category_id": 99, "bbox": [0, 0, 1, 1], "score": 0.1}]
    with pytest.raises(SlicetestError) as err:
        client.upload_predictions("bad", bad, model="det", model_version="1")
    assert err.value.status == 422 and "detection #3: category id 99" in str(err.value)
    assert all(r["run"] != "bad" for r in client.runs())


def test_corners_given_as_sizes_are_scored_as_given_and_warned_of(client):
    # The same boxes as RESULTS, as [x0, y0, x1, y1]: most reach past their 64x48 images.
    corners = [{**r, "bbox": [r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]}
               for r in RESULTS]
    with pytest.warns(UserWarning, match=r"run corners: 1 of 3 boxes reach past their image"):
        manifest = client.upload_predictions("corners", corners, model="det", model_version="1")
    assert manifest["predictions"] == 3 and "[x, y, width, height]" in manifest["warnings"][0]
    # Boxes inside their images: no warning.
    import warnings as python_warnings
    with python_warnings.catch_warnings():
        python_warnings.simplefilter("error")
        assert "warnings" not in client.upload_predictions("inside", RESULTS, model="det", model_version="1")


SEGM_FIXTURES = Path(__file__).resolve().parents[2] / "engine" / "tests" / "fixtures" / "coco_segm"


def test_instance_masks_get_mask_ap_as_pycocotools_computes_it(tmp_path):
    """A COCO file with polygon masks and Mask R-CNN-style results with RLE masks, through
    the server and the client: every mask statistic, on all images and on a slice, equals
    pycocotools' `segm` evaluation run here on the same files, and a `min_mask_map` slice
    test set from Python decides the slice's verdict."""
    from pycocotools.coco import COCO  # the reference, in tests/python/requirements.txt
    from pycocotools.cocoeval import COCOeval

    instances = json.loads((SEGM_FIXTURES / "instances.json").read_text())
    results = json.loads((SEGM_FIXTURES / "results.json").read_text())
    src = tmp_path / "src"
    src.mkdir()
    for i, image in enumerate(instances["images"]):
        (src / image["file_name"]).write_bytes(png_bytes(image["width"], image["height"], i))
    (src / "instances.json").write_text(json.dumps(instances))
    workspace = tmp_path / "ws"
    run(workspace, "init")
    run(workspace, "ingest", "-d", "shapes", "--quiet", str(src / "instances.json"))
    server = Server(workspace)
    try:
        client = Client(server.url)
        client.create_slice("thirds", "SELECT image_id FROM images WHERE coco_id % 3 = 0",
                            min_samples=1, min_mask_map=0.9)
        client.freeze("thirds")
        with pytest.raises(SlicetestError, match="min_mask_mAP|unknown field"):
            client.create_slice("typo", "SELECT image_id FROM images", min_mask_mAP=0.5)
        manifest = client.upload_predictions("mask-rcnn", results, model="mask-rcnn", model_version="1")
        assert manifest["task"] == "detection"
        masks = client.sql("SELECT count(segmentation) AS n FROM predicted_objects").to_pydict()
        assert masks == {"n": [len(results)]}

        def segm(image_ids=None):
            gt = COCO()
            gt.dataset = json.loads(json.dumps(instances))
            gt.createIndex()
            masks_only = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
            ev = COCOeval(gt, gt.loadRes(masks_only), "segm")
            if image_ids is not None:
                ev.params.imgIds = sorted(image_ids)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
            return [float(s) for s in ev.stats]

        names = ["ap", "ap50", "ap75", "ap_small", "ap_medium", "ap_large",
                 "ar1", "ar10", "ar100", "ar_small", "ar_medium", "ar_large"]
        report = client.report("mask-rcnn")
        got = report["overall"]["detection"]["mask"]
        assert [-1.0 if got[n] is None else got[n] for n in names] == segm()
        thirds = next(s for s in report["slices"] if s["slice"] == "thirds")
        got = thirds["detection"]["mask"]
        ids = [im["id"] for im in instances["images"] if im["id"] % 3 == 0]
        assert [-1.0 if got[n] is None else got[n] for n in names] == segm(ids)
        assert thirds["checks"] == [{"metric": "mask mAP", "value": got["ap"], "threshold": 0.9, "passed": False}]
        verdicts = client.test("mask-rcnn")
        slice_verdict = next(s for s in verdicts["slices"] if s["slice"] == "thirds")
        assert verdicts["failing"] == ["thirds"] and slice_verdict["mask_map"] == got["ap"]

        # The same results as a DataFrame (sent as Parquet: bbox a list column, each RLE a
        # struct of size and counts) are the same run.
        import pandas as pd

        client.upload_predictions("mask-rcnn-df", pd.DataFrame(results), model="mask-rcnn", model_version="1")
        from_frame = client.report("mask-rcnn-df")["overall"]["detection"]
        assert from_frame["mask"] == report["overall"]["detection"]["mask"]
        assert from_frame["coco"] == report["overall"]["detection"]["coco"]

        # pycocotools' own segm input, masks without boxes, is instances when told so: each
        # detection is boxed by its mask, and mask AP is pycocotools' on that very input.
        masks_only = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        with pytest.raises(SlicetestError, match="instances=true"):
            client.upload_predictions("bare", masks_only, model="mask-rcnn", model_version="1")
        client.upload_predictions("bare", masks_only, model="mask-rcnn", model_version="1", instances=True)
        bare = client.report("bare")["overall"]["detection"]["mask"]
        assert [-1.0 if bare[n] is None else bare[n] for n in names] == segm()

        # Against a baseline, a run whose boxes held while every other mask shrank to one
        # pixel fails on its masks' mAP alone.
        worse = json.loads(json.dumps(results))
        for r in worse[::2]:
            height, width = r["segmentation"]["size"]
            r["segmentation"] = {"size": [height, width], "counts": [0, 1, height * width - 1]}
        client.upload_predictions("worse-masks", worse, model="mask-rcnn", model_version="2")
        overall = client.test("worse-masks", baseline="mask-rcnn")["overall"]
        assert overall["regression"]["metric"] == "mAP" and overall["regression"]["delta"] == 0.0
        mask = overall["mask_regression"]
        assert (mask["metric"], mask["significant"]) == ("mask mAP", True) and mask["delta"] < 0, mask
        assert mask["baseline"] == report["overall"]["detection"]["mask"]["ap"]
        assert overall["failed"] and any(r.startswith("mask mAP -0.") for r in overall["reasons"]), overall
        assert client.test("mask-rcnn", baseline="mask-rcnn-df")["overall"]["mask_regression"]["delta"] == 0.0
    finally:
        assert server.stop() == 0


KEYPOINT_FIXTURES = Path(__file__).resolve().parents[2] / "eval" / "tests" / "fixtures" / "coco_keypoints"


def test_poses_get_keypoint_ap_as_pycocotools_computes_it(tmp_path):
    """A COCO person_keypoints file and keypoint R-CNN / YOLO-pose style results, through
    the server and the client: every keypoint statistic, on all images and on a slice,
    equals pycocotools' `keypoints` evaluation run here on the same files (also for the
    results as a DataFrame and without boxes), a `min_keypoint_map` slice test set from
    Python decides the slice's verdict, and a run whose poses got worse regresses."""
    from pycocotools.coco import COCO  # the reference, in tests/python/requirements.txt
    from pycocotools.cocoeval import COCOeval

    instances = json.loads((KEYPOINT_FIXTURES / "instances.json").read_text())
    results = json.loads((KEYPOINT_FIXTURES / "results.json").read_text())
    src = tmp_path / "src"
    src.mkdir()
    for i, image in enumerate(instances["images"]):
        (src / image["file_name"]).write_bytes(png_bytes(image["width"], image["height"], i))
    (src / "person_keypoints.json").write_text(json.dumps(instances))
    workspace = tmp_path / "ws"
    run(workspace, "init")
    run(workspace, "ingest", "-d", "people", "--quiet", str(src / "person_keypoints.json"))
    server = Server(workspace)

    def keypoints(detections, image_ids=None):
        gt = COCO()
        gt.dataset = json.loads(json.dumps(instances))
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(json.loads(json.dumps(detections))), "keypoints")
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        return [float(s) for s in ev.stats]

    names = ["ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large"]

    def stats(got):
        return [-1.0 if got[n] is None else got[n] for n in names]

    try:
        client = Client(server.url)
        client.create_slice("thirds", "SELECT image_id FROM images WHERE coco_id % 3 = 0",
                            min_samples=1, min_keypoint_map=0.9)
        client.freeze("thirds")
        manifest = client.upload_predictions("pose", results, model="yolo-pose", model_version="1")
        assert manifest["task"] == "detection" and not manifest.get("warnings"), manifest
        report = client.report("pose")
        overall = report["overall"]["detection"]
        assert stats(overall["keypoints"]) == keypoints(results)
        thirds = next(s for s in report["slices"] if s["slice"] == "thirds")
        ids = [im["id"] for im in instances["images"] if im["id"] % 3 == 0]
        assert stats(thirds["detection"]["keypoints"]) == keypoints(results, ids)
        ap = thirds["detection"]["keypoints"]["ap"]
        assert thirds["checks"] == [{"metric": "keypoint AP", "value": ap, "threshold": 0.9, "passed": False}]
        verdicts = client.test("pose")
        assert verdicts["failing"] == ["thirds"]
        assert next(s for s in verdicts["slices"] if s["slice"] == "thirds")["keypoint_map"] == ap

        # As a DataFrame (sent as Parquet: bbox and keypoints list columns), and without
        # boxes (each pose boxed by its keypoints, as loadRes does).
        import pandas as pd

        client.upload_predictions("pose-df", pd.DataFrame(results), model="yolo-pose", model_version="1")
        assert client.report("pose-df")["overall"]["detection"]["keypoints"] == overall["keypoints"]
        bare = [{k: v for k, v in r.items() if k != "bbox"} for r in results]
        assert not client.upload_predictions("pose-bare", bare, model="yolo-pose", model_version="1").get("warnings")
        assert stats(client.report("pose-bare")["overall"]["detection"]["keypoints"]) == keypoints(bare)

        # Every other pose moved far off, boxes as they were: a keypoint AP regression only.
        worse = json.loads(json.dumps(results))
        for r in worse[::2]:
            r["keypoints"] = [v + 500 if k % 3 == 0 else v for k, v in enumerate(r["keypoints"])]
        client.upload_predictions("worse-poses", worse, model="yolo-pose", model_version="2")
        versus = client.test("worse-poses", baseline="pose")["overall"]
        assert versus["regression"]["delta"] == 0.0 and versus["mask_regression"] is None
        change = versus["keypoint_regression"]
        assert (change["metric"], change["significant"]) == ("keypoint AP", True) and change["delta"] < 0, change
        assert change["baseline"] == overall["keypoints"]["ap"]
        assert versus["failed"] and any(r.startswith("keypoint AP -0.") for r in versus["reasons"]), versus
    finally:
        assert server.stop() == 0
