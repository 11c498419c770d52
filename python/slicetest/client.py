"""The HTTP client: one :class:`Client` per server."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import os
import tempfile
import time
import warnings
import zipfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union
from urllib.parse import quote

import pyarrow as pa
import pyarrow.csv
import pyarrow.feather
import pyarrow.ipc
import pyarrow.parquet
import requests
import urllib3

if TYPE_CHECKING:  # pandas is optional
    import pandas as pd

ARROW_STREAM = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"


class SlicetestError(Exception):
    """An error answered by the server: ``status`` (HTTP), ``code`` and ``message``;
    ``details`` is the whole error object (``no_embeddings`` adds ``dataset``, ``hint``,
    ``command`` and ``model``; ``job_running`` adds ``job``). ``position`` is where in the
    SQL text a query error is, as ``(line, column)`` (1-based), when the server says.
    A streamed table cut short raises it with code ``timeout`` (the server's query time
    limit cut it) or ``truncated`` (a failure after the first rows, or a broken
    connection), and the status the answer started with (200)."""

    def __init__(self, status: int, code: str, message: str, details: Optional[Dict[str, Any]] = None):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        at = self.details.get("position")
        self.position: Optional[Tuple[int, int]] = (at["line"], at["column"]) if isinstance(at, dict) else None


class JobFailed(SlicetestError):
    """A server-side job ended in state ``failed``; ``job`` is its last state."""

    def __init__(self, job: Dict[str, Any]):
        message = f"job {job['id']} ({job['kind']} {job['dataset']}) failed: {job.get('error')}"
        Exception.__init__(self, message)
        self.status = None
        self.code = "job_failed"
        self.message = message
        self.details = {"job": job}
        self.job = job


class Client:
    """A connection to ``slicetest serve``.

    Args:
        url: the server, e.g. ``http://127.0.0.1:7878``.
        token: the bearer token, needed for writes when the server has one.
        timeout: seconds to wait for each request.
    """

    def __init__(self, url: str = "http://127.0.0.1:7878", token: Optional[str] = None, timeout: float = 300.0):
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    # -- plumbing -----------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        response = self._session.request(method, self.url + path, **kwargs)
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise SlicetestError(response.status_code, error["code"], error["message"], error)
            except (ValueError, KeyError, TypeError):
                # Not the API's JSON: an error of the HTTP layer (414 for a URL over 64 KiB
                # has no body) or of a proxy in between.
                message = response.text[:500].strip() or f"{response.reason or 'error'} (the answer has no body)"
                raise SlicetestError(response.status_code, "http", message) from None
        return response

    def _table(self, method: str, path: str, **kwargs: Any) -> pa.Table:
        headers = {"Accept": ARROW_STREAM, **kwargs.pop("headers", {})}
        response = self._request(method, path, headers=headers, stream=True, **kwargs)
        started = time.monotonic()
        with response:
            response.raw.decode_content = True
            try:
                # Read the streamed body into Arrow without holding it twice.
                with pa.ipc.open_stream(response.raw) as reader:
                    return reader.read_all()
            except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, pa.ArrowInvalid) as e:
                raise _cut_short(response, time.monotonic() - started, e) from e

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- reads --------------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """The server's status and version."""
        return self._json("GET", "/health")

    def sql(
        self, query: str, limit: Optional[int] = None, offset: Optional[int] = None, dataset: Optional[str] = None
    ) -> pa.Table:
        """Runs a read-only query and returns its rows as a :class:`pyarrow.Table`.

        Args:
            limit: at most this many rows (a page; the server pages the plan, so any
                statement pages and error positions are those of ``query``).
            offset: skip this many rows first.
            dataset: the dataset unqualified names (``images``, ``embeddings``, …) and the
                search functions read (default: the workspace's default dataset).
        """
        body: Dict[str, Any] = {"sql": query}
        if limit is not None:
            body["limit"] = limit
        if offset is not None:
            body["offset"] = offset
        if dataset is not None:
            body["dataset"] = dataset
        return self._table("POST", "/sql", json=body)

    def sql_summary(self, query: str, dataset: Optional[str] = None) -> Dict[str, Any]:
        """What the whole result of ``query`` holds, without fetching it: ``rows`` and, per
        column, ``name``, ``type`` (Arrow's), ``non_null``, ``distinct`` (approximate for
        integers and strings; ``None`` for nested types), ``min`` and ``max``."""
        body: Dict[str, Any] = {"sql": query, "summary": True}
        if dataset is not None:
            body["dataset"] = dataset
        return self._json("POST", "/sql", json=body)

    def slices(self) -> List[Dict[str, Any]]:
        """Every slice with its frozen versions and latest breakdown."""
        return self._json("GET", "/slices")

    def slice_info(self, name: str) -> Dict[str, Any]:
        """One slice's definition, frozen versions and breakdown."""
        return self._json("GET", f"/slices/{quote(name, safe='')}")

    def slice(self, name: str, version: Optional[int] = None, holdout: Optional[bool] = None) -> pa.Table:
        """The members of a frozen slice version (default: the latest): ``image_id``,
        ``uri``, ``label``, ``split``, ``holdout`` and every tag column.

        Args:
            holdout: ``True`` for only the held-out members, ``False`` for only the others.
        """
        params: Dict[str, Any] = {}
        if version is not None:
            params["version"] = version
        if holdout is not None:
            params["holdout"] = "true" if holdout else "false"
        return self._table("GET", f"/slices/{quote(name, safe='')}/data", params=params)

    def slice_diff(self, name: str) -> pa.Table:
        """Members added, removed or changed since the slice's latest freeze."""
        return self._table("GET", f"/slices/{quote(name, safe='')}/diff")

    def image(self, image_id: str, dataset: Optional[str] = None) -> bytes:
        """An image's file as ingested (PNG, JPEG, …)."""
        params = {"dataset": dataset} if dataset else None
        return self._request("GET", f"/images/{quote(image_id, safe='')}", params=params).content

    def thumbnail(self, image_id: str, size: int = 128, dataset: Optional[str] = None) -> bytes:
        """A PNG or JPEG thumbnail that fits in ``size``×``size``."""
        params: Dict[str, Any] = {"size": size}
        if dataset:
            params["dataset"] = dataset
        return self._request("GET", f"/images/{quote(image_id, safe='')}/thumbnail", params=params).content

    def search_text(self, query: str, k: int = 10, model: Optional[str] = None) -> pa.Table:
        """The ``k`` images closest to a sentence: ``image_id``, ``score``, ``uri``."""
        params: Dict[str, Any] = {"q": query, "k": k}
        if model:
            params["model"] = model
        return self._table("GET", "/search/text", params=params)

    def search_image(self, image: Union[str, bytes], k: int = 10, model: Optional[str] = None) -> pa.Table:
        """The ``k`` images closest to a dataset image (by id, a ``str``) or to an
        encoded image (``bytes``)."""
        params: Dict[str, Any] = {"k": k}
        if model:
            params["model"] = model
        if isinstance(image, (bytes, bytearray, memoryview)):
            headers = {"Content-Type": "application/octet-stream"}
            return self._table("POST", "/search/image", params=params, data=bytes(image), headers=headers)
        return self._table("GET", f"/search/image/{quote(image, safe='')}", params=params)

    def datasets(self) -> List[Dict[str, Any]]:
        """Every dataset: ``name``, ``default``, ``images``, ``version``, ``embeddings``
        (stored model names), ``search_index`` (per model, see :meth:`search_index`) and
        ``embed`` (the CLI command and the server's model)."""
        return self._json("GET", "/datasets")

    def search_index(self, dataset: Optional[str] = None, model: Optional[str] = None) -> Dict[str, Any]:
        """Where the server's search index of one embedding model stands (default: the
        default dataset, its only model): ``state`` is ``exact`` (too few vectors for an
        index), ``unloaded`` (the next search reads the vectors), ``missing`` (searches scan
        exactly; the next one starts readying the index), ``building`` (searches scan
        exactly meanwhile) or ``ready``; with ``vectors``, ``indexed`` (linked so far while
        building) and ``warning`` (an index that could not be saved)."""
        datasets = self.datasets()
        chosen = [d for d in datasets if (d["name"] == dataset if dataset else d["default"] or len(datasets) == 1)]
        if not chosen:
            raise ValueError(f"no dataset {dataset!r} on the server" if dataset else "the server has no default dataset: name one")
        indexes = chosen[0]["search_index"]
        if model is None:
            if len(indexes) != 1:
                raise ValueError(f"dataset {chosen[0]['name']!r} has {len(indexes)} embedding models ({', '.join(indexes)}): name one")
            model = next(iter(indexes))
        if model not in indexes:
            raise ValueError(f"dataset {chosen[0]['name']!r} has no embeddings named {model!r} ({', '.join(indexes) or 'none'})")
        return indexes[model]

    def jobs(self) -> List[Dict[str, Any]]:
        """Every job of the server process, newest first."""
        return self._json("GET", "/jobs")

    def job(self, job_id: str) -> Dict[str, Any]:
        """One job: ``state`` (queued, running, done, failed), ``phase`` while running
        (loading, embedding, merging, indexing), ``done`` of ``total``, ``embedded``,
        ``already_embedded``, ``indexed`` (vectors in the search index: linked so far
        while indexing, all it covers once done; None: searched exactly), ``warning``
        (e.g. an index that could not be saved), ``error``, times."""
        return self._json("GET", f"/jobs/{quote(job_id, safe='')}")

    def wait(self, job: Union[str, Dict[str, Any]], poll: float = 0.5, timeout: Optional[float] = None) -> Dict[str, Any]:
        """Polls a job until it is done and returns it; raises :class:`JobFailed` if it
        fails and ``TimeoutError`` after ``timeout`` seconds."""
        job_id = job if isinstance(job, str) else job["id"]
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            state = self.job(job_id)
            if state["state"] == "done":
                return state
            if state["state"] == "failed":
                raise JobFailed(state)
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"job {job_id} is still {state['state']} ({state['done']} of {state['total']}) after {timeout} s")
            time.sleep(poll)

    def runs(self) -> List[Dict[str, Any]]:
        """Every run's manifest."""
        return self._json("GET", "/runs")

    def metrics(self, run: str, baseline: Optional[str] = None) -> Dict[str, Any]:
        """The run scored on every slice (metrics with confidence intervals)."""
        return self._json("GET", f"/runs/{quote(run, safe='')}/metrics", params=_baseline(baseline))

    def test(self, run: str, baseline: Optional[str] = None) -> Dict[str, Any]:
        """The slice tests: ``passed``, ``failing`` (slice names) and per-slice verdicts."""
        return self._json("GET", f"/runs/{quote(run, safe='')}/test", params=_baseline(baseline))

    def report(self, run: str, baseline: Optional[str] = None, html: bool = False) -> Union[Dict[str, Any], str]:
        """The run's report: a dict, or the HTML page when ``html`` is true."""
        params = {**_baseline(baseline), "format": "html" if html else "json"}
        response = self._request("GET", f"/runs/{quote(run, safe='')}/report", params=params)
        return response.text if html else response.json()

    def discover(
        self,
        run: str,
        k: int = 10,
        max_level: int = 3,
        min_support: int = 30,
        alpha: float = 0.95,
        columns: Optional[Union[str, Sequence[str]]] = None,
        seed: int = 7,
        fdr: float = 0.05,
        all: bool = False,
        baseline: Optional[str] = None,
        method: str = "auto",
        model: Optional[str] = None,
        rank: str = "severity",
        group: Optional[str] = None,
    ) -> Dict[str, Any]:
        """The slices where ``run`` fails, found on one half of its images and confirmed
        on the other (like ``slicetest discover --format json``; see docs/discovery.md).

        Args:
            k: how many slices to report.
            max_level: most predicates in a slice.
            min_support: fewest images a slice needs in the discovery half.
            alpha: SliceLine's α in (0, 1]: near 1 favours high error rates, lower
                favours large slices.
            columns: only these columns of ``images`` (a list, or one comma-separated
                string; default: every usable column).
            seed: seeds the split into discovery and confirmation halves.
            fdr: the false-discovery rate of the confirmation (Benjamini–Hochberg).
            all: also list the slices the confirmation half did not confirm.
            baseline: regression mode: an image's error is "wrong now, right in run
                ``baseline``".
            method: where to look: ``"tags"`` (the ``images`` columns), ``"embeddings"``
                (the stored CLIP vectors), ``"both"``, or ``"auto"`` (both when the
                dataset has vectors of one model).
            model: the embedding model to search (default: the dataset's only one).
            rank: the order: ``"severity"`` (the low end of the confirmation error
                rate's 95% interval), ``"excess"`` (errors beyond the slice's share) or
                ``"sliceline"`` (SliceLine's score).
            group: a column of ``images`` whose equal values stay in the same half
                (near-duplicates, frames of one video, one patient's images).

        Returns the discovery as a dict: ``run``, ``dataset``, ``error``, ``images``,
        ``halves``, ``mean_error``, ``columns``, ``skipped``, ``tested``, the settings,
        ``method``, ``rank``, ``embeddings`` (how the embedding search went, or ``None``),
        ``notes``, and ``slices``, each with ``method`` (``tags`` or ``embeddings``), ``failures`` (up to 8 of its
        images the run gets wrong),
        ``predicates``, ``query``, ``score``, ``excess_errors``, ``explanation`` (embedding
        slices: ``phrases``, ``tags``, ``tags_jaccard``), ``discovery`` and
        ``confirmation`` (``size``, ``errors``, ``error_rate``, ``interval``,
        ``rest_rate``, ``lift``: ``None`` when the rest has no error), ``p_value``,
        ``adjusted_p`` and ``confirmed``. Bad settings raise :class:`SlicetestError`
        with status 400, an unknown run 404."""
        params: Dict[str, Any] = {
            "k": k,
            "max_level": max_level,
            "min_support": min_support,
            "alpha": alpha,
            "seed": seed,
            "fdr": fdr,
            "method": method,
            "rank": rank,
        }
        if model is not None:
            params["model"] = model
        if group is not None:
            params["group"] = group
        if columns is not None:
            params["columns"] = columns if isinstance(columns, str) else ",".join(columns)
        if all:
            params["all"] = "true"
        if baseline is not None:
            params["baseline"] = baseline
        return self._json("GET", f"/runs/{quote(run, safe='')}/discover", params=params)

    def discover_table(self, run: str, **settings: Any) -> pa.Table:
        """:meth:`discover` as a :class:`pyarrow.Table`, one row per slice, best first:
        ``method``, ``slice`` (the predicates joined with " AND "), ``query``, ``discovery_size``,
        ``confirmation_size``, ``error_rate`` with ``error_low``/``error_high`` (its 95%
        interval) and ``rest_rate`` on the confirmation half, ``lift`` (infinite when
        the rest has no error), ``discovery_error_rate``, ``score``, ``p_value``,
        ``adjusted_p``, ``confirmed``, ``excess_errors`` and ``explanation`` (embedding
        slices: phrases and tags in one line). ``settings`` are :meth:`discover`'s."""
        return discovery_table(self.discover(run, **settings))

    # -- writes -------------------------------------------------------------------

    def create_slice(
        self,
        name: str,
        query: str,
        comment: Optional[str] = None,
        min_accuracy: Optional[float] = None,
        min_samples: Optional[int] = None,
        **thresholds: Any,
    ) -> Dict[str, Any]:
        """Defines a slice from a query that returns ``image_id``.

        ``thresholds`` are the other slice tests by the names of ``slicetest slice create``:
        ``min_map``, ``min_ap50``, ``min_mask_map``, ``min_keypoint_map``, ``min_recall``, ``min_miou``,
        ``min_pixel_accuracy``, and ``min_class_recall`` / ``min_class_iou`` as dicts
        (``min_class_recall={"person": 0.6}``); the server refuses a name it does not know.
        """
        body = {"name": name, "query": query}
        given = {"comment": comment, "min_accuracy": min_accuracy, "min_samples": min_samples, **thresholds}
        body.update({key: value for key, value in given.items() if value is not None})
        return self._json("POST", "/slices", json=body)

    def freeze(self, name: str, holdout: Optional[float] = None, seed: Optional[int] = None) -> Dict[str, Any]:
        """Freezes the slice's current members as its next version, holding out
        ``holdout`` of them. A share or seed left out is the latest frozen version's (0 at
        a first freeze), so the same images stay held out. Returns ``{"created": bool,
        "frozen": manifest, "previous", "holdout_changed", "released_from_holdout",
        "released_left_slice", "notes", "warnings"}``: ``released_from_holdout`` counts
        the images the previous version held out that this one does not (members no
        longer held out, and ``released_left_slice`` images no longer members)."""
        body: Dict[str, Any] = {}
        if holdout is not None:
            body["holdout"] = holdout
        if seed is not None:
            body["seed"] = seed
        return self._json("POST", f"/slices/{quote(name, safe='')}/freeze", json=body)

    def embed(
        self,
        dataset: Optional[str] = None,
        model: Optional[str] = None,
        where: Optional[str] = None,
        limit: Optional[int] = None,
        batch_size: Optional[int] = None,
        wait: bool = True,
        poll: float = 0.5,
        timeout: Optional[float] = None,
    ) -> Dict[str, Any]:
        """Embeds a dataset's images with CLIP on the server, as a background job (like
        ``slicetest embed``: images already embedded are skipped, so it resumes).

        Args:
            dataset: the dataset (default: the server's default dataset).
            model: a Hugging Face id or a checkpoint directory *on the server* (default:
                the server's ``--clip-model`` / ``SLICETEST_CLIP_MODEL``).
            where: only images where this boolean SQL predicate over ``images`` holds,
                e.g. ``"split = 'test'"``.
            limit: only the first ``limit`` selected images by image_id.
            batch_size: images per forward pass (default 16).
            wait: poll until the job is done and return its final state (raises
                :class:`JobFailed` if it fails); else return the queued job at once.

        A dataset has at most one unfinished job: starting another answers
        ``SlicetestError`` with code ``job_running`` (its ``details["job"]`` is the
        running one)."""
        if dataset is None:
            defaults = [d["name"] for d in self.datasets() if d["default"]]
            if not defaults:
                raise ValueError("the workspace has no default dataset: pass dataset=")
            dataset = defaults[0]
        body: Dict[str, Any] = {}
        for key, value in (("model", model), ("where", where), ("limit", limit), ("batch_size", batch_size)):
            if value is not None:
                body[key] = value
        job = self._json("POST", f"/datasets/{quote(dataset, safe='')}/embed", json=body)
        return self.wait(job, poll=poll, timeout=timeout) if wait else job

    def upload_predictions(
        self,
        run: str,
        predictions: Union["pd.DataFrame", pa.Table, List[Dict[str, Any]], str, "os.PathLike[str]"],
        model: str,
        model_version: str,
        dataset: Optional[str] = None,
        allow_partial: bool = False,
        score_threshold: Optional[float] = None,
        mask_source: Optional[str] = None,
        instances: bool = False,
    ) -> Dict[str, Any]:
        """Uploads a run and returns its manifest.

        Classification: a table of ``image_id`` plus ``predicted`` and/or ``prob_<class>``
        (one per class of the dataset), ``score``, ``loss``, or the same as a list of
        records (``df.to_dict("records")``, sent as JSON); every given column needs a value
        in every row. Detection: a table of ``image_id``, ``category`` (or
        ``category_id``), ``x``, ``y``, ``w``, ``h``, ``score`` (a table with any box column
        is detections and must have them all; a ``bbox`` column of ``[x, y, w, h]`` lists
        may stand for the four, so ``pd.DataFrame(coco_results)`` works), or a COCO
        results list (``[{"image_id", "category_id", "bbox", "score"}, ...]``, sent as
        JSON; a list is detections when its records have a ``bbox``). Detections may carry instance masks
        (``"segmentation": {"size": [h, w], "counts": ...}`` on every record, or a table's
        ``segmentation`` column of that JSON or of dicts): the run then also gets mask AP;
        and poses (``"keypoints": [x1, y1, score1, ...]``, COCO's layout, or a ``keypoints``
        column of such lists; a pose without a box is boxed by its keypoints, as ``loadRes``
        does): the run then also gets keypoint AP (OKS) where the ground truth has poses.
        pycocotools' own ``segm`` results have masks and no ``bbox``: pass
        ``instances=True`` to read them as detections, each boxed by its mask (as
        ``loadRes`` does); without it, masks without boxes are a segmentation run's.
        Segmentation: per-class COCO RLE masks, as a list
        (``[{"image_id", "category_id", "segmentation": {"size", "counts"}}, ...]``; see
        :func:`slicetest.segmentation_results`) or a table of ``image_id``, ``category_id``,
        ``counts``, ``height``, ``width``; ``mask_source`` names the ground-truth mask set
        when the dataset has several. Tables are sent as Parquet.

        ``predictions`` may also be a path, read as ``slicetest run upload`` reads it: a
        ``.json``, ``.jsonl``/``.ndjson``, ``.csv`` or ``.parquet`` file is sent as it is
        (``.arrow``/``.feather``/``.ipc`` as Parquet), a ``.zip`` as it is, and a folder —
        Ultralytics' ``predict(save_txt=True, save_conf=True)`` label files (``labels/`` or
        the ``predict/`` folder above it) or a segmentation run's PNG masks — zipped (its
        ``.txt`` and ``.png`` files); the run's ``source`` is the file's or folder's name.

        ``score_threshold`` fixes a detection run's operating point (default: the best-F1
        threshold, chosen when the run is scored).

        What looked wrong without making the run unusable (boxes that reach far past their
        images, as corners ``[x0, y0, x1, y1]`` given for ``[x, y, width, height]`` do) is
        in the manifest's ``warnings`` and issued as a :class:`UserWarning`.

        Raises :class:`SlicetestError`: 422 ``invalid_input`` for predictions that fail
        validation (each problem named by row; nothing is written, also for an empty
        table), 409 ``exists`` when the run name is taken."""
        headers: Dict[str, str] = {}
        opened = contextlib.ExitStack()
        body: Union[bytes, IO[bytes]]
        if isinstance(predictions, (str, os.PathLike)):
            body, content_type, name = _prediction_file(Path(predictions))
            if not isinstance(body, bytes):
                opened.enter_context(body)
            # A header is Latin-1 and the name is quoted: other characters are sent as "_".
            shown = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
            headers["Content-Disposition"] = f'attachment; filename="{shown}"'
        elif isinstance(predictions, list):
            body, content_type = json.dumps(predictions).encode(), "application/json"
        else:
            table = predictions if isinstance(predictions, pa.Table) else pa.Table.from_pandas(predictions, preserve_index=False)
            sink = io.BytesIO()
            pa.parquet.write_table(table, sink)
            body, content_type = sink.getvalue(), PARQUET
        params: Dict[str, Any] = {"model": model, "model_version": model_version}
        if dataset:
            params["dataset"] = dataset
        if allow_partial:
            params["allow_partial"] = "true"
        if score_threshold is not None:
            params["score_threshold"] = score_threshold
        if mask_source:
            params["mask_source"] = mask_source
        if instances:
            params["instances"] = "true"
        with opened:  # a file is streamed from disk, and closed (a temporary one removed) after
            manifest = self._json(
                "POST",
                f"/runs/{quote(run, safe='')}",
                params=params,
                data=body,
                headers={"Content-Type": content_type, **headers},
            )
        for warning in manifest.get("warnings", []):
            warnings.warn(f"run {run}: {warning}", UserWarning, stacklevel=2)
        return manifest


