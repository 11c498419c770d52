"""A DuckDB peer kept running for interleaved timing.

Reads JSON requests, one per line, from stdin: {"sql": "...", "fetch": "arrow"?}.
Answers each with one JSON line: {"ms": elapsed, "rows": n}. With "fetch": "arrow" the
result is materialised as a pyarrow Table (what slicetest's side collects: Arrow batches)
instead of Python tuples, so wide results do not time Python object creation. Used by the bench binaries
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
    try:
        if request.get("fetch") == "arrow":
            # The relational API answers Arrow without the DB-API path's extra copy (DuckDB 2
            # names it to_arrow_table; older versions arrow()).
            relation = con.sql(request["sql"])
            to_arrow = getattr(relation, "to_arrow_table", None) or relation.arrow
            rows = to_arrow().num_rows
        else:
            rows = len(con.execute(request["sql"]).fetchall())
    except duckdb.Error as e:
        print(json.dumps({"error": str(e)}), flush=True)
        continue
    elapsed = (time.perf_counter() - start) * 1000
    print(json.dumps({"ms": elapsed, "rows": rows}), flush=True)
