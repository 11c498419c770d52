"""Shared helpers: find the slicetest binary, run it, make real PNG files without PIL."""

import os
import random
import re
import threading
import struct
import subprocess
import zlib
from pathlib import Path

import pyarrow.ipc
import pytest

REPO = Path(__file__).resolve().parents[2]


def slicetest_bin() -> str:
    explicit = os.environ.get("SLICETEST_BIN")
    if explicit:
        return explicit
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/slicetest-target"))
    return str(Path(target) / "debug" / "slicetest")


def run(workspace: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `slicetest --workspace <ws> args...`, capturing bytes."""
    proc = subprocess.run(
        [slicetest_bin(), "--workspace", str(workspace), *args],
        capture_output=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"slicetest {' '.join(args)} failed:\n{proc.stderr.decode()}")
    return proc


def sql_arrow(workspace: Path, query: str):
    """Runs a query through the CLI with Arrow IPC output and returns a pyarrow Table."""
    out = run(workspace, "sql", "--format", "arrow", query).stdout
    return pyarrow.ipc.open_stream(out).read_all()


def png_bytes(width: int, height: int, seed: int) -> bytes:
    """A real RGB PNG, written with zlib only."""
    rng = random.Random(seed)
    raw = b"".join(
        b"\x00" + bytes(rng.randrange(256) for _ in range(width * 3)) for _ in range(height)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def binary() -> str:
    path = slicetest_bin()
    if not Path(path).exists():
        pytest.fail(f"slicetest binary not found at {path}; run `cargo build --bin slicetest` first")
    return path


class Server:
    """`slicetest serve --port 0` in the background; `url` is read from its first line."""

    def __init__(self, workspace: Path, *args: str, env: dict = None):
        self.proc = subprocess.Popen(
            [slicetest_bin(), "--workspace", str(workspace), "serve", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        line = self.proc.stdout.readline()
        match = re.search(r"at (http://127\.0\.0\.1:\d+)", line)
        if not match:
            self.proc.kill()
            raise AssertionError(f"serve did not start: {line!r} {self.proc.stderr.read()}")
        self.url = match.group(1)
        # Keep reading both pipes so the server never blocks on a full one; stdout's lines
        # after the first are kept (`lines`, whole once `stop` returns).
        self.lines = []
        self._stdout = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout), daemon=True)
        self._stdout.start()
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self._stdout.join(timeout=30)
        return code


CLOTHES = {("train", "Shirt"): 6, ("train", "Coat"): 6, ("test", "Shirt"): 5, ("test", "Coat"): 5}
TINY_CLIP = REPO / "embed/tests/fixtures/tiny-clip"


def clothes_workspace(root: Path, embed: bool = True) -> Path:
    """22 real PNGs in the split/label layout (dataset `clothes`), embedded with the tiny
    CLIP (unless `embed` is false), tagged with pixel statistics and an imported box (a
    "collar" on shirt0.png), and slice `tops` (the shirts, accuracy >= 80%) frozen with a
    30% hold-out."""
    src = root / "src"
    seed = 0
    for (split, label), count in CLOTHES.items():
        folder = src / split / label
        folder.mkdir(parents=True)
        for i in range(count):
            seed += 1
            (folder / f"{label.lower()}{i}.png").write_bytes(png_bytes(12 + i, 10, seed))
    ws = root / "ws"
    run(ws, "init")
    run(ws, "ingest", str(src), "--dataset", "clothes")
    if embed:
        run(ws, "embed", "--model", str(TINY_CLIP), "--batch-size", "8")
    run(ws, "tag", "--tagger", "pixels", "--quiet")
    boxes = root / "boxes.csv"
    boxes.write_text("image_id,label,score,x0,y0,x1,y1\ntest/Shirt/shirt0.png,collar,0.9,2,1,9,5\n")
    run(ws, "tag", "import", str(boxes), "--name", "collar-detector")
    run(ws, "slice", "create", "tops", "SELECT image_id FROM images WHERE label = 'Shirt'", "--min-accuracy", "0.8", "--min-samples", "1")
    run(ws, "slice", "freeze", "tops", "--holdout", "0.3", "--seed", "1")
    return ws
