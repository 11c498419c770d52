"""The Python client (python/, package `slicetest`) against a real `slicetest serve`.

The workspace is built through the CLI: a folder of real PNGs in the split/label layout,
embedded with the tiny CLIP fixture, with a frozen slice `tops`. The server runs on a free
loopback port for the whole module.
"""

import io
import json
import random
import re
import subprocess
import time
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import REPO, TINY_CLIP, Server, clothes_workspace, png_bytes, run, slicetest_bin

# Installed by scripts/install-deps.sh (pip install -e ./python).
from slicetest import Client, JobFailed, SliceDataset, SlicetestError
from slicetest.client import DISCOVERY_SCHEMA


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return clothes_workspace(tmp_path_factory.mktemp("client"))


@pytest.fixture(scope="module")
def server(workspace):
    s = Server(workspace)
    yield s
    assert s.stop() == 0, "serve exits cleanly on SIGTERM"


@pytest.fixture()
def client(server) -> Client:
    return Client(server.url)


def test_sql_returns_arrow_tables(client):
    table = client.sql("SELECT label, count(*) AS n FROM images GROUP BY label ORDER BY label")
    assert isinstance(table, pa.Table)
    assert table.to_pydict() == {"label": ["Coat", "Shirt"], "n": [11, 11]}
    assert client.health()["status"] == "ok"


def test_sql_pages_summaries_and_error_positions(client):
    query = "SELECT image_id, label FROM images ORDER BY image_id"
    everything = client.sql(query)
    page = client.sql(query, limit=5, offset=20)
    assert page.to_pylist() == everything.slice(20, 5).to_pylist()
    assert client.sql(query, offset=20).num_rows == everything.num_rows - 20

    summary = client.sql_summary("SELECT label, width FROM images")
    assert summary["rows"] == everything.num_rows == 22
    label, width = summary["columns"]
    assert (label["name"], label["non_null"], label["distinct"], label["min"], label["max"]) == ("label", 22, 2, "Coat", "Shirt")
    assert width["type"].startswith(("Int", "UInt")) and isinstance(width["min"], int)

    with pytest.raises(SlicetestError) as bad:
        client.sql("SELECT image_id\nFROM images\nWHERE nope > 1")
    assert (bad.value.status, bad.value.code, bad.value.position) == (400, "query", (3, 7))


def test_a_frozen_slice_comes_with_holdout_and_tags(client):
    members = client.slice("tops")
    assert members.column_names[:5] == ["image_id", "uri", "label", "split", "holdout"]
    assert set(members.column("label").to_pylist()) == {"Shirt"}
    assert members.num_rows == 11
    held = client.slice("tops", holdout=True)
    kept = client.slice("tops", holdout=False)
    assert held.num_rows + kept.num_rows == 11
    assert all(held.column("holdout").to_pylist())
    info = client.slice_info("tops")
    assert info["breakdown"]["holdout"] == held.num_rows
    assert [s["name"] for s in client.slices()] == ["tops"]
    assert client.slice("tops", version=1).equals(members)
    pandas = members.to_pandas()
    assert len(pandas[~pandas.holdout]) == kept.num_rows


def test_slice_dataset_yields_image_bytes_and_labels(client):
    ds = SliceDataset(client, "tops", holdout=False)
    assert len(ds) == client.slice("tops", holdout=False).num_rows
    data, label = ds[0]
    assert data.startswith(b"\x89PNG") and label == "Shirt"
    assert [label for _, label in ds] == ["Shirt"] * len(ds)
    sized = SliceDataset(client, "tops", transform=lambda data, label: (len(data), label))
    assert all(isinstance(n, int) for n, _ in sized)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_search_by_text_id_and_bytes(client, workspace):
    hits = client.search_text("a photo of a shirt", k=5)
    assert hits.column_names == ["image_id", "score", "uri"] and hits.num_rows == 5
    scores = hits.column("score").to_pylist()
    assert scores == sorted(scores, reverse=True)
    first = client.sql("SELECT image_id FROM images ORDER BY image_id LIMIT 1").column(0)[0].as_py()
    assert client.search_image(first, k=1).column("image_id")[0].as_py() == first
    data = client.image(first)
    assert client.search_image(data, k=1).column("image_id")[0].as_py() == first
    assert client.thumbnail(first, size=4).startswith(b"\x89PNG")


