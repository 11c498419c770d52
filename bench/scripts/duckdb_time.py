"""Times one query in DuckDB: prints JSON {p50_ms, runs, rows, threads}.

Usage: duckdb_time.py RUNS QUERY [SETUP_STATEMENT ...]
The setup statements (views over the same Parquet files slicetest uses) run first; then
the query runs once untimed (warm-up) and RUNS times timed. Used by the bench binaries so
both engines do the same work on the same files in the same benchmark run.
"""

import json
import statistics
import sys
import time

import duckdb

runs, query, setup = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
con = duckdb.connect()
for statement in setup:
    con.execute(statement)
rows = con.execute(query).fetchall()
times = []
for _ in range(runs):
    start = time.perf_counter()
    rows = con.execute(query).fetchall()
    times.append((time.perf_counter() - start) * 1000)
threads = con.execute("SELECT current_setting('threads')").fetchone()[0]
print(json.dumps({"p50_ms": statistics.median(times), "runs": runs, "rows": len(rows), "threads": threads}))
