"""A frozen slice as a dataset for training and evaluation loops (no torch import)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator, Optional, Tuple

if TYPE_CHECKING:
    from .client import Client


class SliceDataset:
    """The members of a frozen slice version as ``(image bytes, label)`` pairs.

    Indexable and iterable, so it plugs into ``torch.utils.data.DataLoader`` (as a
    map-style dataset) without this package importing torch. Decode the bytes with
    Pillow or torchvision in your own ``transform``.

    Args:
        client: the server connection.
        name: the slice.
        version: a frozen version (default: the latest, fixed when the dataset is made).
        holdout: ``True`` for only held-out members, ``False`` for only the others.
        transform: applied to ``(image bytes, label)`` before it is returned.
    """

    def __init__(
        self,
        client: "Client",
        name: str,
        version: Optional[int] = None,
        holdout: Optional[bool] = None,
        transform=None,
    ):
        self.client = client
        self.name = name
        self.dataset = client.slice_info(name)["dataset"]
        self.members = client.slice(name, version=version, holdout=holdout)
        self._ids = self.members.column("image_id").to_pylist()
        self._labels = self.members.column("label").to_pylist()
        self._dataset = None
        self.transform = transform

    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index: int) -> Tuple[bytes, Optional[str]]:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        item = (self.client.image(self._ids[index], dataset=self.dataset), self._labels[index])
        return self.transform(*item) if self.transform else item

    def __iter__(self) -> Iterator[Tuple[bytes, Optional[str]]]:
        for i in range(len(self)):
            yield self[i]

    @property
    def image_ids(self) -> list:
        """The members' ids, in order."""
        return list(self._ids)
