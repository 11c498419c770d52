"""Shared helpers: find the slicetest binary, run it, make real PNG files without PIL."""

import os
import random
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
