"""The web UI end to end: tests/ui/e2e.mjs drives Debian's headless Chromium
(playwright-core) against a real `slicetest serve`. Screenshots of every step are kept in
$SLICETEST_ARTIFACTS (default tests/ui/artifacts)."""

import os
import shutil
import subprocess

import pytest

from conftest import REPO, TINY_CLIP, Server, clothes_workspace, run

E2E = REPO / "tests/ui/e2e.mjs"


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
    # The same images never embedded, behind a server whose default model is the tiny CLIP:
    # the Search page explains, and starts an embedding job.
    bare = clothes_workspace(tmp_path / "bare", embed=False)
    server = Server(ws)
    bare_server = Server(bare, env={"SLICETEST_CLIP_MODEL": str(TINY_CLIP)})
    try:
        artifacts = os.environ.get("SLICETEST_ARTIFACTS", str(REPO / "tests/ui/artifacts"))
        proc = subprocess.run(
            ["node", str(E2E), server.url, artifacts, bare_server.url], capture_output=True, text=True, timeout=300
        )
        print(proc.stdout, proc.stderr)
        assert proc.returncode == 0, f"UI steps failed:\n{proc.stdout}\n{proc.stderr}"
    finally:
        server.stop()
        bare_server.stop()