# How a predictions file is sent, by its extension (the server reads it as the CLI does).
PREDICTION_FILE_TYPES = {
    ".json": "application/json",
    ".jsonl": "application/x-ndjson",
    ".ndjson": "application/x-ndjson",
    ".csv": "text/csv",
    ".parquet": PARQUET,
    ".zip": "application/zip",
}


def _prediction_file(path: Path) -> Tuple[Union[bytes, IO[bytes]], str, str]:
    """The body (bytes, or a file to stream and close), Content-Type and file name with
    which predictions at ``path`` are sent."""
    if path.is_dir():
        # The folder itself goes into the archive (labels/bus.txt), as `zip -r` makes it.
        # Only what a run folder is read for goes in: label files and PNG masks, not the
        # annotated JPEGs Ultralytics saves beside labels/; hidden files (.DS_Store) stay out.
        # The archive is a temporary file (removed when closed), so a large folder of masks
        # is not held in memory.
        sink = tempfile.TemporaryFile()
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(path.rglob("*")):
                relative = file.relative_to(path)
                hidden = any(part.startswith(".") for part in relative.parts)
                if file.is_file() and not hidden and file.suffix.lower() in (".txt", ".png"):
                    archive.write(file, Path(path.name) / relative)
        sink.seek(0)
        return sink, "application/zip", path.name
    if not path.is_file():
        raise FileNotFoundError(f"no predictions file or folder at {path}")
    suffix = path.suffix.lower()
    if suffix in (".arrow", ".feather", ".ipc"):
        sink = io.BytesIO()
        pa.parquet.write_table(pyarrow.feather.read_table(path), sink)
        return sink.getvalue(), PARQUET, path.name
    if suffix not in PREDICTION_FILE_TYPES:
        known = ", ".join(sorted([*PREDICTION_FILE_TYPES, ".arrow", ".feather", ".ipc"]))
        raise ValueError(f"{path}: predictions files are {known}, or a folder (YOLO labels, PNG masks)")
    return open(path, "rb"), PREDICTION_FILE_TYPES[suffix], path.name


