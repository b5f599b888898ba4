"""Dataset records: one `ImageRecord` per image, grouped into `DatasetSplits`.

Conventions (docs/ARCHITECTURE.md): training pids are relabelled 0..N-1; query/gallery/test pids keep the
dataset's original ids, with -1 meaning junk and 0 a distractor in Market-style galleries; camids are 0-based.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

PROTOCOLS = ("market", "cub")
JUNK_PID = -1
DISTRACTOR_PID = 0
UNKNOWN_CAMID = -1  # the layout gives no cameras (identity folders without camera_pattern): evaluate with
# camera_filter=False; embed_records turns a split of such records into features with camids None

T = TypeVar("T")


@dataclass(frozen=True)
class ImageRecord:
    """One image: its file path, identity/class id, 0-based camera id and optional (x, y, w, h) crop box."""

    path: str
    pid: int
    camid: int
    bbox: tuple | None = None


@dataclass
class DatasetSplits:
    """Train/query/gallery record lists of one dataset.

    protocol "market": query/gallery with cameras (same-camera matches of the query identity are junk);
    protocol "cub": leave-one-out retrieval on the test split, so query and gallery are the same list.
    """

    name: str
    protocol: str
    train: list[ImageRecord]
    query: list[ImageRecord]
    gallery: list[ImageRecord]
    num_train_classes: int

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"dataset {self.name!r}: protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        labels = {r.pid for r in self.train}
        if labels and labels != set(range(self.num_train_classes)):
            raise ValueError(
                f"dataset {self.name!r}: training pids must be exactly 0..{self.num_train_classes - 1} "
                f"(num_train_classes), got {len(labels)} distinct pids in [{min(labels)}, {max(labels)}]"
            )


def relabel(records: Iterable[ImageRecord]) -> tuple[list[ImageRecord], dict[int, int]]:
    """Map the records' pids, in sorted order, onto 0..N-1; returns (new records, {original pid: label})."""
    records = list(records)
    mapping = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    relabelled = [ImageRecord(r.path, mapping[r.pid], r.camid, r.bbox) for r in records]
    return relabelled, mapping


def require_nonempty(records: list[T], split: str, dataset: str, where: str) -> list[T]:
    """Raise a `ValueError` saying which split of which dataset (and where) holds no images."""
    if not records:
        raise ValueError(f"{dataset}: the {split} split is empty (no images found in {where})")
    return records
