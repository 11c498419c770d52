"""bench-http: the HTTP API (issue 7), measured against the real `slicetest serve`.

1. Peak server memory (VmHWM) while streaming a 1,000,000-row result, against the size of
   the result: bounded means far below the result.
2. Pull a 100,000-row frozen slice with tag columns into pyarrow: Arrow IPC (the
   client's default) vs the same rows as JSON (requests + json + pyarrow.Table.from_pylist).
   Targets: Arrow >= 3x faster than JSON and >= 200 MB/s.
3. 200 concurrent clients on POST /sql over loopback for a fixed time, with `wrk` when it
   is installed (Debian package wrk), else a Python thread pool: requests/s, p50 / p99
   latency, errors (target zero errors).

Usage:  python3 bench/scripts/http_api.py [--rows 100000] [--clients 200] [--seconds 10]
(SLICETEST_BIN selects the binary; default $CARGO_TARGET_DIR/debug/slicetest).
"""

import argparse
import concurrent.futures
import json
import os
import random
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path

import pyarrow as pa
import requests

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "python"))
from slicetest import Client  # noqa: E402


def binary() -> str:
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/slicetest-target"))
    return os.environ.get("SLICETEST_BIN", str(Path(target) / "debug" / "slicetest"))


def png(seed: int) -> bytes:
    rng = random.Random(seed)
    raw = b"".join(b"\x00" + bytes(rng.randrange(256) for _ in range(8)) for _ in range(8))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def build_workspace(root: Path, rows: int) -> Path:
    """`rows` real 8x8 PNGs in a manifest with five tag columns, one slice over all of them."""
    src = root / "src"
    src.mkdir()
    weathers = ["sunny", "rain", "fog", "snow", None]
    with open(src / "manifest.csv", "w") as manifest:
        manifest.write("path,label,split,weather,num_people,brightness,is_night,caption\n")
        for i in range(rows):
            name = f"{i:07d}.png"
            (src / name).write_bytes(png(i))
            w = weathers[i % 5] or ""
            split = ("train", "val", "test")[i % 3]
            manifest.write(f"{name},c{i % 10},{split},{w},{i % 13},{(i % 97) / 97:.4f},{str(i % 4 == 0).lower()},image number {i}\n")
    ws = root / "ws"
    run = lambda *a: subprocess.run([binary(), "--workspace", str(ws), *a], check=True, capture_output=True)  # noqa: E731
    run("init")
    run("ingest", str(src / "manifest.csv"), "--dataset", "bench")
    run("slice", "create", "everything", "SELECT image_id FROM images")
    run("slice", "freeze", "everything", "--holdout", "0.2")
    return ws


class Server:
    def __init__(self, ws: Path):
        self.proc = subprocess.Popen(
            [binary(), "--workspace", str(ws), "serve", "--port", "0", "--concurrent-queries", "64"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.url = re.search(r"at (http://\S+)", self.proc.stdout.readline()).group(1)
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def memory_kib(self, field: str) -> int:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", status, re.M).group(1))

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=30)


def best_of(runs: int, fn):
    times, result = [], None
    for _ in range(runs):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times), result


def pull(server: Server, rows: int, runs: int):
    client = Client(server.url)
    path = f"{server.url}/slices/everything/data"

    def arrow():
        return client.slice("everything")

    def arrow_bytes():
        return len(requests.get(path, headers={"Accept": "application/vnd.apache.arrow.stream"}).content)

    def as_json():
        return pa.Table.from_pylist(json.loads(requests.get(path, headers={"Accept": "application/json"}).content))

    arrow()  # warm: page cache, catalog
    a_best, a_med, table = best_of(runs, arrow)
    j_best, j_med, jtable = best_of(runs, as_json)
    size = arrow_bytes()
    assert table.num_rows == rows == jtable.num_rows, (table.num_rows, jtable.num_rows)
    print(f"\n2. pull a {rows:,}-row slice ({table.num_columns} columns) into pyarrow, best of {runs}")
    print(f"   Arrow IPC: {a_best * 1000:8.1f} ms (median {a_med * 1000:.1f}), {size / 1e6:.1f} MB -> {size / a_best / 1e6:,.0f} MB/s")
    print(f"   JSON     : {j_best * 1000:8.1f} ms (median {j_med * 1000:.1f})")
    ratio = j_best / a_best
    print(f"   Arrow is {ratio:.1f}x faster (target >= 3x: {'met' if ratio >= 3 else 'MISSED'}); "
          f"throughput target >= 200 MB/s: {'met' if size / a_best / 1e6 >= 200 else 'MISSED'}")