DISCOVERY_SCHEMA = pa.schema(
    [
        ("method", pa.string()),
        ("slice", pa.string()),
        ("query", pa.string()),
        ("discovery_size", pa.int64()),
        ("confirmation_size", pa.int64()),
        ("error_rate", pa.float64()),
        ("error_low", pa.float64()),
        ("error_high", pa.float64()),
        ("rest_rate", pa.float64()),
        ("lift", pa.float64()),
        ("discovery_error_rate", pa.float64()),
        ("score", pa.float64()),
        ("p_value", pa.float64()),
        ("adjusted_p", pa.float64()),
        ("confirmed", pa.bool_()),
        ("excess_errors", pa.float64()),
        ("explanation", pa.string()),
    ]
)


def discovery_table(discovery: Dict[str, Any]) -> pa.Table:
    """The slices of a discovery (the dict :meth:`Client.discover` returns) as a table
    with :data:`DISCOVERY_SCHEMA`, one row per slice in the discovery's order."""
    rows = []
    for s in discovery["slices"]:
        c = s["confirmation"]
        lift = c["lift"]
        if lift is None and c["rest_rate"] == 0:
            lift = float("inf")  # JSON has no infinity: the rest of the half has no error
        low, high = c["interval"]
        rows.append(
            {
                "method": s["method"],
                "slice": " AND ".join(s["predicates"]),
                "query": s["query"],
                "discovery_size": s["discovery"]["size"],
                "confirmation_size": c["size"],
                "error_rate": c["error_rate"],
                "error_low": low,
                "error_high": high,
                "rest_rate": c["rest_rate"],
                "lift": lift,
                "discovery_error_rate": s["discovery"]["error_rate"],
                "score": s["score"],
                "p_value": s["p_value"],
                "adjusted_p": s["adjusted_p"],
                "confirmed": s["confirmed"],
                "excess_errors": s["excess_errors"],
                "explanation": _explanation(s.get("explanation")),
            }
        )
    return pa.Table.from_pylist(rows, schema=DISCOVERY_SCHEMA)


