"""The workspace in a bucket: the CLI against a real S3-compatible server (moto's, started
here on 127.0.0.1), giving the same results as the same commands on a local directory;
commits by conditional create (a writer that loses its version number merges again and
takes the next one, a killed writer leaves no visible version); clear errors for bad
bucket URLs and unreachable endpoints."""

import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from conftest import TINY_CLIP, Server, png_bytes, slicetest_bin
from slicetest import Client, SliceDataset, SlicetestError

BUCKET = "slicetest-ws"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": "us-east-1",
        # The local cache of content-keyed files, kept out of ~/.cache.
        "SLICETEST_CACHE_DIR": str(tmp_path_factory.mktemp("object-cache")),
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    client.create_bucket(Bucket=BUCKET)
    yield env, client
    server.stop()


def cli(ws, *args, env, check=True, timeout=300):
    proc = subprocess.run(
        [slicetest_bin(), "--workspace", str(ws), *args],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **env},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"slicetest {' '.join(args)} failed:\n{proc.stderr.decode()}")
    return proc


def keys(client, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(o["Key"] for page in pages for o in page.get("Contents", []))


def images(root: Path) -> Path:
    src = root / "pets"
    for split, label, n in [("train", "cat", 4), ("test", "cat", 2), ("train", "dog", 3), ("test", "dog", 1)]:
        for i in range(n):
            path = src / split / label / f"{label}{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png_bytes(6, 5, hash((split, label, i)) % 1000))
    return src


def one_image_dataset(ws, folder: Path, env):
    """A workspace at `ws` with dataset `ds`: one PNG, written into `folder`."""
    folder.mkdir()
    (folder / "a.png").write_bytes(png_bytes(4, 4, 1))
    cli(ws, "init", env=env)
    cli(ws, "ingest", "-d", "ds", "--quiet", str(folder), env=env)


def workflow(ws, src: Path, predictions: Path, env) -> dict:
    """The product's loop on one workspace; what each step printed, paths removed."""
    out = {}
    cli(ws, "init", env=env)
    ingest = cli(ws, "ingest", "-d", "pets", "--quiet", str(src), env=env).stdout.decode()
    out["ingest"] = ingest.split(" in ")[0]  # the timing differs
    sql = lambda q: cli(ws, "sql", "--format", "csv", q, env=env).stdout.decode()  # noqa: E731
    out["labels"] = sql("SELECT label, split, count(*) AS n FROM images GROUP BY 1, 2 ORDER BY 1, 2")
    out["columns"] = sql("SELECT column_name FROM information_schema.columns WHERE table_name = 'images' ORDER BY 1")
    cli(ws, "slice", "create", "cats", "SELECT image_id FROM images WHERE label = 'cat'", env=env)
    cli(ws, "slice", "freeze", "cats", "--holdout", "0.5", "--seed", "3", env=env)
    out["again"] = cli(ws, "slice", "freeze", "cats", "--holdout", "0.5", "--seed", "3", env=env).stdout.decode()
    out["members"] = sql("SELECT image_id, holdout FROM slice('cats') ORDER BY image_id")
    cli(ws, "run", "upload", str(predictions), "--run", "m1", "--model", "m", env=env)
    report = json.loads(cli(ws, "report", "--run", "m1", "--format", "json", env=env).stdout)
    out["report"] = [
        (s["slice"], s["members"], s["scored"], s["classification"]["accuracy"], s["verdict"]) for s in report["slices"]
    ]
    out["overall"] = report["overall"]["classification"]["accuracy"]
    out["runs"] = cli(ws, "run", "list", env=env).stdout.decode().splitlines()[0]
    refused = cli(ws, "run", "upload", str(predictions), "--run", "m1", "--model", "m", env=env, check=False)
    out["rerun"] = (refused.returncode != 0, "already exists" in refused.stderr.decode())
    cli(ws, "slice", "drop", "cats", env=env)
    out["after_drop"] = cli(ws, "slice", "list", env=env).stdout.decode()
    return out


def test_the_workflow_on_a_bucket_gives_what_it_gives_on_a_local_directory(tmp_path, s3):
    env, client = s3
    src = images(tmp_path)
    predictions = tmp_path / "pred.csv"
    rows = ["image_id,predicted"]
    for path in sorted(src.rglob("*.png")):
        rel = path.relative_to(src).as_posix()
        rows.append(f"{rel},{'cat' if 'cat0' in rel or 'dog' in rel else path.parent.name}")
    predictions.write_text("\n".join(rows) + "\n")

    local = workflow(tmp_path / "ws", src, predictions, env)
    remote = workflow(f"s3://{BUCKET}/same/ws", src, predictions, env)
    assert remote == local
    assert local["rerun"] == (True, True)
    assert "false" in local["again"]
    stored = keys(client, "same/ws/")
    assert "same/ws/workspace.toml" in stored
    assert "same/ws/datasets/pets/versions/1/version.json" in stored
    assert any(k.startswith("same/ws/datasets/pets/versions/1/images-") for k in stored), stored
    assert "same/ws/runs/m1/run.json" in stored
    assert not any(k.startswith("same/ws/slices/cats") for k in stored), "dropped slices leave nothing"
    # The queries read the images table from the local cache after its first download.
    images_key = next(k for k in stored if k.startswith("same/ws/datasets/pets/versions/1/images-"))
    cached = Path(env["SLICETEST_CACHE_DIR"]) / "s3" / BUCKET / images_key
    assert cached.read_bytes() == client.get_object(Bucket=BUCKET, Key=images_key)["Body"].read()


def test_the_cache_of_a_bucket_can_be_turned_off(tmp_path, s3):
    env, _ = s3
    off = {**env, "SLICETEST_CACHE_DIR": str(tmp_path / "cache"), "SLICETEST_CACHE_MAX_GB": "0"}
    ws = f"s3://{BUCKET}/uncached"
    cli(ws, "init", env=off)
    cli(ws, "ingest", "-d", "pets", "--quiet", str(images(tmp_path)), env=off)
    out = cli(ws, "sql", "--format", "csv", "SELECT count(*) AS n FROM images", env=off).stdout.decode()
    assert out == "n\n10\n"
    assert not (tmp_path / "cache").exists()


def test_an_ingest_that_loses_its_number_on_a_bucket_merges_again(tmp_path, s3):
    env, client = s3
    ws = f"s3://{BUCKET}/race"
    for name, seed in [("a", 1), ("b", 2), ("c", 3)]:
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.png").write_bytes(png_bytes(4, 4, seed))
    cli(ws, "init", env=env)
    cli(ws, "ingest", "-d", "ds", "--quiet", str(tmp_path / "a"), env=env)
    hold = tmp_path / "hold"
    held = subprocess.Popen(
        [slicetest_bin(), "--workspace", ws, "ingest", "-d", "ds", "--quiet", str(tmp_path / "b")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={
            **os.environ,
            **env,
            "SLICETEST_FAILPOINT": "ingest-before-publish",
            "SLICETEST_FAILPOINT_HOLD": str(hold),
        },
    )
    deadline = time.time() + 60
    while not (tmp_path / "hold.reached").exists():
        assert time.time() < deadline and held.poll() is None, held.stderr.read().decode()
        time.sleep(0.02)
    # Version 2 is committed by another writer while the first waits to commit its own 2.
    assert "version 2 published" in cli(ws, "ingest", "-d", "ds", str(tmp_path / "c"), env=env).stdout.decode()
    hold.write_text("")
    out, err = held.communicate(timeout=120)
    assert held.returncode == 0, err.decode()
    assert "version 3 published" in out.decode(), out.decode()
    manifests = [k for k in keys(client, "race/datasets/ds/versions/") if k.endswith("version.json")]
    assert len(manifests) == 3, manifests
    ids = cli(ws, "sql", "--format", "csv", "SELECT image_id FROM images ORDER BY 1", env=env).stdout.decode()
    assert ids == "image_id\na.png\nb.png\nc.png\n"
    # The loser's files for number 2 were removed: version 2 holds only what its manifest names.
    v2 = keys(client, "race/datasets/ds/versions/2/")
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key="race/datasets/ds/versions/2/version.json")["Body"].read())
    named = {manifest["images_file"], manifest["report_file"], "version.json"}
    assert {k.rsplit("/", 1)[1] for k in v2} == named


