"""slicetest's SQL results equal DuckDB's on the same Parquet files.

A workspace is built through the real CLI (a CSV manifest over generated PNGs, plus a
second dataset for joins); DuckDB reads the very images.parquet files slicetest wrote.
Every query runs on both; any difference fails the test.
"""

import csv
import json
import math
import random
from pathlib import Path

import duckdb
import pytest

from conftest import png_bytes, run, sql_arrow

LABELS = ["cat", "dog", "T-shirt/top", "Ankle boot", "café", "bird", "car", None]
WEATHER = ["sunny", "rain", "fog", "snow", None]
SPLITS = ["train", "train", "train", "val", "test", "test"]
WORDS = ["night", "crowd", "red", "blurry", "street", "Factory", "dim", "naïve"]


def build_inputs(root: Path) -> None:
    rng = random.Random(7)
    imgs = root / "imgs"
    imgs.mkdir(parents=True)
    rows = []
    for i in range(300):
        w, h = rng.randint(1, 48), rng.randint(1, 48)
        name = f"img_{i:04d}.png"
        (imgs / name).write_bytes(png_bytes(w, h, i))
        rows.append(
            {
                "path": f"imgs/{name}",
                "label": rng.choice(LABELS) or "",
                "split": rng.choice(SPLITS),
                "weather": rng.choice(WEATHER) or "",
                "num_people": "" if rng.random() < 0.15 else str(rng.randint(0, 12)),
                "brightness": "" if rng.random() < 0.1 else f"{rng.random():.6f}",
                "caption": " ".join(rng.sample(WORDS, rng.randint(0, 3))),
            }
        )
    with open(root / "parity.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # A second dataset over a subset of the same files, with other columns, for joins.
    with open(root / "other.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "reviewer", "score"])
        for i in range(0, 300, 3):
            writer.writerow([f"imgs/img_{i:04d}.png", rng.choice(["ann", "bo", "cy"]), rng.randint(-5, 5)])


@pytest.fixture(scope="module")
def engines(tmp_path_factory, binary):
    root = tmp_path_factory.mktemp("parity")
    build_inputs(root)
    ws = root / "ws"
    run(ws, "init")
    run(ws, "ingest", "--quiet", "--dataset", "parity", str(root / "parity.csv"))
    run(ws, "ingest", "--quiet", "--dataset", "other", str(root / "other.csv"))
    con = duckdb.connect()
    for ds in ["parity", "other"]:
        version = ws / "datasets" / ds / "versions" / "1"
        parquet = version / json.loads((version / "version.json").read_text())["images_file"]
        assert parquet.exists()
        con.execute(f"CREATE SCHEMA {ds}")
        con.execute(f"CREATE VIEW {ds}.images AS SELECT * FROM read_parquet('{parquet}')")
    con.execute("CREATE VIEW images AS SELECT * FROM parity.images")
    return ws, con


# (name, query, ordered): ordered queries compare row order too; others compare as multisets.
QUERIES = [
    ("count", "SELECT count(*) FROM images", True),
    ("label_split_counts", "SELECT label, split, count(*) FROM images GROUP BY 1, 2 ORDER BY 1 NULLS LAST, 2", True),
    ("filter_sizes", "SELECT image_id, width, height FROM images WHERE width > 32 AND height <= 20", False),
    ("filter_in_or", "SELECT image_id FROM images WHERE label IN ('cat', 'dog') OR split = 'val'", False),
    ("is_null", "SELECT image_id FROM images WHERE weather IS NULL AND num_people IS NOT NULL", False),
    ("between", "SELECT image_id, num_people FROM images WHERE num_people BETWEEN 2 AND 5", False),
    ("like", "SELECT image_id FROM images WHERE caption LIKE '%night%' AND caption NOT LIKE '%red%'", False),
    ("lower_eq", "SELECT count(*) FROM images WHERE lower(label) = 't-shirt/top'", True),
    ("having", "SELECT label, count(*) AS n FROM images GROUP BY label HAVING count(*) > 35", False),
    ("aggregates", "SELECT label, avg(brightness), min(width), max(height), sum(bytes) FROM images GROUP BY label", False),
    ("count_distinct", "SELECT split, count(DISTINCT label), count(DISTINCT weather) FROM images GROUP BY split", False),
    ("stddev", "SELECT split, stddev_samp(brightness), var_pop(width) FROM images GROUP BY split", False),
    ("median", "SELECT label, median(brightness) FROM images GROUP BY label", False),
    ("count_nulls", "SELECT count(*), count(weather), count(num_people), sum(num_people), avg(num_people) FROM images", True),
    ("row_number", "SELECT image_id, row_number() OVER (PARTITION BY label ORDER BY bytes DESC, image_id) FROM images", False),
    ("rank", "SELECT image_id, rank() OVER (PARTITION BY split ORDER BY width), dense_rank() OVER (ORDER BY height) FROM images", False),
    ("running_sum", "SELECT image_id, sum(width) OVER (ORDER BY image_id ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) FROM images", False),
    ("lag_lead", "SELECT image_id, lag(width) OVER (ORDER BY image_id), lead(label, 2) OVER (ORDER BY image_id) FROM images", False),
    ("ntile", "SELECT image_id, ntile(4) OVER (ORDER BY bytes, image_id) FROM images", False),
    ("join_using", "SELECT a.image_id, a.label, b.reviewer, b.score FROM images a JOIN other.images b USING (image_id)", False),
    ("left_join", "SELECT a.split, count(b.image_id), sum(b.score) FROM images a LEFT JOIN other.images b ON a.image_id = b.image_id GROUP BY a.split", False),
    ("self_join", "SELECT a.label, count(*) FROM images a JOIN images b ON a.label = b.label AND a.width < b.width GROUP BY a.label", False),
    ("cte", "WITH big AS (SELECT * FROM images WHERE width * height > 900) SELECT split, count(*) FROM big GROUP BY split", False),
    ("in_subquery", "SELECT image_id FROM images WHERE image_id IN (SELECT image_id FROM other.images WHERE score > 2)", False),
    ("exists", "SELECT image_id FROM images a WHERE EXISTS (SELECT 1 FROM other.images b WHERE b.image_id = a.image_id AND b.reviewer = 'ann')", False),
    ("case_bucket", "SELECT CASE WHEN width < 16 THEN 'small' WHEN width < 32 THEN 'medium' ELSE 'large' END AS b, count(*) FROM images GROUP BY 1", False),
    ("coalesce_nullif", "SELECT image_id, coalesce(weather, 'unknown'), nullif(num_people, 0) FROM images", False),
    ("string_funcs", "SELECT image_id, upper(caption), character_length(caption), substr(image_id, 5, 4), replace(caption, ' ', '_') FROM images", False),
    ("string_funcs_2", "SELECT image_id, split_part(label, '/', 1), strpos(caption, 'red'), trim(caption), lpad(CAST(width AS VARCHAR), 3, '0') FROM images", False),
    ("concat", "SELECT image_id, CAST(width AS VARCHAR) || 'x' || CAST(height AS VARCHAR), concat(label, '-', split) FROM images", False),
    ("starts_with", "SELECT image_id FROM images WHERE starts_with(caption, 'dim') OR left(label, 2) = 'ca'", False),
    ("regexp_replace", "SELECT image_id, regexp_replace(caption, '[aeiou]', '*', 'g') FROM images", False),
    ("string_agg", "SELECT split, string_agg(DISTINCT weather, ',' ORDER BY weather) FROM images GROUP BY split", False),
    ("order_limit_offset", "SELECT image_id, bytes FROM images ORDER BY bytes DESC, image_id LIMIT 10 OFFSET 5", True),
    ("set_ops", "SELECT label FROM images WHERE split = 'train' INTERSECT SELECT label FROM images WHERE split = 'test' "
                "UNION SELECT 'extra' EXCEPT SELECT 'dog'", False),
    ("union_all", "SELECT image_id, 'a' FROM images WHERE width = 1 UNION ALL SELECT image_id, 'b' FROM images WHERE height = 1", False),
    ("filter_clause", "SELECT label, count(*) FILTER (WHERE split = 'train'), count(*) FILTER (WHERE num_people > 6) FROM images GROUP BY label", False),
    ("arith", "SELECT image_id, width * height, (width + height) % 7, abs(width - height), greatest(width, height), least(width, height) FROM images", False),
    ("round", "SELECT label, round(avg(brightness), 3), round(sum(brightness) * 100) FROM images GROUP BY label", False),
    ("distinct", "SELECT DISTINCT split, weather FROM images", False),
]


def normalise(value):
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return round(value, 9) if abs(value) < 1e6 else float(f"{value:.12g}")
    if hasattr(value, "is_integer") and not isinstance(value, (int, bool)):  # Decimal
        return normalise(float(value))
    return value


def rows_of_arrow(table):
    cols = [table.column(i).to_pylist() for i in range(table.num_columns)]
    return [tuple(normalise(c[r]) for c in cols) for r in range(table.num_rows)]


def sort_key(row):
    return tuple((v is None, repr(type(v)), v if v is not None else 0) for v in row)


def test_at_least_thirty_queries():
    assert len(QUERIES) >= 30
    assert len({name for name, _, _ in QUERIES}) == len(QUERIES)


@pytest.mark.parametrize("name,query,ordered", QUERIES, ids=[q[0] for q in QUERIES])
def test_same_result_as_duckdb(engines, name, query, ordered):
    ws, con = engines
    ours = rows_of_arrow(sql_arrow(ws, query))
    theirs = [tuple(normalise(v) for v in row) for row in con.execute(query).fetchall()]
    if not ordered:
        ours, theirs = sorted(ours, key=sort_key), sorted(theirs, key=sort_key)
    assert len(ours) == len(theirs), f"{name}: {len(ours)} rows vs DuckDB's {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs)):
        assert a == b, f"{name}: row {i} differs: slicetest {a!r} vs DuckDB {b!r}"
    assert ours, f"{name}: the query returned no rows, which proves nothing"
