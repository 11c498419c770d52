"""The peer of bench-search-server: LanceDB, in-process, exact (flat) top-10 search over
the same vectors slicetest stored (its embeddings' Parquet parts).

Usage: lancedb_search.py PARTS_DIR LANCE_DIR ID1,ID2,...
Loads the parts into a Lance table at LANCE_DIR (untimed), then times opening the table
plus the first query (cold) and the p50 of the other queries (warm). The query vectors
are looked up by id before timing. Prints one JSON object.
"""

import glob
import json
import os
import statistics
import sys
import time

import lancedb
import pyarrow as pa
import pyarrow.parquet as pq


def main():
    parts_dir, lance_dir, ids = sys.argv[1], sys.argv[2], sys.argv[3].split(",")
    parts = sorted(glob.glob(os.path.join(parts_dir, "*.parquet")))
    table = pa.concat_tables([pq.read_table(p, columns=["image_id", "vector"]) for p in parts])
    db = lancedb.connect(lance_dir)
    db.create_table("vectors", table, mode="overwrite")
    index = {image_id: i for i, image_id in enumerate(table.column("image_id").to_pylist())}
    vectors = table.column("vector")
    queries = [vectors[index[i]].as_py() for i in ids]
    del table, vectors, index

    def search(tbl, q):
        query = tbl.search(q)
        query = query.distance_type("dot") if hasattr(query, "distance_type") else query.metric("dot")
        return query.limit(10).to_arrow()

    t = time.perf_counter()
    tbl = lancedb.connect(lance_dir).open_table("vectors")
    first = search(tbl, queries[0])
    cold_ms = (time.perf_counter() - t) * 1e3
    warm = []
    for q in queries[1:]:
        t = time.perf_counter()
        search(tbl, q)
        warm.append((time.perf_counter() - t) * 1e3)
    print(json.dumps({
        "version": lancedb.__version__,
        "cold_ms": cold_ms,
        "warm_p50_ms": statistics.median(warm) if warm else None,
        "first_top": first.column("image_id").to_pylist(),
    }))


if __name__ == "__main__":
    main()