def test_a_killed_ingest_leaves_no_visible_version_on_a_bucket(tmp_path, s3):
    env, client = s3
    ws = f"s3://{BUCKET}/killed"
    one_image_dataset(ws, tmp_path / "a", env)
    (tmp_path / "a" / "b.png").write_bytes(png_bytes(4, 4, 2))
    for failpoint in ["ingest-after-parquet", "ingest-before-publish"]:
        killed = cli(ws, "ingest", "-d", "ds", "--quiet", str(tmp_path / "a"), env={**env, "SLICETEST_FAILPOINT": failpoint}, check=False)
        assert killed.returncode != 0
        assert any(k.startswith("killed/datasets/ds/versions/2/images-") for k in keys(client, "killed/"))
        assert "killed/datasets/ds/versions/2/version.json" not in keys(client, "killed/")
        n = cli(ws, "sql", "--format", "csv", "SELECT count(*) AS n FROM images", env=env).stdout.decode()
        assert n == "n\n1\n"
    out = cli(ws, "ingest", "-d", "ds", str(tmp_path / "a"), env=env).stdout.decode()
    assert "version 2 published" in out


@pytest.mark.parametrize(
    "url, extra_env, expected",
    [
        ("s3:///no-bucket", {}, "names no bucket"),
        ("gs://bucket/ws", {}, 'unsupported storage scheme "gs"'),
        ("s3://no-such-bucket-here/ws", {}, "s3://no-such-bucket-here/ws/workspace.toml: the bucket does not exist"),
        (
            f"s3://{BUCKET}/unreachable",
            {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"},
            "s3://slicetest-ws/unreachable/workspace.toml: the storage endpoint cannot be reached",
        ),
    ],
)
def test_bad_storage_urls_fail_with_one_clear_error(s3, url, extra_env, expected):
    env, _ = s3
    started = time.time()
    out = cli(url, "sql", "SELECT 1", env={**env, **extra_env}, check=False, timeout=120)
    err = out.stderr.decode()
    assert out.returncode != 0
    assert expected in err, err
    assert time.time() - started < 60, "bounded retries and timeouts"


VECTORS = "SELECT image_id, array_to_string(vector, ' ') AS v FROM embeddings ORDER BY image_id"
PIXEL_TAGS = "SELECT image_id, brightness, contrast, width FROM images ORDER BY image_id"
EMBED = ["embed", "--model", str(TINY_CLIP), "--device", "cpu", "--chunk-size", "2", "--quiet"]
TAG = ["tag", "--tagger", "pixels", "--quiet", "--chunk-size", "1", "--checkpoint-secs", "0"]


def sql(ws, query, env):
    return cli(ws, "sql", "--format", "csv", query, env=env).stdout.decode()


def tagged_and_embedded(ws, src: Path, env) -> dict:
    """Tags, embeddings and what SQL makes of them, on one workspace."""
    cli(ws, "init", env=env)
    cli(ws, "ingest", "-d", "pets", "--quiet", str(src), env=env)
    out = {"tag": cli(ws, *TAG, env=env).stdout.decode().split(" in ")[0]}
    out["tags"] = sql(ws, PIXEL_TAGS, env)
    out["again"] = cli(ws, *TAG, env=env).stdout.decode().split(" in ")[0]
    out["embed"] = cli(ws, *EMBED, env=env).returncode
    out["vectors"] = sql(ws, VECTORS, env)
    out["search"] = sql(ws, "SELECT image_id, round(score, 5) AS s FROM text_search('a photo of a cat', 3)", env)
    out["similar"] = sql(ws, "SELECT image_id FROM image_search('train/cat/cat0.png', 4)", env)
    out["list"] = cli(ws, "tag", "list", env=env).stdout.decode()
    out["compact"] = cli(ws, "tag", "compact", env=env).stdout.decode()
    out["compacted"] = sql(ws, PIXEL_TAGS, env)
    cli(ws, "tag", "remove", "pixels", env=env)
    out["removed"] = sql(ws, "SELECT count(*) AS n FROM information_schema.columns WHERE column_name = 'brightness'", env)
    return out


def test_tags_and_embeddings_on_a_bucket_equal_a_local_directory(tmp_path, s3):
    env, client = s3
    src = images(tmp_path)
    local = tagged_and_embedded(tmp_path / "ws", src, env)
    remote = tagged_and_embedded(f"s3://{BUCKET}/tagged", src, env)
    assert remote == local
    assert local["tags"].count("\n") == 11 and local["vectors"].count("\n") == 11
    assert "0 images" in local["again"], local["again"]
    stored = keys(client, "tagged/datasets/pets/")
    parts = [k for k in stored if k.startswith("tagged/datasets/pets/embeddings/tiny-clip/part-")]
    # Ten images, two a part, merged into one when the run finished: the parts it replaced
    # are gone from the bucket.
    assert len(parts) == 1, stored
    assert "tagged/datasets/pets/embeddings/tiny-clip/model.json" in stored
    assert not any("/tags/pixels/" in k for k in stored), "tag remove leaves nothing"
    # Queries on the tagged table read its materialised file (`wide/<key>.parquet`, written
    # once per key) from the local cache after its first download, as they do the images table.
    wide = list((Path(env["SLICETEST_CACHE_DIR"]) / "s3" / BUCKET / "tagged/datasets/pets/wide").glob("*.parquet"))
    assert wide and all(re.fullmatch(r"[0-9a-f]{32}\.parquet", f.name) for f in wide), wide


def shards_at_once(ws, args, n, killed, failpoint, env):
    """Runs the n shards of `args` as processes at once, shard `killed` dying at `failpoint`."""
    procs = [
        subprocess.Popen(
            [slicetest_bin(), "--workspace", ws, *args, "--shard", f"{i}/{n}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, **env, **({"SLICETEST_FAILPOINT": failpoint} if i == killed else {})},
        )
        for i in range(n)
    ]
    return [(p.wait(timeout=300) == 0, p.stderr.read().decode()) for p in procs]


@pytest.mark.parametrize(
    "job, failpoint, query",
    [(EMBED, "embed-after-part", VECTORS), (TAG, "tag-after-publish", PIXEL_TAGS)],
    ids=["embed", "tag"],
)
def test_shards_on_a_bucket_one_killed_and_rerun_equal_one_local_run(tmp_path, s3, job, failpoint, query):
    env, _ = s3
    src = images(tmp_path)
    local = tmp_path / "ws"
    cli(local, "init", env=env)
    cli(local, "ingest", "-d", "pets", "--quiet", str(src), env=env)
    cli(local, *job, env=env)
    expected = sql(local, query, env)

    ws = f"s3://{BUCKET}/sharded-{job[0]}"
    cli(ws, "init", env=env)
    cli(ws, "ingest", "-d", "pets", "--quiet", str(src), env=env)
    # Shard 0 holds four of the ten images; it dies after its first part.
    runs = shards_at_once(ws, job, 3, 0, failpoint, env)
    assert [ok for ok, _ in runs] == [False, True, True], runs
    assert sql(ws, query, env) != expected, "the killed shard left images undone"
    cli(ws, *job, "--shard", "0/3", env=env)
    assert sql(ws, query, env) == expected, "the union of the shards is the unsharded run"


COCO_MASKS = Path(__file__).resolve().parents[2] / "datasets/tests/fixtures/coco_masks"


def masks_and_segmentation(ws, root: Path, env) -> dict:
    """A COCO file with segmentations ingested (its mask set), a folder of PNG label maps
    imported as a second set, a segmentation run scored against the first; what SQL and
    the report say, and removal."""
    instances = json.loads((COCO_MASKS / "instances.json").read_text())
    src = root / "street"
    src.mkdir(parents=True)
    for i, image in enumerate(instances["images"]):
        (src / image["file_name"]).write_bytes(png_bytes(image["width"], image["height"], i))
    (src / "instances.json").write_text(json.dumps(instances))
    label_maps = root / "label-maps"
    label_maps.mkdir()
    for image in instances["images"]:
        # Class 1 on the top rows, class 2 below, 255 (ignored) on the last row.
        w, h = image["width"], image["height"]
        rows = [[1] * w] * (h // 2) + [[2] * w] * (h - h // 2 - 1) + [[255] * w]
        (label_maps / Path(image["file_name"]).with_suffix(".png").name).write_bytes(gray_png(rows))
    (root / "classes.txt").write_text("unlabelled\nroad\nsky\n")
    cli(ws, "init", env=env)
    out = {"ingest": cli(ws, "ingest", "-d", "street", "--quiet", str(src / "instances.json"), env=env).returncode}
    imported = cli(ws, "tag", "import", "--masks", str(label_maps), "--classes", str(root / "classes.txt"),
                   "--name", "painted", env=env)
    out["import"] = imported.stdout.decode().split(" in ")[0]
    out["masks"] = sql(ws, "SELECT * FROM masks ORDER BY source, image_id, class_id", env)
    out["tags"] = sql(ws, "SELECT image_id, road_pct, sky_pct FROM images ORDER BY image_id", env)
    cli(ws, "run", "upload", str(COCO_MASKS / "results.json"), "--run", "seg", "--model", "m",
        "--mask-source", "instances", env=env)
    scores = json.loads(cli(ws, "report", "--run", "seg", "--format", "json", env=env).stdout)
    out["scores"] = scores["overall"]["segmentation"]["scores"]
    # Imported again with the same files: the same set; then removed.
    out["again"] = cli(ws, "tag", "import", "--masks", str(label_maps), "--classes", str(root / "classes.txt"),
                       "--name", "painted", env=env).stdout.decode().split(" in ")[0]
    cli(ws, "tag", "remove", "painted", env=env)
    out["after_remove"] = sql(ws, "SELECT DISTINCT source FROM masks", env)
    return out


def gray_png(rows) -> bytes:
    import struct
    import zlib

    h, w = len(rows), len(rows[0])
    raw = b"".join(b"\x00" + bytes(row) for row in rows)
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_mask_sets_and_segmentation_runs_on_a_bucket_equal_a_local_directory(tmp_path, s3):
    env, client = s3
    local = masks_and_segmentation(tmp_path / "ws", tmp_path / "local", env)
    ws = f"s3://{BUCKET}/masks"
    bucket = masks_and_segmentation(ws, tmp_path / "bucket", env)
    assert bucket == local
    assert "painted" in local["import"] and local["again"] == local["import"], local
    painted = [line.split(",")[1:4] for line in local["masks"].splitlines() if ",painted," in line]
    assert painted and {tuple(p) for p in painted} == {("painted", "road", "1"), ("painted", "sky", "2")}, local["masks"]
    assert local["after_remove"].strip().splitlines() == ["source", "instances"], local["after_remove"]
    files = [k for k in keys(client, "masks/datasets/street/masks/")]
    # Only the remaining set's manifest and its two content-keyed files.
    assert [k.rsplit("/", 1)[1].split("-")[0] for k in files] == ["classes", "labels", "masks.json"], files


def idx_files(folder: Path, n: int) -> Path:
    import struct

    folder.mkdir(parents=True)
    for part, count in [("train", n), ("t10k", 2)]:
        pixels = bytes((i * 7 + j) % 256 for i in range(count) for j in range(28 * 28))
        (folder / f"{part}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, count, 28, 28) + pixels)
        (folder / f"{part}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, count) + bytes(i % 10 for i in range(count)))
    return folder


def test_an_idx_import_into_a_bucket_writes_its_pngs_there(tmp_path, s3):
    env, client = s3
    src = idx_files(tmp_path / "fashion", 20)
    local = tmp_path / "ws"
    cli(local, "init", env=env)
    cli(local, "ingest", "-d", "fm", "--quiet", str(src), env=env)
    ws = f"s3://{BUCKET}/idx"
    cli(ws, "init", env=env)
    cli(ws, "ingest", "-d", "fm", "--quiet", str(src), env=env)
    query = "SELECT image_id, split, label, width, height, sha256, uri FROM images ORDER BY image_id"
    assert sql(ws, query, env) == sql(local, query, env)
    pngs = [k for k in keys(client, "idx/datasets/fm/files/") if k.endswith(".png")]
    assert len(pngs) == len({*sql(local, "SELECT sha256 FROM images", env).split()[1:]}), pngs
    # Pixels are read back from the bucket: tagging gives what it gives locally.
    cli(local, *TAG, env=env)
    cli(ws, *TAG, env=env)
    assert sql(ws, PIXEL_TAGS, env) == sql(local, PIXEL_TAGS, env)
    # A second import writes nothing new.
    again = cli(ws, "ingest", "-d", "fm", str(src), env=env).stdout.decode()
    assert "fm: unchanged, still version 1 with 22 images" in again, again
    assert [k for k in keys(client, "idx/datasets/fm/files/") if k.endswith(".png")] == pngs


def upload_folder(client, src: Path, prefix: str):
    for path in sorted(src.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=BUCKET, Key=f"{prefix}/{path.relative_to(src).as_posix()}", Body=path.read_bytes())


IMAGE_FACTS = "SELECT image_id, split, label, width, height, format, sha256 FROM images ORDER BY image_id"


def pixels_and_vectors(ws, src, env) -> dict:
    """Ingest `src` (a folder or a bucket prefix), tag, embed; what SQL says of the result."""
    cli(ws, "init", env=env)
    ingest = cli(ws, "ingest", "-d", "pets", str(src), env=env)
    return {
        "ingest": ingest.stdout.decode().split(" in ")[0].replace(str(src), "SRC"),
        "rejected": ingest.stderr.decode(),
        "facts": sql(ws, IMAGE_FACTS, env),
        "tag": cli(ws, *TAG, env=env).stdout.decode().split(" in ")[0],
        "tags": sql(ws, PIXEL_TAGS, env),
        "embed": cli(ws, *EMBED, env=env).returncode,
        "vectors": sql(ws, VECTORS, env),
    }


def test_images_in_a_bucket_ingest_tag_and_embed_like_a_local_folder(tmp_path, s3):
    env, client = s3
    src = images(tmp_path)
    (src / "train" / "cat" / "broken.png").write_bytes(b"not a png")
    (src / "notes.txt").write_text("not an image")
    (src / ".hidden").mkdir()
    (src / ".hidden" / "x.png").write_bytes(png_bytes(4, 4, 9))
    upload_folder(client, src, "images/pets")

    local = pixels_and_vectors(tmp_path / "ws", src, env)
    # The workspace in the bucket too: nothing of this dataset is on local disk.
    remote = pixels_and_vectors(f"s3://{BUCKET}/bucket-images/ws", f"s3://{BUCKET}/images/pets/", env)
    assert remote == local
    assert "broken.png" in local["rejected"] and "not an image" in local["rejected"], local["rejected"]
    assert local["facts"].count("\n") == 11 and local["vectors"].count("\n") == 11
    uris = sql(f"s3://{BUCKET}/bucket-images/ws", "SELECT uri FROM images ORDER BY uri LIMIT 1", env)
    assert uris == f"uri\ns3://{BUCKET}/images/pets/test/cat/cat0.png\n", uris


def test_a_manifest_may_list_objects_and_a_missing_one_is_reported(tmp_path, s3):
    env, client = s3
    src = images(tmp_path)
    upload_folder(client, src, "manifest-images")
    manifest = tmp_path / "manifest.csv"
    rows = ["path,label"]
    for path in sorted(src.rglob("*.png"))[:3]:
        rows.append(f"s3://{BUCKET}/manifest-images/{path.relative_to(src).as_posix()},{path.parent.name}")
    rows.append(f"s3://{BUCKET}/manifest-images/gone.png,cat")
    manifest.write_text("\n".join(rows) + "\n")
    ws = tmp_path / "ws"
    cli(ws, "init", env=env)
    out = cli(ws, "ingest", "-d", "m", str(manifest), env=env).stderr.decode()
    assert "gone.png" in out and "no such object in the bucket" in out, out
    ids = sql(ws, "SELECT image_id, label FROM images ORDER BY 1", env)
    assert ids == "image_id,label\nmanifest-images/test/cat/cat0.png,cat\nmanifest-images/test/cat/cat1.png,cat\nmanifest-images/test/dog/dog0.png,dog\n", ids
    # An empty prefix and a non-folder format say what is wrong.
    err = cli(ws, "ingest", "-d", "e", f"s3://{BUCKET}/nothing-here/", env=env, check=False).stderr.decode()
    assert "no image objects found under this prefix" in err, err
    err = cli(ws, "ingest", "-d", "e", "--format", "coco", f"s3://{BUCKET}/manifest-images/", env=env, check=False)
    assert "a bucket prefix is ingested as a folder of images" in err.stderr.decode(), err.stderr.decode()


def test_watch_a_bucket_prefix_ingests_tags_and_diffs_what_arrives(tmp_path, s3):
    """The product's "bucket that keeps updating": each look at the prefix ingests the new
    objects, tags them, and says how each slice changed."""
    env, client = s3
    ws = f"s3://{BUCKET}/watched/ws"
    prefix = f"s3://{BUCKET}/watched/incoming/"
    put = lambda key, seed: client.put_object(Bucket=BUCKET, Key=f"watched/incoming/{key}", Body=png_bytes(6, 5, seed))  # noqa: E731
    put("train/cat/a.png", 1)
    put("train/dog/b.png", 2)
    cli(ws, "init", env=env)
    first = cli(ws, "watch", prefix, "--dataset", "cams", "--once", "--quiet", env=env).stdout.decode()
    assert "cams v1: 2 new, 0 changed, 0 rejected (2 images; read 2 of 2 files)" in first, first
    cli(ws, *TAG, env=env)
    cli(ws, "slice", "create", "cats", "SELECT image_id FROM images WHERE label = 'cat'", env=env)
    put("test/cat/c.png", 3)
    put("test/cat/d.txt", 4)
    out = cli(ws, "watch", prefix, "--dataset", "cams", "--once", "--quiet", env=env).stdout.decode()
    assert "cams v2: 1 new, 0 changed, 0 rejected (3 images; read 3 of 3 files)" in out, out
    assert "pixels tagged 1" in out, out
    assert "slice cats: 1 → 2 (+1, −0)" in out, out
    assert sql(ws, "SELECT count(brightness) AS n FROM images", env) == "n\n3\n"
    again = cli(ws, "watch", prefix, "--dataset", "cams", "--once", "--quiet", env=env).stdout.decode()
    assert "cams: nothing new (v2, 3 images; read 3 of 3 files)" in again, again

    # A running watch fetches only objects that are new or changed (their ETag) since its
    # last look: the listing says which.
    watch = subprocess.Popen(
        [slicetest_bin(), "--workspace", ws, "watch", prefix, "--dataset", "cams", "--every", "1s", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **env},
    )
    try:
        first = watch.stdout.readline().decode()
        assert "cams: nothing new (v2, 3 images; read 3 of 3 files)" in first, first
        put("train/dog/b.png", 22)  # new pixels in a known object
        put("test/dog/e.png", 5)
        # The two puts may land in one look or two: count over the looks until both are in.
        new = changed = read = 0
        for line in iter(watch.stdout.readline, b""):
            look = re.search(r"cams v\d+: (\d+) new, (\d+) changed, 0 rejected \(\d+ images; read (\d+) of", line.decode())
            if look:
                new, changed, read = new + int(look[1]), changed + int(look[2]), read + int(look[3])
            if new + changed == 2:
                break
        assert (new, changed, read) == (1, 1, 2), line
    finally:
        watch.terminate()
        watch.wait(timeout=30)


def test_first_ingests_racing_on_a_bucket_leave_one_default_and_a_whole_config(tmp_path, s3):
    """workspace.toml is changed with a conditional put on its ETag: of four first ingests
    of different datasets at once, exactly one sets the default; the others keep it."""
    env, client = s3
    ws = f"s3://{BUCKET}/defaults"
    cli(ws, "init", env=env)
    folders = []
    for i in range(4):
        folder = tmp_path / f"d{i}"
        folder.mkdir()
        (folder / "a.png").write_bytes(png_bytes(4, 4, i))
        folders.append(folder)
    procs = [
        subprocess.Popen([slicetest_bin(), "--workspace", ws, "ingest", "-d", f"d{i}", "--quiet", str(f)], env={**os.environ, **env})
        for i, f in enumerate(folders)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    config = client.get_object(Bucket=BUCKET, Key="defaults/workspace.toml")["Body"].read().decode()
    default = next(line for line in config.splitlines() if line.startswith("default_dataset"))
    chosen = default.split("=")[1].strip().strip('"')
    assert chosen in {"d0", "d1", "d2", "d3"}, config
    assert sql(ws, "SELECT count(*) AS n FROM images", env) == "n\n1\n"  # the default's images
    for i in range(4):
        assert sql(ws, f"SELECT count(*) AS n FROM d{i}.images", env) == "n\n1\n"


def test_serve_over_a_bucket_answers_the_python_client(tmp_path, s3):
    """The HTTP API and the Python client over a bucket workspace whose images are in the
    bucket too: SQL, slices created and
    frozen over HTTP, a slice's images as bytes, a run uploaded and scored."""
    env, client = s3
    ws = f"s3://{BUCKET}/served"
    src = images(tmp_path)
    upload_folder(client, src, "served-images")
    cli(ws, "init", env=env)
    cli(ws, "ingest", "-d", "pets", "--quiet", f"s3://{BUCKET}/served-images", env=env)
    server = Server(ws, env=env)
    try:
        api = Client(server.url)
        counts = api.sql("SELECT label, count(*) AS n FROM images GROUP BY label ORDER BY label").to_pydict()
        assert counts == {"label": ["cat", "dog"], "n": [6, 4]}
        api.create_slice("cats", "SELECT image_id FROM images WHERE label = 'cat'")
        api.freeze("cats")
        assert [s["name"] for s in api.slices()] == ["cats"]
        assert api.slice("cats").num_rows == 6
        data, label = SliceDataset(api, "cats")[0]
        assert data.startswith(b"\x89PNG") and label == "cat"
        # Image bytes and thumbnails come from the bucket the images are in.
        assert api.image("train/dog/dog2.png") == (src / "train/dog/dog2.png").read_bytes()
        assert api.thumbnail("train/dog/dog2.png", size=4).startswith(b"\x89PNG")
        test = api.sql("SELECT image_id FROM images WHERE split = 'test' ORDER BY image_id").to_pandas()
        test["predicted"] = "cat"
        manifest = api.upload_predictions("all-cat", test, model="const", model_version="1", allow_partial=True)
        assert manifest["run"] == "all-cat"
        assert api.metrics("all-cat")["overall"]["scored"] == 3
        with pytest.raises(SlicetestError) as err:
            api.upload_predictions("all-cat", test, model="const", model_version="1", allow_partial=True)
        assert (err.value.status, err.value.code) == (409, "exists")
    finally:
        server.stop()
    stored = keys(client, "served/")
    assert "served/runs/all-cat/run.json" in stored
    assert any(k.startswith("served/slices/cats/v1") for k in stored), stored


def test_a_server_with_a_read_consistency_interval_sees_others_commits_that_late_and_its_own_at_once(tmp_path, s3):
    """`SLICETEST_READ_CONSISTENCY_INTERVAL`: listings and manifests are answered from what
    the server read within the interval, so another process's commit shows up late; any
    write of the server's own makes it read the bucket again."""
    env, _ = s3
    ws = f"s3://{BUCKET}/remembering"
    src = images(tmp_path)
    cli(ws, "init", env=env)
    cli(ws, "ingest", "-d", "pets", "--quiet", str(src), env=env)
    count = "SELECT count(*) AS n FROM images"
    server = Server(ws, env={**env, "SLICETEST_READ_CONSISTENCY_INTERVAL": "60"})
    try:
        api = Client(server.url)
        assert api.sql(count).to_pydict() == {"n": [10]}
        (src / "train/cat/cat9.png").write_bytes(png_bytes(6, 5, 901))
        cli(ws, "ingest", "-d", "pets", "--quiet", str(src), env=env)
        assert cli(ws, "sql", "--format", "csv", count, env=env).stdout.decode() == "n\n11\n"
        assert api.sql(count).to_pydict() == {"n": [10]}, "the other process's commit is not seen yet"
        api.create_slice("cats", "SELECT image_id FROM images WHERE label = 'cat'")
        assert api.sql(count).to_pydict() == {"n": [11]}, "after its own write the server reads the bucket"
        assert [s["name"] for s in api.slices()] == ["cats"]
    finally:
        server.stop()
    assert any("in the last 60 s are answered from memory" in line for line in server.lines), server.lines


class Process:
    """A `slicetest` subcommand in the background; `line` is its first line of output."""

    def __init__(self, *args: str, env: dict):
        self.proc = subprocess.Popen(
            [slicetest_bin(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **env},
        )
        self.line = self.proc.stdout.readline()

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=30)


def test_sql_on_a_cluster_over_a_bucket_answers_what_one_process_answers(tmp_path, s3):
    """A real scheduler and two executors whose only way to the workspace is the bucket
    (the AWS_* variables): the scheduler lists the tables' files there, the executors read
    them, and every answer equals the one process's."""
    env, _ = s3
    ws = f"s3://{BUCKET}/clustered"
    cli(ws, "init", env=env)
    cli(ws, "ingest", "-d", "pets", "--quiet", str(images(tmp_path)), env=env)
    cli(ws, "slice", "create", "cats", "SELECT image_id FROM images WHERE label = 'cat'", env=env)
    cli(ws, "slice", "freeze", "cats", "--holdout", "0.5", "--seed", "3", env=env)
    queries = [
        "SELECT label, split, count(*) AS n FROM images GROUP BY 1, 2 ORDER BY 1, 2",
        "SELECT s.image_id, s.holdout, i.split FROM slice('cats') s JOIN images i USING (image_id) ORDER BY 1",
        "SELECT label, sum(CASE WHEN in_slice(image_id, 'cats') THEN 1 ELSE 0 END) AS n FROM images GROUP BY 1 ORDER BY 1",
    ]
    expected = [cli(ws, "sql", "--format", "csv", q, env=env).stdout.decode() for q in queries]
    scheduler = Process("scheduler", "--bind", "127.0.0.1:0", env=env)
    executors = []
    try:
        url = re.search(r"df://[\d.]+:\d+", scheduler.line).group(0)
        for _ in range(2):
            executors.append(Process("executor", "--scheduler", url, "--vcores", "2", env=env))
        deadline = time.time() + 60
        while True:  # until the executors have registered
            first = cli(ws, "--cluster", url, "sql", "--format", "csv", queries[0], env=env, check=False)
            if first.returncode == 0 or time.time() > deadline:
                break
            time.sleep(0.5)
        assert first.returncode == 0, first.stderr.decode()
        answers = [cli(ws, "--cluster", url, "sql", "--format", "csv", q, env=env).stdout.decode() for q in queries]
        assert answers == expected
        assert expected[0].startswith("label,split,n\ncat,test,2\n")
        plan = cli(ws, "--cluster", url, "sql", "--format", "csv", f"EXPLAIN ANALYZE {queries[0]}", env=env).stdout
        assert b"ShuffleWriterExec" in plan, plan.decode()
    finally:
        for process in [*executors, scheduler]:
            process.stop()
