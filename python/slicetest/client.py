"""The HTTP client: one :class:`Client` per server."""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union
from urllib.parse import quote

import pyarrow as pa
import pyarrow.csv
import pyarrow.ipc
import pyarrow.parquet
import requests

if TYPE_CHECKING:  # pandas is optional
    import pandas as pd

ARROW_STREAM = "application/vnd.apache.arrow.stream"
PARQUET = "application/vnd.apache.parquet"


class SlicetestError(Exception):
    """An error answered by the server: ``status`` (HTTP), ``code`` and ``message``."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


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
                raise SlicetestError(response.status_code, error["code"], error["message"])
            except (ValueError, KeyError, TypeError):
                raise SlicetestError(response.status_code, "http", response.text[:500]) from None
        return response

    def _table(self, method: str, path: str, **kwargs: Any) -> pa.Table:
        headers = {"Accept": ARROW_STREAM, **kwargs.pop("headers", {})}
        response = self._request(method, path, headers=headers, stream=True, **kwargs)
        with response:
            response.raw.decode_content = True
            # Read the streamed body into Arrow without holding it twice.
            with pa.ipc.open_stream(response.raw) as reader:
                return reader.read_all()

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self._request(method, path, **kwargs).json()

    # -- reads --------------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """The server's status and version."""
        return self._json("GET", "/health")

    def sql(self, query: str) -> pa.Table:
        """Runs a read-only query and returns its rows as a :class:`pyarrow.Table`."""
        return self._table("POST", "/sql", json={"sql": query})

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

    # -- writes -------------------------------------------------------------------

    def create_slice(
        self,
        name: str,
        query: str,
        comment: Optional[str] = None,
        min_accuracy: Optional[float] = None,
        min_samples: Optional[int] = None,
    ) -> Dict[str, Any]:
        """Defines a slice from a query that returns ``image_id``."""
        body = {"name": name, "query": query}
        for key, value in (("comment", comment), ("min_accuracy", min_accuracy), ("min_samples", min_samples)):
            if value is not None:
                body[key] = value
        return self._json("POST", "/slices", json=body)

    def freeze(self, name: str, holdout: float = 0.0, seed: int = 0) -> Dict[str, Any]:
        """Freezes the slice's current members as its next version, holding out
        ``holdout`` of them. Returns ``{"created": bool, "frozen": manifest}``."""
        return self._json("POST", f"/slices/{quote(name, safe='')}/freeze", json={"holdout": holdout, "seed": seed})

    def upload_predictions(
        self,
        run: str,
        predictions: Union["pd.DataFrame", pa.Table],
        model: str,
        model_version: str,
        dataset: Optional[str] = None,
        allow_partial: bool = False,
    ) -> Dict[str, Any]:
        """Uploads predictions (``image_id`` plus ``predicted`` and/or ``prob_<class>``,
        ``score``, ``loss``) as a new run, sent as Parquet. Returns the run's manifest."""
        table = predictions if isinstance(predictions, pa.Table) else pa.Table.from_pandas(predictions, preserve_index=False)
        sink = io.BytesIO()
        pa.parquet.write_table(table, sink)
        params: Dict[str, Any] = {"model": model, "model_version": model_version}
        if dataset:
            params["dataset"] = dataset
        if allow_partial:
            params["allow_partial"] = "true"
        return self._json(
            "POST",
            f"/runs/{quote(run, safe='')}",
            params=params,
            data=sink.getvalue(),
            headers={"Content-Type": PARQUET},
        )


def _baseline(baseline: Optional[str]) -> Dict[str, str]:
    return {"baseline": baseline} if baseline else {}