def test_upload_predictions_then_read_the_slice_tests(client):
    test = client.sql("SELECT image_id, label FROM images WHERE split = 'test' ORDER BY image_id").to_pandas()
    test["predicted"] = "Coat"  # always wrong on shirts
    manifest = client.upload_predictions(
        "always-coat", test[["image_id", "predicted"]], model="const", model_version="1", allow_partial=True
    )
    assert manifest["run"] == "always-coat"
    verdicts = client.test("always-coat")
    assert verdicts["passed"] is False and verdicts["failing"] == ["tops"]
    assert client.metrics("always-coat")["overall"]["scored"] == 10
    assert "tops" in client.report("always-coat", html=True)
    assert any(r["run"] == "always-coat" for r in client.runs())
    with pytest.raises(SlicetestError) as err:
        client.upload_predictions("always-coat", test[["image_id", "predicted"]], model="x", model_version="1", allow_partial=True)
    assert (err.value.status, err.value.code) == (409, "exists"), "a taken run name is a conflict, like a slice's"
    assert "already exists" in err.value.message


def test_uploads_are_checked_for_what_a_python_caller_sends(client):
    test = client.sql("SELECT image_id, label FROM images WHERE split = 'test' ORDER BY image_id").to_pandas()
    test["predicted"] = test["label"]
    records = test[["image_id", "predicted"]]
    # A list of classification records (no bbox) is classification, sent as JSON.
    manifest = client.upload_predictions("records", records.to_dict("records"), model="m", model_version="1", allow_partial=True)
    assert (manifest["task"], manifest["predictions"]) == ("classification", len(test))
    # run.json records no server path: the body had no file name.
    assert manifest["source"] == "upload"
    assert client.metrics("records")["overall"]["classification"]["accuracy"]["value"] == 1.0

    def refused(run, predictions, **kwargs):
        with pytest.raises(SlicetestError) as err:
            client.upload_predictions(run, predictions, model="m", model_version="1", **kwargs)
        assert (err.value.status, err.value.code) == (422, "invalid_input"), err.value
        assert run not in [r["run"] for r in client.runs()], "nothing was written"
        return err.value.message

    assert "the file holds no predictions" in refused("empty", records.iloc[:0], allow_partial=True)
    # The hint names the query parameter, not the CLI's flag.
    message = refused("partial", records)
    assert "pass allow_partial=true to accept that" in message and "--allow-partial" not in message
    blank = records.copy()
    blank.loc[blank.index[2], "predicted"] = None
    assert 'row 3 (image_id "{}"): predicted is empty'.format(blank.image_id.iloc[2]) in refused(
        "blank", blank, allow_partial=True
    )
    scored = records.copy()
    scored["score"] = "abc"
    assert 'score is "abc", not a number' in refused("text-score", scored, allow_partial=True)
    one_class = records.copy()
    one_class["prob_Shirt"] = 1.0
    assert "missing prob_Coat" in refused("one-class", one_class, allow_partial=True)


def test_predictions_are_uploaded_from_files_by_path(client, tmp_path):
    test = client.sql("SELECT image_id, label FROM images WHERE split = 'test' ORDER BY image_id").to_pandas()
    test["predicted"] = test["label"]
    records = test[["image_id", "predicted"]]
    records.to_csv(tmp_path / "preds.csv", index=False)
    records.to_parquet(tmp_path / "preds.parquet", index=False)
    (tmp_path / "preds.json").write_text(json.dumps(records.to_dict("records")))
    for name in ["preds.csv", "preds.parquet", "preds.json"]:
        run = name.replace(".", "-")
        manifest = client.upload_predictions(run, tmp_path / name, model="m", model_version="1", allow_partial=True)
        assert (manifest["source"], manifest["predictions"]) == (name, len(test)), manifest
        assert client.metrics(run)["overall"]["classification"]["accuracy"]["value"] == 1.0
    # A name a header cannot carry as it is (not Latin-1, or a quote) is sent with "_" there.
    records.to_csv(tmp_path / 'prédictions "v2".csv', index=False)
    manifest = client.upload_predictions("accented", tmp_path / 'prédictions "v2".csv', model="m", model_version="1",
                                         allow_partial=True)
    assert manifest["source"] == "pr_dictions _v2_.csv"
    # A path the server would not read is refused before anything is sent.
    (tmp_path / "preds.txt").write_text("image_id,predicted\n")
    with pytest.raises(ValueError, match=r"preds.txt: predictions files are .*\.csv"):
        client.upload_predictions("txt", str(tmp_path / "preds.txt"), model="m", model_version="1")
    with pytest.raises(FileNotFoundError, match="no predictions file or folder"):
        client.upload_predictions("missing", tmp_path / "missing.csv", model="m", model_version="1")
    # A problem in a file sent by path is named as in any upload, nothing written.
    (tmp_path / "bad.csv").write_text("image_id,predicted\nnot/an/image.png,Coat\n")
    with pytest.raises(SlicetestError) as err:
        client.upload_predictions("bad", tmp_path / "bad.csv", model="m", model_version="1", allow_partial=True)
    assert (err.value.status, err.value.code) == (422, "invalid_input") and "not/an/image.png" in err.value.message
    assert "bad" not in [r["run"] for r in client.runs()]


