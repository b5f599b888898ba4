"""MSMT17 (Wei et al., "Person Transfer GAN to Bridge Domain Gap for Person Re-Identification", CVPR 2018).

Layout: `list_train.txt`, `list_val.txt`, `list_query.txt`, `list_gallery.txt` with lines
"<relative path> <pid>", images under `train/` and `test/` (MSMT17_V1) or `mask_train_v2/` and `mask_test_v2/`
(MSMT17_V2, faces blurred). File names `<pid>_<index>_<camera 01-15>_<date+time>_<frame>_<n>.jpg`. The
official training set is list_train + list_val (32,621 images, 1,041 identities); query 11,659 and gallery
82,161 images of 3,060 identities, 15 cameras. The lists number identities from 0, and 0 is an ordinary
person, whereas the Market-1501 protocol reads pid 0 as a distractor: query and gallery pids are therefore
the list values plus 1 (``TEST_PID_OFFSET``), so that every MSMT17 query is evaluated.
"""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from .files import InsideRoot, check_files_exist, require_dir, require_file
from .records import DatasetSplits, ImageRecord, relabel, require_nonempty

TEST_PID_OFFSET = 1
VERSIONS = {"v1": ("MSMT17_V1", "train", "test"), "v2": ("MSMT17_V2", "mask_train_v2", "mask_test_v2")}


def parse_msmt_camera(path: str) -> int:
    """0-based camera from an MSMT17 file name (its third '_' field, 1-based in the name)."""
    fields = os.path.basename(path).split("_")
    if len(fields) < 3 or not fields[2].isdigit() or int(fields[2]) < 1:
        raise ValueError(f"cannot parse the camera of MSMT17 file {path!r}: expected "
                         "'<pid>_<index>_<camera>_...jpg'")
    return int(fields[2]) - 1


def _read_list(list_path: Path, image_dir: Path) -> list[ImageRecord]:
    records = []
    inside = InsideRoot(image_dir)
    with open(list_path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            fields = line.split()
            if len(fields) != 2 or not fields[1].lstrip("-").isdigit():
                raise ValueError(f"{list_path}:{line_no}: expected '<relative path> <pid>', got {line.strip()!r}")
            path = inside(fields[0], f"{list_path}:{line_no}")
            records.append(ImageRecord(str(path), int(fields[1]), parse_msmt_camera(fields[0])))
    return records


def _shift_pids(records: list[ImageRecord]) -> list[ImageRecord]:
    """Test pids + TEST_PID_OFFSET: list pid 0 is a person, not the protocol's distractor id."""
    if any(r.pid < 0 for r in records):
        raise ValueError("MSMT17: negative pids in a test list; MSMT17 has no junk images")
    return [replace(r, pid=r.pid + TEST_PID_OFFSET) for r in records]


def _locate(root: Path, version: str) -> tuple[Path, str]:
    """The folder holding the list files and the detected version ('v1' or 'v2')."""
    wanted = list(VERSIONS) if version == "auto" else [version]
    for key in wanted:
        folder, train_dir, _ = VERSIONS[key]
        for base in (root, root / folder):
            if (base / "list_train.txt").is_file() and (base / train_dir).is_dir():
                return base, key
    expected = " or ".join(f"{VERSIONS[k][1]}/ (MSMT17_{k.upper()})" for k in wanted)
    raise FileNotFoundError(f"MSMT17: expected list_train.txt and {expected} in {root} or its "
                            f"{'/'.join(VERSIONS[k][0] for k in wanted)} subfolder")


def load_msmt17(root: str | os.PathLike, version: str = "auto", include_val: bool = True,
                name: str = "msmt17") -> DatasetSplits:
    """Load MSMT17 (version "auto", "v1" or "v2"); include_val adds list_val.txt to training (official set)."""
    if version not in ("auto", *VERSIONS):
        raise ValueError(f"MSMT17: version must be 'auto', 'v1' or 'v2', got {version!r}")
    base, version = _locate(require_dir(root, "the MSMT17 root directory"), version)
    _, train_name, test_name = VERSIONS[version]
    train_dir = require_dir(base / train_name, f"the MSMT17 training image folder '{train_name}/'")
    test_dir = require_dir(base / test_name, f"the MSMT17 test image folder '{test_name}/'")
    lists = {key: require_file(base / f"list_{key}.txt", f"the MSMT17 list 'list_{key}.txt'")
             for key in ("train", "val", "query", "gallery") if key != "val" or include_val}
    train = _read_list(lists["train"], train_dir) + (_read_list(lists["val"], train_dir) if include_val else [])
    query = _shift_pids(_read_list(lists["query"], test_dir))
    gallery = _shift_pids(_read_list(lists["gallery"], test_dir))
    for split, records, where in (("train", train, lists["train"]), ("query", query, lists["query"]),
                                  ("gallery", gallery, lists["gallery"])):
        require_nonempty(records, split, name, str(where))
        check_files_exist([r.path for r in records], "MSMT17", str(where))
    train, _ = relabel(train)
    return DatasetSplits(name, "market", train, query, gallery, len({r.pid for r in train}))
