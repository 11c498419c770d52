"""Segmentation runs through the real server and the Python client: a COCO file whose
segmentations become a mask set at ingest, per-class RLE results uploaded with
`upload_predictions` (a list, and a table sent as Parquet), scored against the NumPy
reference of `datasets/tests/fixtures/coco_masks/make_reference.py`."""

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

from conftest import REPO, Server, png_bytes, run
from slicetest import Client, SlicetestError, rle_counts, segmentation_results

FIXTURE = REPO / "datasets/tests/fixtures/coco_masks"


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("segmentation")
    src = root / "src"
    src.mkdir()
    instances = json.loads((FIXTURE / "instances.json").read_text())
    for i, image in enumerate(instances["images"]):
        (src / image["file_name"]).write_bytes(png_bytes(image["width"], image["height"], i))
    shutil.copy(FIXTURE / "instances.json", src / "instances.json")
    workspace = root / "ws"
    run(workspace, "init")
    run(workspace, "ingest", "-d", "street", "--quiet", str(src / "instances.json"))
    server = Server(workspace)
    yield Client(server.url)
    assert server.stop() == 0


def test_rle_counts_are_pycocotools_bytes():
    # Values from pycocotools.mask.encode(np.asfortranarray(mask))["counts"].
    a = np.zeros((4, 5), bool)
    a[1:3, 1:4] = True
    assert rle_counts(a) == "5220003"
    assert rle_counts(np.ones((3, 3), bool)) == "09"
    c = np.arange(600).reshape(20, 30) % 7 < 3
    assert rle_counts(c).startswith("022O010O010OO0110O010O01OO10010O010O21NO010O012ON10O010O00O11O")
    assert rle_counts(c).endswith("OO0110O010O01O")


def test_a_coco_results_list_scores_as_numpy_mean_iou(client):
    results = json.loads((FIXTURE / "results.json").read_text())
    expected = json.loads((FIXTURE / "scores.json").read_text())
    manifest = client.upload_predictions("segformer", results, model="segformer", model_version="1")
    assert manifest["task"] == "segmentation" and manifest["predictions"] == 6
    assert manifest["segmentation"]["mask_source"] == "instances"
    scores = client.report("segformer")["overall"]["segmentation"]["scores"]
    assert scores["mean_iou"] == pytest.approx(expected["mean_iou"], abs=1e-12)
    assert scores["pixel_accuracy"] == pytest.approx(expected["pixel_accuracy"], abs=1e-12)
    for ours, theirs in zip(scores["classes"], expected["classes"]):
        assert (ours["tp"], ours["fp"], ours["fn"]) == (theirs["tp"], theirs["fp"], theirs["fn"])


def test_label_maps_encoded_by_the_client_upload_as_a_parquet_table(client):
    semantic = json.loads((FIXTURE / "semantic.json").read_text())
    instances = json.loads((FIXTURE / "instances.json").read_text())
    rows = []
    for image in instances["images"]:
        truth = np.array(semantic[image["file_name"]]["labels"]).reshape(image["height"], image["width"])
        rows += segmentation_results(image["id"], truth)
    table = pa.table({
        "image_id": [r["image_id"] for r in rows],
        "category_id": [r["category_id"] for r in rows],
        "counts": [r["segmentation"]["counts"] for r in rows],
        "height": [r["segmentation"]["size"][0] for r in rows],
        "width": [r["segmentation"]["size"][1] for r in rows],
    })
    client.upload_predictions("perfect", table, model="oracle", model_version="1", mask_source="instances")
    scores = client.report("perfect")["overall"]["segmentation"]["scores"]
    assert (scores["mean_iou"], scores["pixel_accuracy"]) == (1.0, 1.0)


def test_overlapping_class_masks_are_refused_and_nothing_is_written(client):
    results = json.loads((FIXTURE / "results.json").read_text())
    twin = dict(results[0], category_id=2 if results[0]["category_id"] != 2 else 1)
    with pytest.raises(SlicetestError) as error:
        client.upload_predictions("overlap", results + [twin], model="m", model_version="1")
    assert error.value.status == 422 and "in the masks of two classes" in error.value.message
    assert "overlap" not in [r["run"] for r in client.runs()]