def test_the_readme_example_runs(server):
    text = (REPO / "python/README.md").read_text()
    block = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    output = io.StringIO()
    namespace = {"print": lambda *a, **k: print(*a, **k, file=output)}
    exec(block.replace("http://127.0.0.1:7878", server.url), namespace)
    lines = output.getvalue().splitlines()
    assert re.match(r"11 members, \d+ held out, \d+ to train on", lines[0]), lines
    assert lines[1] == "['tops']"


def test_errors_carry_status_and_code(client):
    for sql, code in [
        ("CREATE EXTERNAL TABLE p (x VARCHAR) STORED AS CSV LOCATION '/etc/passwd'", "read_only"),
        ("COPY (SELECT 1) TO '/tmp/slicetest-copy.csv'", "read_only"),
        ("SELEC 1", "query"),
    ]:
        with pytest.raises(SlicetestError) as err:
            client.sql(sql)
        assert err.value.code == code, sql
    with pytest.raises(SlicetestError) as err:
        client.slice("nope")
    assert (err.value.status, err.value.code) == (404, "not_found")
    with pytest.raises(SlicetestError) as err:
        client.image("../../etc/passwd")
    assert err.value.status == 404


def test_a_result_cut_by_the_query_time_limit_raises_a_timeout(workspace):
    server = Server(workspace, "--query-timeout", "2")
    try:
        client = Client(server.url)
        # The first row is ready at once, so the answer starts (200); the count is not, so
        # the time limit cuts the stream after it.
        query = "SELECT CAST(1 AS BIGINT) AS v UNION ALL SELECT count(*) FROM generate_series(1, 500000000000)"
        started = time.monotonic()
        with pytest.raises(SlicetestError) as cut:
            client.sql(query)
        assert cut.value.code == "timeout", cut.value
        assert "time limit" in cut.value.message
        assert time.monotonic() - started < 30
        assert client.sql("SELECT 1 AS x").num_rows == 1, "the client still works"
    finally:
        assert server.stop() == 0


def test_a_bodiless_error_of_the_http_layer_says_what_it_is(client):
    with pytest.raises(SlicetestError) as err:
        client.image("x" * 100_000)
    assert (err.value.status, err.value.code) == (414, "http")
    assert err.value.message.startswith("URI Too Long"), err.value.message


def test_writes_need_the_token(workspace):
    server = Server(workspace, "--token", "s3cret")
    try:
        anonymous = Client(server.url)
        assert anonymous.sql("SELECT 1 AS x").num_rows == 1
        with pytest.raises(SlicetestError) as err:
            anonymous.create_slice("coats", "SELECT image_id FROM images WHERE label = 'Coat'")
        assert err.value.status == 401
        with pytest.raises(SlicetestError):
            Client(server.url, token="wrong").freeze("tops")
        created = Client(server.url, token="s3cret").create_slice("coats", "SELECT image_id FROM images WHERE label = 'Coat'")
        assert created["name"] == "coats"
    finally:
        assert server.stop() == 0


