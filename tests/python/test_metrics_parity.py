"""Per-slice metrics equal scikit-learn's on the same predictions, through the real CLI.

A workspace of 240 labelled PNGs gets slices (including the edge cases: empty, one
sample, all correct, all wrong, a class absent), two runs are uploaded, and the JSON
report is compared with scikit-learn computed here from the same files. Slice tests,
regressions, the exit code, JUnit XML and the HTML report (rendered in headless Chromium)
are checked on the same workspace.
"""

import csv
import json
import re
from html import escape
import random
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, log_loss, precision_recall_fscore_support

from conftest import png_bytes, run

CLASSES = ["bird", "cat", "dog", "fish"]
N = 240


def build(root: Path, ws: Path) -> dict:
    rng = random.Random(11)
    (root / "imgs").mkdir(parents=True)
    truth = {}
    with open(root / "images.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "split", "group"])
        for i in range(N):
            name = f"img_{i:03d}.png"
            (root / "imgs" / name).write_bytes(png_bytes(3, 3, i))
            label = CLASSES[i % 4] if i < 200 else rng.choice(CLASSES[:3])
            truth[f"imgs/{name}"] = label
            w.writerow([f"imgs/{name}", label, "test", i // 40])
    run(ws, "init")
    run(ws, "ingest", "--quiet", "-d", "pets", str(root / "images.csv"))
    slices = {
        "group0": ("SELECT image_id FROM images WHERE \"group\" = 0", ["--min-accuracy", "0.5"]),
        "no_fish": ("SELECT image_id FROM images WHERE label <> 'fish'", []),
        "empty": ("SELECT image_id FROM images WHERE label = 'zebra'", ["--min-accuracy", "0.9"]),
        "one": ("SELECT image_id FROM images WHERE image_id = 'imgs/img_007.png'", ["--min-samples", "1", "--min-accuracy", "0.5"]),
        "perfect": ("SELECT image_id FROM images WHERE \"group\" = 1", ["--min-accuracy", "0.99"]),
        "hopeless": ("SELECT image_id FROM images WHERE \"group\" = 2", ["--min-accuracy", "0.5"]),
        "everything": ("SELECT image_id FROM images", ["--min-accuracy", "0.1"]),
    }
    for name, (query, flags) in slices.items():
        run(ws, "slice", "create", name, query, *flags)
        run(ws, "slice", "freeze", name)
    return truth


def predictions(truth: dict, seed: int, accuracy: float) -> list:
    rng = np.random.default_rng(seed)
    rows = []
    for i, (image_id, label) in enumerate(sorted(truth.items())):
        group = i // 40
        if group == 1:
            predicted = label
        elif group == 2:
            predicted = CLASSES[(CLASSES.index(label) + 1) % 4]
        else:
            predicted = label if rng.random() < accuracy else CLASSES[rng.integers(4)]
        p = rng.dirichlet(np.ones(4) * 0.5)
        p[CLASSES.index(predicted)] += 2.0  # the prediction is the most probable class
        p = np.round(p / p.sum(), 6)
        p[-1] = round(1.0 - p[:-1].sum(), 6)
        rows.append((image_id, predicted, p, float(rng.random())))
    return rows


def write_predictions(path: Path, rows: list) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "predicted", "score"] + [f"prob_{c}" for c in CLASSES])
        for image_id, predicted, p, score in rows:
            w.writerow([image_id, predicted, score] + [f"{x:.6f}" for x in p])


@pytest.fixture(scope="module")
def scored(tmp_path_factory, binary):
    root = tmp_path_factory.mktemp("metrics")
    ws = root / "ws"
    truth = build(root, ws)
    good, bad = predictions(truth, 1, 0.85), predictions(truth, 2, 0.45)
    write_predictions(root / "good.csv", good)
    write_predictions(root / "bad.csv", bad)
    run(ws, "run", "upload", str(root / "good.csv"), "--run", "good", "--model", "m", "--model-version", "2")
    run(ws, "run", "upload", str(root / "bad.csv"), "--run", "bad", "--model", "m", "--model-version", "1")
    report = json.loads(run(ws, "report", "--run", "good", "--format", "json").stdout)
    return root, ws, truth, {r[0]: r for r in good}, report


def members(ws: Path, slice_name: str) -> list:
    out = run(ws, "sql", "--format", "csv", f"SELECT image_id FROM slice('{slice_name}') ORDER BY image_id").stdout
    return out.decode().split()[1:]


@pytest.mark.parametrize("slice_name", ["group0", "no_fish", "one", "perfect", "hopeless", "everything"])
def test_slice_metrics_equal_scikit_learn(scored, slice_name):
    _, ws, truth, preds, report = scored
    s = next(x for x in report["slices"] if x["slice"] == slice_name)
    ids = members(ws, slice_name)
    y_true = [truth[i] for i in ids]
    y_pred = [preds[i][1] for i in ids]
    c = s["classification"]
    assert s["scored"] == len(ids)
    assert c["accuracy"]["value"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)
    labels = sorted(set(y_true) | set(y_pred))
    assert c["labels"] == labels
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    assert [x["precision"] for x in c["per_class"]] == pytest.approx(list(p), abs=1e-12)
    assert [x["recall"] for x in c["per_class"]] == pytest.approx(list(r), abs=1e-12)
    assert [x["f1"] for x in c["per_class"]] == pytest.approx(list(f), abs=1e-12)
    assert [x["support"] for x in c["per_class"]] == list(support)
    # Macro-F1 averages over the slice's true classes only (labels = classes in y_true).
    macro = f1_score(y_true, y_pred, labels=sorted(set(y_true)), average="macro", zero_division=0) if ids else None
    assert c["macro_f1"]["value"] == pytest.approx(macro, abs=1e-12)
    probs = np.array([preds[i][2] for i in ids])
    assert s["log_loss"]["value"] == pytest.approx(log_loss(y_true, probs, labels=CLASSES), rel=1e-5)
    assert s["mean_score"]["value"] == pytest.approx(np.mean([preds[i][3] for i in ids]), abs=1e-12)
    # ECE (no scikit-learn function): 15 equal-width confidence bins, right-closed.
    conf = probs.max(axis=1)
    correct = np.array(y_true) == np.array(y_pred)
    bins = np.clip(np.ceil(conf * 15).astype(int), 1, 15) - 1
    ece = sum(
        (bins == b).mean() * abs(correct[bins == b].mean() - conf[bins == b].mean()) for b in range(15) if (bins == b).any()
    )
    assert s["ece"]["value"] == pytest.approx(ece, abs=1e-9)


def test_macro_f1_leaves_out_classes_that_are_only_predicted(scored):
    """In `no_fish` the model predicts fish for some images: fish stays in the confusion
    matrix and the per-class table (support 0), but not in the macro average."""
    _, ws, truth, preds, report = scored
    s = next(x for x in report["slices"] if x["slice"] == "no_fish")
    ids = members(ws, "no_fish")
    y_true = [truth[i] for i in ids]
    y_pred = [preds[i][1] for i in ids]
    c = s["classification"]
    assert "fish" in c["labels"] and "fish" not in y_true
    assert next(x for x in c["per_class"] if x["label"] == "fish")["support"] == 0
    union = f1_score(y_true, y_pred, average="macro", zero_division=0)
    present = f1_score(y_true, y_pred, labels=["bird", "cat", "dog"], average="macro", zero_division=0)
    assert c["macro_f1"]["value"] == pytest.approx(present, abs=1e-12)
    assert present > union + 0.1, "the old definition would read visibly lower"


def test_verdicts_on_edge_cases(scored):
    _, _, _, _, report = scored
    verdict = {s["slice"]: s["verdict"] for s in report["slices"]}
    assert verdict["empty"] == "not-enough-data"
    assert verdict["perfect"] == "pass"
    assert verdict["hopeless"] == "fail"
    assert verdict["no_fish"] == "no-threshold"
    one = next(s for s in report["slices"] if s["slice"] == "one")
    assert one["scored"] == 1 and one["verdict"] in ("pass", "fail")
    assert one["classification"]["accuracy"]["low"] >= 0 and one["classification"]["accuracy"]["high"] <= 1
    no_fish = next(s for s in report["slices"] if s["slice"] == "no_fish")
    assert "fish" not in [c["label"] for c in no_fish["classification"]["per_class"] if c["support"] > 0]
    # Worst first: failures lead the report.
    assert report["slices"][0]["slice"] == "hopeless"


def test_slice_tests_fail_the_build_and_write_junit(scored):
    root, ws, _, _, _ = scored
    junit = root / "junit.xml"
    proc = run(ws, "test", "--run", "good", "--junit", str(junit), check=False)
    assert proc.returncode != 0
    assert b"hopeless" in proc.stderr
    suite = ET.parse(junit).getroot()
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert len(cases) == 7
    assert cases["hopeless"].find("failure") is not None
    assert cases["empty"].find("skipped") is not None
    assert cases["perfect"].find("failure") is None


def test_a_significant_drop_against_the_baseline_is_a_regression(scored):
    _, ws, _, _, _ = scored
    report = json.loads(run(ws, "report", "--run", "bad", "--baseline", "good", "--format", "json").stdout)
    everything = next(s for s in report["slices"] if s["slice"] == "everything")
    assert everything["regression"]["significant"] is True
    assert everything["regression"]["delta"] < -0.1
    perfect = next(s for s in report["slices"] if s["slice"] == "perfect")
    assert perfect["regression"]["significant"] is False and perfect["regression"]["delta"] == 0
    # The other way round nothing regresses.
    report = json.loads(run(ws, "report", "--run", "good", "--baseline", "bad", "--format", "json").stdout)
    assert not any(s["regression"] and s["regression"]["significant"] for s in report["slices"])


def test_bad_uploads_are_rejected_with_located_errors_and_write_nothing(scored):
    root, ws, truth, preds, _ = scored
    rows = list(preds.values())
    bad = root / "broken.csv"
    with open(bad, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image_id", "predicted", "score"] + [f"prob_{c}" for c in CLASSES])
        w.writerow(["imgs/nope.png", "cat", 0.1, 0.25, 0.25, 0.25, 0.25])
        w.writerow([rows[0][0], "cat", "NaN", 0.25, 0.25, 0.25, 0.25])
        w.writerow([rows[0][0], "cat", 0.1, 0.25, 0.25, 0.25, 0.25])
        w.writerow([rows[1][0], "zebra", 0.1, 0.25, 0.25, 0.25, 0.25])
        w.writerow([rows[2][0], "cat", 0.1, 0.5, 0.5, 0.5, 0.5])
    proc = run(ws, "run", "upload", str(bad), "--run", "broken", "--model", "m", check=False)
    err = proc.stderr.decode()
    assert proc.returncode != 0
    assert 'row 1 (image_id "imgs/nope.png"): no such image in the dataset' in err, err
    assert "row 2" in err and "score is NaN" in err, err
    assert "row 3" in err and "duplicate of row 2" in err, err
    assert 'predicted label "zebra" is not a label of the dataset' in err, err
    assert "probabilities sum to 2.000000" in err, err
    assert not (ws / "runs" / "broken").exists()
    listing = run(ws, "run", "list").stdout.decode()
    assert "broken" not in listing and "good" in listing


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("Debian's chromium is not installed (scripts/install-deps.sh --all installs it)")
    profile = tmp / "chromium-profile"
    return subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, timeout=120)


def test_the_html_report_renders_in_chromium(scored):
    root, ws, _, _, _ = scored
    html = root / "report.html"
    run(ws, "report", "--run", "bad", "--baseline", "good", "--format", "html", "--output", str(html))
    text = html.read_text()
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "") and "<script" not in text, "self-contained"

    dom = chromium(root, "--dump-dom", html.as_uri()).stdout.decode()
    assert 'id="accuracy-chart"' in dom
    assert dom.count('class="bar"') == 6, "one bar per slice with an accuracy (the empty one has none)"
    assert dom.count('class="threshold"') == 5, "a threshold line per slice with an accuracy and a threshold"
    assert 'class="baseline"' in dom and "▼" in dom, "baseline ticks and the regression marker"
    assert dom.count('<section class="slice') == 7
    assert dom.count('class="confusion"') >= 6
    assert dom.count('<figure class="failure"><img src="data:image/png;base64,') >= 10, "embedded thumbnails"
    assert 'data-slice="hopeless"' in dom and "pass" in dom and "fail" in dom
    # The slices `slicetest discover` confirms (default settings), one row each, with their query.
    found = json.loads(run(ws, "discover", "--run", "bad", "--format", "json").stdout)
    confirmed = [s for s in found["slices"] if s["confirmed"]]
    assert "<h2>Discovered slices</h2>" in dom
    assert dom.count('<tr class="discovered">') == len(confirmed)
    assert ('id="no-discovered-slices"' in dom) == (not confirmed), "an empty list says why"
    for s in confirmed:
        assert f"<code>{escape(s['query'], quote=False)}</code>" in dom, s["query"]

    png = root / "report.png"
    proc = chromium(root, "--window-size=1200,1600", f"--screenshot={png}", html.as_uri())
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000, "a real rendered page"


