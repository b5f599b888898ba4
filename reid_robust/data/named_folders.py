"""Market-1501-style layouts: train/query/gallery folders whose file names carry the identity and the camera.

Shared by the CUHK03-NP, VeRi-776 and DukeMTMC-reID loaders; each describes its layout in a `NamedLayout`
(folder names, file-name pattern, number of cameras, where the data comes from) and calls `load_named_layout`.
Conventions as for Market-1501 (records.py): training pids are relabelled 0..N-1 with junk (-1) and
distractor (0) images dropped; query/gallery pids keep the dataset's ids; camids are 0-based.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .files import list_images, require_dir
from .records import DISTRACTOR_PID, JUNK_PID, DatasetSplits, ImageRecord, relabel, require_nonempty

SPLITS = ("train", "query", "gallery")


@dataclass(frozen=True)
class NamedLayout:
    """How one dataset names its folders and files.

    pattern: a regex matched against the whole file name whose first two groups are the identity and the
    1-based camera; example: a valid file name shown in errors; folders: {"train"|"query"|"gallery": name};
    source: where the dataset is obtained, appended to missing-file errors.
    """

    dataset: str
    pattern: re.Pattern
    example: str
    num_cameras: int
    folders: dict[str, str]
    source: str


@contextmanager
def source_hint(source: str) -> Iterator[None]:
    """Append `source` (where the dataset is obtained) to a `FileNotFoundError` raised inside the block."""
    try:
        yield
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{exc}; {source}") from None


def parse_name(layout: NamedLayout, path: str) -> tuple[int, int]:
    """(pid, 0-based camid) of one file; ValueError naming the file when its name or camera is invalid."""
    name = os.path.basename(path)
    match = layout.pattern.match(name)
    if match is None:
        raise ValueError(f"cannot parse {layout.dataset} file name {path!r}: expected a name like {layout.example!r}")
    pid, camera = int(match.group(1)), int(match.group(2))
    if not 1 <= camera <= layout.num_cameras:
        raise ValueError(f"{layout.dataset} file {path!r}: camera {camera} is outside 1..{layout.num_cameras}")
    return pid, camera - 1


def load_named_folder(layout: NamedLayout, directory: Path, train: bool) -> list[ImageRecord]:
    """Records of the images in `directory`, sorted by name; `train` drops junk/distractors and relabels."""
    paths = [str(directory / name) for name in list_images(directory)]
    records = [ImageRecord(path, *parse_name(layout, path)) for path in paths]
    if train:
        records, _ = relabel(r for r in records if r.pid not in (JUNK_PID, DISTRACTOR_PID))
    return records


def load_named_layout(layout: NamedLayout, base: Path, name: str) -> DatasetSplits:
    """Load the three folders of `layout` under `base` as protocol "market" splits named `name`."""
    with source_hint(layout.source):
        dirs = {split: require_dir(base / layout.folders[split],
                                   f"the {layout.dataset} {split} folder '{layout.folders[split]}/'")
                for split in SPLITS}
    splits = {split: require_nonempty(load_named_folder(layout, dirs[split], split == "train"), split, name,
                                      str(dirs[split]))
              for split in SPLITS}
    bad = [r.path for r in splits["query"] if r.pid in (JUNK_PID, DISTRACTOR_PID)]
    if bad:
        raise ValueError(f"{layout.dataset} query folder {dirs['query']} holds junk/distractor images "
                         f"(pid -1 or 0), e.g. {bad[0]}")
    num_classes = len({r.pid for r in splits["train"]})
    return DatasetSplits(name, "market", splits["train"], splits["query"], splits["gallery"], num_classes)
