"""Python client of the slicetest HTTP API (``slicetest serve``).

>>> from slicetest import Client
>>> client = Client("http://127.0.0.1:7878")
>>> members = client.slice("tops").to_pandas()
"""

from .client import Client, JobFailed, SlicetestError
from .dataset import SliceDataset
from .masks import rle_counts, segmentation_results

__all__ = ["Client", "JobFailed", "SlicetestError", "SliceDataset", "rle_counts", "segmentation_results"]
__version__ = "0.1.0"
