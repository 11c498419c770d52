"""A DuckDB peer kept running for interleaved timing.

Reads JSON requests, one per line, from stdin: {"sql": "...", "timed": true|false}.
Answers each with one JSON line: {"ms": elapsed, "rows": n}. Used by the bench binaries
to alternate slicetest and DuckDB runs of the same query, so that both see the same
machine noise.
"""

import json
import sys
import time

import duckdb

con = duckdb.connect()
for line in sys.stdin:
    request = json.loads(line)
    start = time.perf_counter()
    rows = con.execute(request["sql"]).fetchall()
    elapsed = (time.perf_counter() - start) * 1000
    print(json.dumps({"ms": elapsed, "rows": len(rows)}), flush=True)