def test_a_public_address_without_a_token_is_refused(workspace):
    proc = subprocess.run(
        [slicetest_bin(), "--workspace", str(workspace), "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "--token" in proc.stderr


def test_embed_runs_a_server_job_and_search_works_after_it(tmp_path):
    """A workspace that was never embedded, a server whose default model is the tiny CLIP
    (SLICETEST_CLIP_MODEL): search says how to embed; Client.embed embeds a subset, then
    the rest, waiting for each job."""
    ws = clothes_workspace(tmp_path, embed=False)
    # 10 stands for the 50,000 vectors from which searches go through the HNSW index.
    server = Server(ws, env={"SLICETEST_CLIP_MODEL": str(TINY_CLIP), "SLICETEST_HNSW_MIN_ROWS": "10"})
    try:
        client = Client(server.url)
        with pytest.raises(SlicetestError) as err:
            client.search_text("a photo of a shirt")
        assert (err.value.status, err.value.code) == (409, "no_embeddings")
        assert err.value.details["command"] == f"slicetest -w {ws} embed clothes --model {TINY_CLIP}"
        assert err.value.details["model"] == str(TINY_CLIP)
        [clothes] = client.datasets()
        assert (clothes["name"], clothes["images"], clothes["embeddings"]) == ("clothes", 22, [])

        job = client.embed(where="split = 'test'", limit=4, batch_size=2)
        assert (job["state"], job["total"], job["done"], job["embedded"]) == ("done", 4, 4, 4), job
        assert (job["model"], job["where"], job["limit"], job["embeddings"]) == (str(TINY_CLIP), "split = 'test'", 4, "tiny-clip")
        assert (job["indexed"], job["warning"], job["phase"]) == (None, None, None), "4 vectors are scanned exactly"
        assert client.search_index() == {"state": "exact", "vectors": 4, "indexed": None, "warning": None}
        hits = client.search_text("a photo of a shirt", k=10)
        assert hits.num_rows == 4
        assert set(hits.column("image_id").to_pylist()) <= set(
            client.sql("SELECT image_id FROM images WHERE split = 'test'").column(0).to_pylist())

        queued = client.embed("clothes", wait=False)
        assert queued["state"] in ("queued", "running", "done")
        rest = client.wait(queued["id"], poll=0.1, timeout=120)
        assert (rest["embedded"], rest["already_embedded"]) == (18, 4), rest
        assert (rest["indexed"], rest["warning"]) == (22, None), "the job readied the index"
        assert (ws / "datasets/clothes/embeddings/tiny-clip/index/index.json").is_file()
        assert client.search_index() == {"state": "ready", "vectors": 22, "indexed": 22, "warning": None}
        assert client.search_text("a photo of a shirt", k=30).num_rows == 22
        assert [j["id"] for j in client.jobs()] == [rest["id"], job["id"]]

        with pytest.raises(SlicetestError) as err:
            client.embed(model=str(tmp_path / "no-such-model"))
        assert err.value.status == 400 and "no such directory" in err.value.message
        with pytest.raises(SlicetestError) as err:
            client.embed(where="brightnes < 0.5")
        assert err.value.status == 400 and "brightnes" in err.value.message
        assert len(client.jobs()) == 2, "refused jobs are not started"
    finally:
        server.stop()


READY_22 = {"state": "ready", "vectors": 22, "indexed": 22, "warning": None}


def wait_for_ready_index(client, passing):
    """Polls the default dataset's search index until `ready` (at most 60 s), every state
    before it one of `passing`; returns the ready state."""
    deadline = time.monotonic() + 60
    while (state := client.search_index())["state"] != "ready":
        assert state["state"] in passing, state
        assert time.monotonic() < deadline, f"the index was not ready after 60 s: {state}"
        time.sleep(0.05)
    return state


def test_a_restarted_server_searches_exactly_while_it_readies_the_index_in_the_background(tmp_path):
    """Embedded by the CLI with too few vectors for an index; a server that indexes from
    10 vectors (standing for 50,000): its first search answers at once (an exact scan) and
    starts building the graph on a thread; once `ready`, it is saved and searches go
    through it with the same results."""
    ws = clothes_workspace(tmp_path)
    index = ws / "datasets/clothes/embeddings/tiny-clip/index/index.json"
    assert not index.exists()
    server = Server(ws, env={"SLICETEST_HNSW_MIN_ROWS": "10"})
    try:
        client = Client(server.url)
        assert client.search_index() == {"state": "unloaded", "vectors": None, "indexed": None, "warning": None}
        assert client.search_index("clothes", "tiny-clip")["state"] == "unloaded"
        with pytest.raises(ValueError, match="no embeddings named 'other'"):
            client.search_index(model="other")
        exact = client.search_text("a photo of a shirt", k=5).to_pylist()
        assert len(exact) == 5
        assert wait_for_ready_index(client, passing=("missing", "building")) == READY_22
        assert index.is_file()
        assert client.search_text("a photo of a shirt", k=5).to_pylist() == exact
    finally:
        server.stop()


def test_a_warm_server_readies_the_index_before_any_search(tmp_path):
    """`serve --warm=clothes`: the dataset's embeddings are loaded and the index built
    (here from 10 vectors) at start-up, with no search made; a search then goes through
    the index and finds what an exact scan of a cold server finds. A dataset the
    workspace lacks stops the server before it listens."""
    ws = clothes_workspace(tmp_path)
    index = ws / "datasets/clothes/embeddings/tiny-clip/index/index.json"
    cold = Server(ws)
    try:
        exact = Client(cold.url).search_text("a photo of a shirt", k=5).to_pylist()
    finally:
        cold.stop()
    assert not index.exists(), "a server below the index threshold builds no index"
    misspelt = run(ws, "serve", "--port", "0", "--warm=clothse", check=False)
    assert misspelt.returncode != 0 and b"slicetest serving" not in misspelt.stdout
    assert '--warm=clothse: no dataset named "clothse"' in misspelt.stderr.decode(), misspelt.stderr
    server = Server(ws, "--warm=clothes", env={"SLICETEST_HNSW_MIN_ROWS": "10"})
    try:
        client = Client(server.url)
        assert wait_for_ready_index(client, passing=("unloaded", "missing", "building")) == READY_22
        assert index.is_file()
        assert client.search_text("a photo of a shirt", k=5).to_pylist() == exact
    finally:
        server.stop()


def test_a_failed_job_raises_with_its_error(tmp_path):
    """A Hugging Face id that is in no local cache, on a server told not to download:
    the job is accepted (ids resolve when the job runs) and fails saying what it tried."""
    ws = clothes_workspace(tmp_path, embed=False)
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_CACHE": str(tmp_path / "hf/hub")}
    server = Server(ws, env=env)
    try:
        client = Client(server.url)
        with pytest.raises(JobFailed) as err:
            client.embed(model="nobody/no-such-clip", timeout=60)
        job = err.value.job
        assert job["state"] == "failed" and job["embedded"] == 0
        assert "HF_HUB_OFFLINE" in job["error"] and "--model <dir>" in job["error"], job["error"]
    finally:
        server.stop()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A client of a server over 400 images with weather and time-of-day columns (dataset
    `street`) and run `r1`, uploaded through the client, that is wrong on 70% of the rainy
    nights and on 8% of the other images."""
    root = tmp_path_factory.mktemp("discover")
    rng = random.Random(3)
    (root / "img").mkdir()
    manifest, ids, predicted = ["path,label,weather,time"], [], []
    for i in range(400):
        path = f"img/{i:03d}.png"
        (root / path).write_bytes(png_bytes(2, 2, i))
        label = "car" if i % 2 else "person"
        weather, time = rng.choice(["sunny", "rain", "fog", "snow"]), rng.choice(["day", "night"])
        manifest.append(f"{path},{label},{weather},{time}")
        wrong = rng.random() < (0.7 if (weather, time) == ("rain", "night") else 0.08)
        ids.append(path)
        predicted.append(({"car", "person"} - {label}).pop() if wrong else label)
    (root / "manifest.csv").write_text("\n".join(manifest) + "\n")
    ws = root / "ws"
    run(ws, "init")
    run(ws, "ingest", "--quiet", "-d", "street", str(root / "manifest.csv"))
    server = Server(ws)
    client = Client(server.url)
    client.upload_predictions("r1", pa.table({"image_id": ids, "predicted": predicted}), model="m", model_version="1")
    yield client
    assert server.stop() == 0


def test_discover_finds_the_planted_failure(planted):
    found = planted.discover("r1", min_support=10)
    assert (found["run"], found["dataset"], found["error"], found["images"]) == ("r1", "street", "misclassification", 400)
    first = found["slices"][0]
    assert first["predicates"] == ["weather = 'rain'", "time = 'night'"], found
    assert first["confirmed"] and first["adjusted_p"] < 1e-4
    assert first["confirmation"]["error_rate"] > 3 * first["confirmation"]["rest_rate"]
    assert all(s["confirmed"] for s in found["slices"]), "confirmed ones only by default"
    # The query is plain SQL over images.
    members = planted.sql(first["query"])
    assert members.num_rows == first["discovery"]["size"] + first["confirmation"]["size"]

    narrow = planted.discover("r1", k=1, min_support=10, columns=["weather", "time"], seed=3)
    assert (narrow["columns"], narrow["seed"], len(narrow["slices"])) == (["weather", "time"], 3, 1)
    assert narrow["slices"][0]["predicates"] == ["weather = 'rain'", "time = 'night'"]

    # Regression mode against itself: nothing that was right is wrong now.
    same = planted.discover("r1", min_support=10, baseline="r1")
    assert (same["error"], same["baseline"], same["mean_error"], same["slices"]) == ("regression", "r1", 0.0, [])


def test_sql_reads_unqualified_names_in_the_dataset_asked_for(planted):
    # What a run page does for a run on a dataset other than the default one.
    counted = planted.sql("SELECT count(*) AS n FROM images", dataset="street").to_pydict()
    assert counted == {"n": [400]}
    assert planted.sql_summary("SELECT image_id FROM images", dataset="street")["rows"] == 400
    with pytest.raises(SlicetestError) as err:
        planted.sql("SELECT count(*) FROM images", dataset="nope")
    assert err.value.status == 404 and "nope" in err.value.message


def test_discover_table_has_a_row_per_slice(planted):
    found = planted.discover("r1", min_support=10)
    table = planted.discover_table("r1", min_support=10)
    assert table.schema == DISCOVERY_SCHEMA
    assert table.num_rows == len(found["slices"])
    row = table.to_pylist()[0]
    first = found["slices"][0]
    assert row["slice"] == "weather = 'rain' AND time = 'night'"
    assert (row["method"], row["explanation"]) == ("tags", None)
    assert row["excess_errors"] == pytest.approx(first["excess_errors"]) and row["excess_errors"] > 0
    assert row["query"] == first["query"] and row["confirmed"] is True
    assert (row["discovery_size"], row["confirmation_size"]) == (first["discovery"]["size"], first["confirmation"]["size"])
    assert row["error_low"] <= row["error_rate"] <= row["error_high"]
    assert row["lift"] == pytest.approx(row["error_rate"] / row["rest_rate"])
    assert row["adjusted_p"] == first["adjusted_p"]
    assert table.to_pandas()["confirmed"].all()

    # Nothing confirmed at an absurd FDR: an empty table with the same columns; all=True
    # lists what was tested, unconfirmed.
    none = planted.discover_table("r1", min_support=10, fdr=1e-100)
    assert none.num_rows == 0 and none.schema == DISCOVERY_SCHEMA
    tested = planted.discover_table("r1", min_support=10, fdr=1e-100, all=True)
    assert tested.num_rows > 0 and not any(tested.column("confirmed").to_pylist())


def test_discover_errors_say_which_setting(planted):
    with pytest.raises(SlicetestError) as err:
        planted.discover("r1", alpha=0)
    assert (err.value.status, err.value.code) == (400, "bad_request")
    assert "alpha must be in (0, 1]" in err.value.message
    with pytest.raises(SlicetestError) as err:
        planted.discover("r1", min_support=10, columns="weather,wether")
    assert err.value.status == 400 and '"wether"' in err.value.message
    with pytest.raises(SlicetestError) as err:
        planted.discover("r1", method="embeddings")
    assert err.value.status == 400 and "run `slicetest embed` first" in err.value.message
    with pytest.raises(SlicetestError) as err:
        planted.discover("r1", rank="best")
    assert err.value.status == 400 and "rank must be severity, excess or sliceline" in err.value.message
    with pytest.raises(SlicetestError) as err:
        planted.discover("nope")
    assert (err.value.status, err.value.code) == (404, "not_found")
