"""The README's demo, end to end, on the real Fashion-MNIST package (70,000 images)."""

from pathlib import Path

import pytest

from conftest import run, sql_arrow

FASHION = Path("/usr/share/datasets/fashion-mnist")
CLASSES = ["Ankle boot", "Bag", "Coat", "Dress", "Pullover", "Sandal", "Shirt", "Sneaker", "T-shirt/top", "Trouser"]


@pytest.fixture(scope="module")
def demo_workspace(tmp_path_factory, binary):
    if not (FASHION / "train-images-idx3-ubyte.gz").exists():
        pytest.fail("Debian package dataset-fashion-mnist is not installed (scripts/install-deps.sh installs it)")
    ws = tmp_path_factory.mktemp("demo") / "ws"
    proc = run(ws, "demo")
    return ws, proc.stdout.decode()


def test_demo_ingests_all_70000_images_with_the_right_counts(demo_workspace):
    ws, out = demo_workspace
    assert "version 1 published with 70000 images" in out, out
    table = sql_arrow(ws, "SELECT label, split, count(*) AS n FROM images GROUP BY 1, 2 ORDER BY 1, 2")
    rows = list(zip(*(table.column(i).to_pylist() for i in range(3))))
    expected = [(c, s, 1000 if s == "test" else 6000) for c in CLASSES for s in ["test", "train"]]
    assert rows == expected
    # The demo printed the same 20 counts as a table.
    for c in CLASSES:
        assert c in out


def test_demo_images_are_real_28x28_pngs_inside_the_workspace(demo_workspace):
    ws, _ = demo_workspace
    t = sql_arrow(ws, "SELECT min(width), max(height), count(DISTINCT format), min(uri) FROM images")
    assert t.column(0)[0].as_py() == 28 and t.column(1)[0].as_py() == 28
    assert t.column(2)[0].as_py() == 1
    uri = t.column(3)[0].as_py()
    png = ws / uri
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_running_the_demo_again_changes_nothing(demo_workspace):
    ws, _ = demo_workspace
    out = run(ws, "demo").stdout.decode()
    assert "unchanged, still version 1 with 70000 images" in out, out


def test_demo_freezes_its_slices_with_a_stable_holdout(demo_workspace):
    ws, out = demo_workspace
    assert "tops: frozen as version 1 with 28000 members" in out, out
    assert "footwear: frozen as version 1 with 21000 members" in out, out
    t = sql_arrow(ws, "SELECT holdout, count(*) AS n FROM slice('tops') GROUP BY holdout ORDER BY holdout")
    counts = dict(zip(t.column(0).to_pylist(), t.column(1).to_pylist()))
    assert counts[False] + counts[True] == 28000
    assert abs(counts[True] / 28000 - 0.2) < 0.01, counts
    # Running the demo again freezes nothing new.
    again = run(ws, "demo").stdout.decode()
    assert "tops: unchanged, still version 1" in again, again


def test_demo_trains_two_real_models_and_reports_on_them(demo_workspace):
    """The runs come from classifiers trained in the demo, not from a script: the MLP beats
    the linear baseline, both are far above chance (10%), Shirt is the hardest class, and
    the demo's report has the tops slice failing its 80% threshold."""
    import json

    ws, out = demo_workspace
    assert "linear: fashion-linear" in out and "mlp: fashion-mlp" in out, out
    report = json.loads(run(ws, "report", "--run", "mlp", "--baseline", "linear", "--format", "json").stdout)
    baseline = json.loads(run(ws, "report", "--run", "linear", "--format", "json").stdout)
    acc = report["overall"]["classification"]["accuracy"]
    base_acc = baseline["overall"]["classification"]["accuracy"]
    assert report["overall"]["scored"] == 10000
    assert 0.84 <= acc["value"] <= 0.95, acc
    assert 0.6 <= base_acc["value"] < acc["value"], (base_acc, acc)
    assert report["overall"]["regression"]["delta"] > 0 and not report["overall"]["regression"]["significant"]
    recall = {c["label"]: c["recall"] for c in report["overall"]["classification"]["per_class"]}
    assert min(recall, key=recall.get) == "Shirt", recall
    verdicts = {s["slice"]: s["verdict"] for s in report["slices"]}
    assert verdicts == {"tops": "fail", "footwear": "pass"}, verdicts
    assert "failing slices: tops" in out, out
    html = (ws / "reports" / "mlp.html").read_text()
    assert 'data-slice="tops"' in html and "<svg" in html
    # A failing slice makes `slicetest test` exit non-zero, as CI needs.
    proc = run(ws, "test", "--run", "mlp", "--baseline", "linear", check=False)
    assert proc.returncode == 1 and b"tops" in proc.stderr


