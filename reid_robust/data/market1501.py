"""Market-1501 (Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015).

Tree: `bounding_box_train/`, `query/`, `bounding_box_test/`; file names `PPPP_cCsS_FFFFFF_NN.jpg`
(pid, camera 1-based, sequence, frame, box). pid -1 marks junk boxes and pid 0000 distractors: both stay in
the gallery as the protocol needs and never enter training. The full dataset gives 751 training identities /
12,936 images, 3,368 queries and 19,732 gallery images (15,913 of them not junk).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .files import find_root, list_images, require_dir
from .records import DISTRACTOR_PID, JUNK_PID, DatasetSplits, ImageRecord, require_nonempty
from .records import relabel as relabel_records

# the official names: 4-digit pid (or -1), camera 1-6, sequence, 6-digit frame, 2-digit box number
_OFFICIAL_NAME = re.compile(r"^(-1|\d{4})_c(\d{1,2})s(\d)_(\d{6})_(\d{2})\.(?:jpe?g|png|bmp)$", re.IGNORECASE)
# a user's own camera network named in the same spirit: pid (digits or -1), "_c", camera number, free rest
_LOOSE_NAME = re.compile(r"^(-1|\d+)_c(\d+)(?!\d)")
SUBDIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}


def parse_market_filename(name: str, strict: bool = True) -> tuple[int, int]:
    """Return (pid, 0-based camid) from a Market-1501 file name such as `0002_c1s1_000451_03.jpg`.

    strict: the whole name must follow the official `PPPP_cCsS_FFFFFF_NN.jpg` pattern (the Market-1501
    loader); otherwise only the `<pid>_c<camera>` start is read (a user's own folders, `tools/eval.py`).
    Raises ValueError naming the file when the name does not parse.
    """
    base = os.path.basename(name)
    match = (_OFFICIAL_NAME if strict else _LOOSE_NAME).match(base)
    if match is None:
        expected = "'PPPP_cCsS_FFFFFF_NN.jpg'" if strict else "'<pid>_c<camera>...' (e.g. 0002_c1s1_000451_03.jpg)"
        raise ValueError(f"cannot parse Market-1501 file name {name!r}: expected {expected}")
    pid, cam = int(match.group(1)), int(match.group(2))
    if cam < 1:
        raise ValueError(f"cannot parse Market-1501 file name {name!r}: camera numbers start at 1, got c{cam}")
    return pid, cam - 1


def load_market_folder(directory: str | os.PathLike, relabel: bool = False, strict: bool = True) -> list[ImageRecord]:
    """Records of the Market-1501-named images in `directory` (non-image files ignored), sorted by name.

    strict: see `parse_market_filename`. relabel=True prepares a training split: junk (-1) and distractor (0)
    images are dropped and the remaining pids are mapped, in sorted order, to 0..N-1.
    """
    directory = require_dir(directory, "a folder of Market-1501-named images")
    records = []
    for name in list_images(directory):
        pid, camid = parse_market_filename(str(directory / name), strict)
        records.append(ImageRecord(str(directory / name), pid, camid))
    if relabel:
        records = [r for r in records if r.pid not in (JUNK_PID, DISTRACTOR_PID)]
        records, _ = relabel_records(records)
    return records


def load_market1501(root: str | os.PathLike, name: str = "market1501") -> DatasetSplits:
    """Load the three Market-1501 splits from `root` (or `root/Market-1501-v15.09.15`)."""
    base = find_root(root, SUBDIRS["train"], ("Market-1501-v15.09.15",), "Market-1501")
    dirs = {split: require_dir(base / sub, f"the Market-1501 {split} folder '{sub}/'") for split, sub in SUBDIRS.items()}
    train = require_nonempty(load_market_folder(dirs["train"], relabel=True), "train", name, str(dirs["train"]))
    query = require_nonempty(load_market_folder(dirs["query"]), "query", name, str(dirs["query"]))
    gallery = require_nonempty(load_market_folder(dirs["gallery"]), "gallery", name, str(dirs["gallery"]))
    _check_query_ids(query, Path(dirs["query"]))
    num_classes = len({r.pid for r in train})
    return DatasetSplits(name, "market", train, query, gallery, num_classes)


def _check_query_ids(query: list[ImageRecord], where: Path) -> None:
    bad = [r.path for r in query if r.pid in (JUNK_PID, DISTRACTOR_PID)]
    if bad:
        raise ValueError(f"Market-1501 query folder {where} holds junk/distractor images (pid -1 or 0), e.g. {bad[0]}")