def load(server: Server, clients: int, seconds: int):
    sql = "SELECT weather, count(*) AS n, avg(brightness) AS b FROM images GROUP BY weather ORDER BY weather"
    print(f"\n3. {clients} concurrent clients on POST /sql for {seconds} s: {sql}")
    session = requests.Session()
    alone = []
    for _ in range(50):
        start = time.perf_counter()
        session.post(f"{server.url}/sql", data=sql, headers={"Content-Type": "text/plain"}).raise_for_status()
        alone.append(time.perf_counter() - start)
    print(f"   one client alone: p50 {statistics.median(alone) * 1000:.1f} ms (50 requests)")
    if shutil.which("wrk"):
        script = Path(tempfile.mkdtemp()) / "post.lua"
        script.write_text(f'wrk.method = "POST"\nwrk.body = {json.dumps(sql)}\nwrk.headers["Content-Type"] = "text/plain"\n'
                          'function response(status, headers, body) if status ~= 200 then wrk.thread:stop() end end\n')
        out = subprocess.run(["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--latency", "-s", str(script), f"{server.url}/sql"],
                             capture_output=True, text=True, check=True).stdout
        print("   tool: wrk")
        for line in out.splitlines():
            if re.search(r"50%|99%|Requests/sec|requests in|Non-2xx|Socket errors", line):
                print("   " + line.strip())
        errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        print(f"   errors: {errors.group(1) if errors else 0}")
        return
    latencies, errors = [], []
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def worker():
        session = requests.Session()
        while time.monotonic() < deadline:
            start = time.perf_counter()
            try:
                r = session.post(f"{server.url}/sql", data=sql, headers={"Content-Type": "text/plain"}, timeout=60)
                ok = r.status_code == 200
            except requests.RequestException as e:
                ok = False
                r = e
            with lock:
                (latencies if ok else errors).append(time.perf_counter() - start if ok else str(r))

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(worker) for _ in range(clients)]:
            f.result()
    latencies.sort()
    q = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000  # noqa: E731
    print("   tool: Python threads (install Debian's wrk for a load generator that is not the bottleneck)")
    print(f"   {len(latencies):,} requests, {len(latencies) / seconds:,.0f} req/s, p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, errors {len(errors)}")


def memory(server: Server):
    """Streams 1M then 10M rows: a bounded server's peak does not grow with the result."""
    before = server.memory_kib("VmRSS")
    print("\n1. stream large results as JSON; the server's peak memory (VmHWM) after each")
    print(f"   server RSS at start {before / 1024:.0f} MiB")
    for rows in (1_000_000, 10_000_000):
        sql = f"SELECT value, value * 2 AS doubled, 'row ' || value AS text FROM generate_series(1, {rows})"
        size = 0
        start = time.perf_counter()
        with requests.post(f"{server.url}/sql?format=json", data=sql, stream=True) as r:
            r.raise_for_status()
            for chunk in r.iter_content(1 << 16):
                size += len(chunk)
        seconds = time.perf_counter() - start
        peak = server.memory_kib("VmHWM")
        print(f"   {rows:>10,} rows = {size / 1e6:6.0f} MB in {seconds:5.1f} s ({size / seconds / 1e6:.0f} MB/s): peak {peak / 1024:.0f} MiB")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=200)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        ws = build_workspace(Path(tmp), args.rows)
        print(f"workspace: {args.rows:,} images with tags, slice 'everything' frozen ({time.perf_counter() - start:.0f} s)")
        server = Server(ws)
        try:
            memory(server)  # first, so no earlier request set the peak
            pull(server, args.rows, args.runs)
            load(server, args.clients, args.seconds)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
