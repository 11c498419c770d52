"""The web UI end to end: tests/ui/e2e.mjs drives Debian's headless Chromium
(playwright-core) against a real `slicetest serve`. Screenshots of every step are kept in
$SLICETEST_ARTIFACTS (default tests/ui/artifacts)."""

import json
import os
import shutil
import struct
import subprocess
import zlib

import pytest

from conftest import REPO, TINY_CLIP, Server, clothes_workspace, png_bytes, run

E2E = REPO / "tests/ui/e2e.mjs"


def detection_workspace(root):
    """COCO dataset `shop`: a.png with a shirt, a T-shirt and a bag; b.png with a shirt.
    Run `det-1` takes a.png's shirt for a T-shirt, finds its T-shirt, misses its bag and
    sees a bag where there is none; it finds b.png's shirt. Slice `first` is a.png."""
    src, ws = root / "det-src", root / "det-ws"
    src.mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.png"]):
        (src / name).write_bytes(png_bytes(100, 100, i))
    image = lambda i, name: {"id": i, "file_name": name, "width": 100, "height": 100}
    box = lambda i, image_id, category, bbox: {
        "id": i, "image_id": image_id, "category_id": category, "bbox": bbox, "area": bbox[2] * bbox[3], "iscrowd": 0
    }
    (src / "instances.json").write_text(json.dumps({
        "images": [image(1, "a.png"), image(2, "b.png")],
        "categories": [{"id": 1, "name": "shirt"}, {"id": 2, "name": "t-shirt"}, {"id": 3, "name": "bag"}],
        "annotations": [box(1, 1, 1, [10, 10, 30, 30]), box(2, 1, 2, [60, 10, 30, 30]), box(3, 1, 3, [10, 60, 30, 30]),
                        box(4, 2, 1, [10, 10, 30, 30])],
    }))
    detection = lambda image_id, category, bbox, score: {
        "image_id": image_id, "category_id": category, "bbox": bbox, "score": score
    }
    (src / "results.json").write_text(json.dumps([
        detection(1, 2, [11, 11, 30, 30], 0.9), detection(1, 2, [60, 10, 30, 30], 0.8),
        detection(1, 3, [60, 60, 20, 20], 0.7), detection(2, 1, [10, 10, 30, 30], 0.9),
    ]))
    run(ws, "ingest", "-d", "shop", "--quiet", str(src / "instances.json"))
    run(ws, "run", "upload", str(src / "results.json"), "--run", "det-1", "--model", "det", "--score-threshold", "0.5")
    run(ws, "slice", "create", "first", "--min-map", "0.5", "SELECT 'a.png' AS image_id")
    run(ws, "slice", "freeze", "first")
    return ws