def test_each_slice_metric_is_a_column_of_the_table_and_of_the_html_report(scored):
    """The metrics of engine/src/scoring.rs's SLICE_METRICS list: each is a column of the
    terminal table and of the HTML report's slice table, with the JSON report's value."""
    root, ws, _, _, report = scored
    table = run(ws, "report", "--run", "good").stdout.decode()
    header = next(line for line in table.splitlines() if "accuracy" in line)
    html_file = root / "good.html"
    run(ws, "report", "--run", "good", "--format", "html", "--output", str(html_file))
    html = html_file.read_text()
    slice_table = html[html.index('<table id="slice-table">'):]
    slice_table = slice_table[:slice_table.index("</table>")]
    overall = report["overall"]
    metrics = [("macro-F1", overall["classification"]["macro_f1"]), ("log-loss", overall["log_loss"]), ("ECE", overall["ece"])]
    for name, estimate in metrics:
        assert name in header, header
        assert f"{estimate['value']:.3f}" in table, (name, table)
        assert re.search(rf'<th title="[^"]+">{re.escape(name)}</th>', slice_table), (name, slice_table[:600])
        assert f"<td>{estimate['value']:.3f}<br>" in slice_table, name


def test_per_class_intervals_contain_their_estimates(scored):
    _, _, _, _, report = scored
    for s in report["slices"]:
        for c in (s["classification"] or {}).get("per_class", []):
            lo, hi = c["precision_interval"]
            assert 0 <= lo <= c["precision"] + 1e-12 and c["precision"] <= hi + 1e-12 <= 1 + 1e-12
            lo, hi = c["recall_interval"]
            assert 0 <= lo <= c["recall"] + 1e-12 and c["recall"] <= hi + 1e-12 <= 1 + 1e-12


