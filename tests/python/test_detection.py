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