def test_the_demo_does_not_retrain_existing_runs(demo_workspace):
    ws, _ = demo_workspace
    again = run(ws, "demo").stdout.decode()
    assert "mlp: already uploaded" in again and "linear: already uploaded" in again, again


def test_the_demo_prints_what_the_readme_promises_on_every_machine(demo_workspace):
    """Training is a pure function of data and seed (fixed arithmetic order, any CPU, any
    thread count), so the README can quote exact numbers and this test can pin them."""
    _, out = demo_workspace
    assert "test accuracy 74.7%" in out and "test accuracy 86.9%" in out, out
    assert "| tops     | 4000  | 74.7% [73.3, 76.0] | 0.766" in out, out
    assert "| footwear | 3000  | 94.9% [94.0, 95.6] | 0.949" in out, out
    # Discovery finds the Shirt failure by itself and confirms it on held-apart images,
    # the surely-worst (high-contrast shirts) first.
    assert "| 1 | label = 'Shirt'         | 104 / 116              | 44.0% [35.3%, 53.0%]" in out, out
    assert "| 2 | label = 'Shirt'         | 506 / 494              | 34.2% [30.2%, 38.5%]" in out, out
    assert "| 3 | label = 'Pullover'      | 485 / 515              | 28.5% [24.8%, 32.6%]" in out, out
    assert "candidates tested on the confirmation half at FDR 0.05" in out, out


def test_the_demo_trains_a_detector_and_its_small_garments_and_tops_fail(demo_workspace):
    """The detection part: canvases of garments ingested as a COCO dataset, a detector and a
    baseline trained on the CPU (reproducible like the classifiers, so the numbers are
    pinned), and per-slice COCO metrics in which small garments and tops fail."""
    import json

    ws, out = demo_workspace
    assert "fashion_canvases: version 1 published with 1000 images" in out, out
    assert "| canvas_small_garments | 342    | 1001    | 0.363 [0.350, 0.389]" in out, out
    assert "| canvas_large_garments | 380    | 728     | 0.500 [0.484, 0.531]" in out, out
    assert "failing slices: canvas_small_garments, canvas_tops" in out, out
    report = json.loads(run(ws, "report", "--run", "canvas_detector", "--format", "json").stdout)
    detection = report["overall"]["detection"]
    assert detection["images"] == 1000 and detection["objects"] == 2474
    labels = detection["confusion"]["labels"]
    shirt, coat = labels.index("Shirt"), labels.index("Coat")
    assert detection["confusion"]["counts"][shirt][coat] > 0, "shirts are taken for coats"
    html = (ws / "reports" / "canvas_detector.html").read_text()
    assert 'id="map-chart"' in html and "<th>background</th>" in html


def test_every_kernel_path_and_thread_count_uploads_the_same_bytes(demo_workspace, tmp_path):
    """The demo again with the portable kernel on one thread: the uploaded predictions are
    byte-identical to the first run's (which took the fastest path this CPU has), and
    run.json records the CPU and the path."""
    import json
    import os
    import subprocess

    from conftest import slicetest_bin

    ws, _ = demo_workspace
    other = tmp_path / "ws"
    env = {**os.environ, "SLICETEST_KERNEL": "portable", "RAYON_NUM_THREADS": "1"}
    # The detection part is left out: its bytes on every kernel path and thread count are
    # the detector's own unit tests (slicetest_embed::detector), and it would train for
    # minutes more on the portable path with one thread.
    proc = subprocess.run(
        [slicetest_bin(), "--workspace", str(other), "demo", "--skip-detection"], capture_output=True, env=env, timeout=900
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    for run_name in ["linear", "mlp"]:
        first = json.loads((ws / "runs" / run_name / "run.json").read_text())
        second = json.loads((other / "runs" / run_name / "run.json").read_text())
        assert second["provenance"]["kernel"].startswith("portable"), second["provenance"]
        assert first["provenance"]["cpu"] and "[" in first["provenance"]["cpu"]
        assert first["parquet_sha256"] == second["parquet_sha256"], (run_name, first["provenance"], second["provenance"])
