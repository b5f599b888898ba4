"""Stanford Online Products (Oh Song et al., "Deep Metric Learning via Lifted Structured Feature Embedding",
CVPR 2016).

`Ebay_train.txt` / `Ebay_test.txt`: a header line then "<image id> <class id> <super-class id> <path>", paths
relative to the root. Train: 11,318 classes / 59,551 images; test: 11,316 classes / 60,502 images; leave-one-out
retrieval on the test split (protocol "cub"). Test pids keep their class ids.
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import InsideRoot, check_files_exist, find_root, require_file
from .records import DatasetSplits, ImageRecord, relabel, require_nonempty


def _read_ebay(list_path: Path, base: Path) -> list[ImageRecord]:
    records = []
    inside = InsideRoot(base)
    with open(list_path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or (line_no == 1 and not fields[0].isdigit()):  # blank line or header
                continue
            if len(fields) != 4 or not (fields[0].isdigit() and fields[1].isdigit()):
                raise ValueError(f"{list_path}:{line_no}: expected '<image id> <class id> <super-class id> <path>', "
                                 f"got {line.strip()!r}")
            records.append(ImageRecord(str(inside(fields[3], f"{list_path}:{line_no}")), int(fields[1]), 0))
    return records


def load_sop(root: str | os.PathLike, name: str = "sop") -> DatasetSplits:
    """Load Stanford Online Products from `root` (or `root/Stanford_Online_Products`)."""
    base = find_root(root, "Ebay_train.txt", ("Stanford_Online_Products",), "Stanford Online Products")
    train_txt = require_file(base / "Ebay_train.txt", "the SOP list 'Ebay_train.txt'")
    test_txt = require_file(base / "Ebay_test.txt", "the SOP list 'Ebay_test.txt'")
    train = require_nonempty(_read_ebay(train_txt, base), "train", name, str(train_txt))
    test = require_nonempty(_read_ebay(test_txt, base), "test", name, str(test_txt))
    check_files_exist([r.path for r in train], "Stanford Online Products", str(train_txt))
    check_files_exist([r.path for r in test], "Stanford Online Products", str(test_txt))
    train, _ = relabel(train)
    return DatasetSplits(name, "cub", train, test, test, len({r.pid for r in train}))