def label_map_png(width, height, labels):
    """An 8-bit grayscale PNG label map (a class id per pixel, row-major), zlib only."""
    rows = b"".join(b"\x00" + bytes(labels[y * width:(y + 1) * width]) for y in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def segmentation_workspace(root):
    """Dataset `scenes`: street.png (40x30). Mask set `seg` (road 0, car 1, sky 2): ten rows
    of sky, road below with a 10x10 car at x 10..19, y 15..24, the last two rows ignored
    (255). Run `unet` sees the car 5 pixels to the right (x 15..24): 50 car pixels taken
    for road, 50 road pixels for car."""
    src, ws = root / "seg-src", root / "seg-ws"
    (src / "images").mkdir(parents=True)
    (src / "gt").mkdir()
    (src / "pred").mkdir()
    (src / "images/street.png").write_bytes(png_bytes(40, 30, 1))

    def scene(car_x, last_rows):
        return [2 if y < 10 else last_rows if y >= 28 else 1 if car_x <= x < car_x + 10 and 15 <= y < 25 else 0
                for y in range(30) for x in range(40)]

    (src / "gt/street.png").write_bytes(label_map_png(40, 30, scene(10, 255)))
    (src / "pred/street.png").write_bytes(label_map_png(40, 30, scene(15, 0)))
    (src / "classes.txt").write_text("road\ncar\nsky\n")
    run(ws, "ingest", "-d", "scenes", "--quiet", str(src / "images"))
    run(ws, "tag", "import", "--masks", str(src / "gt"), "--classes", str(src / "classes.txt"), "--name", "seg", "--quiet")
    run(ws, "run", "upload", str(src / "pred"), "--run", "unet", "--model", "unet", "--model-version", "1")
    return ws


def test_the_ui_modules_type_check():
    """api/ui's modules are plain JavaScript with `// @ts-check` and JSDoc types; TypeScript's
    compiler checks them (api/ui/tsconfig.json) without emitting anything."""
    tsc = REPO / "tests/ui/node_modules/typescript/bin/tsc"
    if not tsc.exists():
        pytest.fail("run `npm ci --prefix tests/ui` first (scripts/install-deps.sh does)")
    proc = subprocess.run(["node", str(tsc), "-p", str(REPO / "api/ui")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"tsc found type errors in api/ui:\n{proc.stdout}{proc.stderr}"
    for module in (REPO / "api/ui").glob("*.js"):
        assert module.read_text().startswith("// @ts-check"), f"{module.name} is not type-checked"


def test_the_ui_end_to_end(tmp_path):
    if not (REPO / "tests/ui/node_modules/playwright-core").exists():
        pytest.fail("run `npm ci --prefix tests/ui` first (scripts/install-deps.sh does)")
    if not shutil.which(os.environ.get("CHROMIUM", "chromium")):
        pytest.fail("Debian's chromium is needed (scripts/install-deps.sh installs it)")
    ws = clothes_workspace(tmp_path)
    # A run that is always wrong on shirts, so slice `tops` fails its test, and discovery
    # finds (and confirms, on all 22 images) `label = 'Shirt'`.
    preds = tmp_path / "preds.csv"
    ids = [line for line in run(ws, "sql", "--format", "csv", "SELECT image_id FROM images ORDER BY image_id").stdout.decode().split()[1:]]
    preds.write_text("image_id,predicted\n" + "".join(f"{i},Coat\n" for i in ids))
    run(ws, "run", "upload", str(preds), "--run", "always-coat", "--model", "const", "--model-version", "1")
    # A slice whose 64-character name must not break the layout.
    run(ws, "slice", "create", "x" * 64, "SELECT image_id FROM images WHERE split = 'val'")
    # Dataset `clash`: two 40x20 images whose ids are also clothes' (the UI must not show
    # clothes' pictures for them), and its run `clash-run`, newer than always-coat (the
    # newest run, but of another dataset than the slices').
    clash = tmp_path / "clash-src"
    for i, image_id in enumerate(["test/Shirt/shirt0.png", "test/Coat/coat0.png"]):
        (clash / image_id).parent.mkdir(parents=True, exist_ok=True)
        (clash / image_id).write_bytes(png_bytes(40, 20, 100 + i))
    run(ws, "ingest", str(clash), "--dataset", "clash", "--quiet")
    clash_preds = tmp_path / "clash-preds.csv"
    clash_preds.write_text("image_id,predicted\ntest/Shirt/shirt0.png,Shirt\ntest/Coat/coat0.png,Shirt\n")
    run(ws, "run", "upload", str(clash_preds), "--run", "clash-run", "--dataset", "clash", "--model", "const",
        "--model-version", "2")
    # The same images never embedded, behind a server whose default model is the tiny CLIP:
    # the Search page explains, and starts an embedding job.
    bare = clothes_workspace(tmp_path / "bare", embed=False)
    server = Server(ws)
    bare_server = Server(bare, env={"SLICETEST_CLIP_MODEL": str(TINY_CLIP)})
    # Writes need a token here (its steps read, but for the token prompt's).
    detection_server = Server(detection_workspace(tmp_path), "--token", "e2e-token")
    segmentation_server = Server(segmentation_workspace(tmp_path))
    try:
        artifacts = os.environ.get("SLICETEST_ARTIFACTS", str(REPO / "tests/ui/artifacts"))
        proc = subprocess.run(
            ["node", str(E2E), server.url, artifacts, bare_server.url, detection_server.url, segmentation_server.url],
            capture_output=True,
            text=True,
            timeout=300,
        )
        print(proc.stdout, proc.stderr)
        assert proc.returncode == 0, f"UI steps failed:\n{proc.stdout}\n{proc.stderr}"
    finally:
        server.stop()
        bare_server.stop()
        detection_server.stop()
        segmentation_server.stop()
