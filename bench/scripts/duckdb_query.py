"""Times one query in DuckDB over a Parquet file: prints JSON {p50_ms, runs, rows}.

Used by bench-foundation so that both engines run the same SQL on the same file in
the same benchmark run. Startup and the first (warm-up) run are not timed.
"""

import json
import statistics
import sys
import time

import duckdb

parquet, runs, query = sys.argv[1], int(sys.argv[2]), sys.argv[3]
con = duckdb.connect()
con.execute(f"CREATE VIEW images AS SELECT * FROM read_parquet('{parquet}')")
rows = con.execute(query).fetchall()
times = []
for _ in range(runs):
    start = time.perf_counter()
    rows = con.execute(query).fetchall()
    times.append((time.perf_counter() - start) * 1000)
print(json.dumps({"p50_ms": statistics.median(times), "runs": runs, "rows": len(rows), "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}))
