"""The Python client (python/, package `slicetest`) against a real `slicetest serve`.

The workspace is built through the CLI: a folder of real PNGs in the split/label layout,
embedded with the tiny CLIP fixture, with a frozen slice `tops`. The server runs on a free
loopback port for the whole module.
"""

import io
import re
import subprocess
from pathlib import Path

import pyarrow as pa
import pytest

from conftest import REPO, TINY_CLIP, Server, clothes_workspace, slicetest_bin

# Installed by scripts/install-deps.sh (pip install -e ./python).
from slicetest import Client, JobFailed, SliceDataset, SlicetestError


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
    assert err.value.status == 422


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
    server = Server(ws, env={"SLICETEST_CLIP_MODEL": str(TINY_CLIP)})
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
        hits = client.search_text("a photo of a shirt", k=10)
        assert hits.num_rows == 4
        assert set(hits.column("image_id").to_pylist()) <= set(
            client.sql("SELECT image_id FROM images WHERE split = 'test'").column(0).to_pylist())

        queued = client.embed("clothes", wait=False)
        assert queued["state"] in ("queued", "running", "done")
        rest = client.wait(queued["id"], poll=0.1, timeout=120)
        assert (rest["embedded"], rest["already_embedded"]) == (18, 4), rest
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