def numpy_bootstrap(n: int, statistic, resamples: int = 4000, seed: int = 5) -> tuple:
    """A plain percentile bootstrap, the textbook reference for slicetest's intervals."""
    rng = np.random.default_rng(seed)
    draws = [statistic(rng.integers(0, n, n)) for _ in range(resamples)]
    return tuple(np.nanpercentile(draws, [2.5, 97.5]))


@pytest.mark.parametrize("slice_name", ["everything", "group0"])
def test_bootstrap_intervals_agree_with_a_reference_bootstrap(scored, slice_name):
    """Macro-F1 and log-loss intervals match a numpy bootstrap of the same samples up to
    Monte-Carlo error (different generators: equal in distribution, not bit for bit)."""
    _, ws, truth, preds, report = scored
    s = next(x for x in report["slices"] if x["slice"] == slice_name)
    ids = members(ws, slice_name)
    y_true = np.array([truth[i] for i in ids])
    y_pred = np.array([preds[i][1] for i in ids])
    probs = np.array([preds[i][2] for i in ids])
    losses = -np.log(np.clip(probs[np.arange(len(ids)), [CLASSES.index(t) for t in y_true]], 1e-15, 1))
    ref_f1 = numpy_bootstrap(
        len(ids),
        lambda i: f1_score(y_true[i], y_pred[i], labels=np.unique(y_true[i]), average="macro", zero_division=0),
    )
    ref_ll = numpy_bootstrap(len(ids), lambda i: losses[i].mean())
    width = lambda lo_hi: lo_hi[1] - lo_hi[0]
    for ours, ref in [(s["classification"]["macro_f1"], ref_f1), (s["log_loss"], ref_ll)]:
        tolerance = 0.2 * width(ref)
        assert abs(ours["low"] - ref[0]) <= tolerance and abs(ours["high"] - ref[1]) <= tolerance, (ours, ref)
        assert ours["low"] <= ours["value"] <= ours["high"]
    assert s["ece"]["low"] <= s["ece"]["high"]
    again = json.loads(run(ws, "report", "--run", "good", "--format", "json").stdout)
    assert next(x for x in again["slices"] if x["slice"] == slice_name) == s, "intervals are seeded"
