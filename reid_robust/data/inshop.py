"""DeepFashion In-Shop Clothes Retrieval (Liu et al., "DeepFashion: Powering Robust Clothes Recognition and
Retrieval with Rich Annotations", CVPR 2016).

Tree: `Eval/list_eval_partition.txt` and the images under `Img/img/` (or both flattened into one folder:
`list_eval_partition.txt` and `img/`). The list starts with the number of images, then the header
`image_name item_id evaluation_status`, then one line per image: `img/WOMEN/Dresses/id_00000002/02_1_front.jpg
id_00000002 train|query|gallery`. 3,997 training items / 25,882 images; 3,985 test items with 14,218 query and
12,612 gallery images.

Query/gallery retrieval without cameras, evaluated as protocol "market": every query camid is 0 and every
gallery camid is 1, so the same-camera rule never removes a gallery image and CMC rank-k equals the Recall@K
that In-Shop papers report. pids are the item numbers (`id_00000002` -> 2; the release starts at 1, so no
item is read as a distractor).
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import InsideRoot, check_files_exist, find_root, require_dir
from .named_folders import source_hint
from .records import DatasetSplits, ImageRecord, relabel, require_nonempty

LIST_NAME = "list_eval_partition.txt"
STATUSES = ("train", "query", "gallery")
CAMERA = {"train": 0, "query": 0, "gallery": 1}
SOURCE = ("DeepFashion In-Shop is obtained from http://mmlab.ie.cuhk.edu.hk/projects/DeepFashion/InShopRetrieval.html; "
          "see datasets/README.md")


def _item_pid(value: str, where: str) -> int:
    number = value[3:] if value.startswith("id_") else ""
    if not number.isdigit() or int(number) < 1:
        raise ValueError(f"{where}: expected an item id like 'id_00000002' (number >= 1), got {value!r}")
    return int(number)


def read_partition(list_path: Path, image_root: Path) -> dict[str, list[ImageRecord]]:
    """Records of `list_eval_partition.txt` by evaluation status; errors name the file and line."""
    splits: dict[str, list[ImageRecord]] = {status: [] for status in STATUSES}
    declared = None
    inside = InsideRoot(image_root)  # entries never leave the dataset folder (issue 12)
    with open(list_path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            fields = line.split()
            if not fields or (line_no == 2 and fields[0] == "image_name"):
                continue
            if line_no == 1 and len(fields) == 1 and fields[0].isdigit():
                declared = int(fields[0])
                continue
            where = f"{list_path}:{line_no}"
            if len(fields) != 3 or fields[2] not in STATUSES:
                raise ValueError(f"{where}: expected '<image_name> <item_id> train|query|gallery', got {line.strip()!r}")
            status = fields[2]
            splits[status].append(ImageRecord(str(inside(fields[0], where)), _item_pid(fields[1], where), CAMERA[status]))
    listed = sum(len(records) for records in splits.values())
    if declared is not None and declared != listed:
        raise ValueError(f"{list_path}: its first line announces {declared} images but {listed} are listed")
    return splits


def _locate(root: str | os.PathLike) -> tuple[Path, Path]:
    """(list file, folder holding `img/`) of the release tree or of a flattened copy."""
    base = find_root(root, "img", ("Img", "In-shop Clothes Retrieval Benchmark/Img"), "DeepFashion In-Shop")
    image_root = require_dir(base / "img", "the DeepFashion In-Shop image folder 'img/'").parent
    top = base.parent if base.name == "Img" else base
    candidates = (top / "Eval" / LIST_NAME, top / LIST_NAME)
    list_path = next((path for path in candidates if path.is_file()), None)
    if list_path is None:
        raise FileNotFoundError(f"expected the DeepFashion In-Shop partition list at {candidates[0]} "
                                f"(or {candidates[1]}), but it does not exist")
    return list_path, image_root


def load_inshop(root: str | os.PathLike, name: str = "inshop") -> DatasetSplits:
    """Load DeepFashion In-Shop from `root` (the release folder, its `Img/` parent, or a flattened copy)."""
    with source_hint(SOURCE):
        list_path, image_root = _locate(root)
        splits = read_partition(list_path, image_root)
        for status in STATUSES:
            require_nonempty(splits[status], status, name, str(list_path))
            check_files_exist([r.path for r in splits[status]], "DeepFashion In-Shop", str(list_path))
    train, _ = relabel(splits["train"])
    return DatasetSplits(name, "market", train, splits["query"], splits["gallery"], len({r.pid for r in train}))