def _explanation(explanation: Optional[Dict[str, Any]]) -> Optional[str]:
    """An embedding slice's explanation in one line: its phrases, then its tags."""
    if not explanation:
        return None
    parts = []
    if explanation["phrases"]:
        parts.append("looks like " + ", ".join(f'"{text}"' for text, _ in explanation["phrases"]))
    if explanation["tags"]:
        parts.append(f"in tags: {' AND '.join(explanation['tags'])} (Jaccard {explanation['tags_jaccard']:.2f})")
    return "; ".join(parts) or None


def _cut_short(response: requests.Response, elapsed: float, error: Exception) -> SlicetestError:
    """The error of a streamed result whose body ended early: the server answered 200 and
    then cut the stream (the query's time limit, or a failure after the first rows), or the
    connection broke. ``timeout`` when the cut came at the server's deadline, which it
    sends as the ``slicetest-deadline-ms`` header; else ``truncated``."""
    deadline = response.headers.get("slicetest-deadline-ms")
    try:
        left = float(deadline) / 1000.0 if deadline is not None else None
    except ValueError:
        left = None
    if left is not None and elapsed >= left - 0.25:
        return SlicetestError(
            response.status_code,
            "timeout",
            f"the result was cut short after {elapsed:.1f} s: the query ran past the server's time limit "
            "(slicetest serve --query-timeout); the rows received are incomplete, so none are returned",
        )
    return SlicetestError(
        response.status_code,
        "truncated",
        f"the result was cut short after {elapsed:.1f} s ({error}): the server failed after sending the first "
        "rows (its log says why) or the connection broke; the rows received are incomplete, so none are returned",
    )


def _baseline(baseline: Optional[str]) -> Dict[str, str]:
    return {"baseline": baseline} if baseline else {}
