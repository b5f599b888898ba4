"""CUB-200-2011 (Wah et al., Caltech-UCSD Birds-200-2011, 2011) with the metric-learning split.

Tree: `images.txt` ("<image id> <relative path>"), `image_class_labels.txt` ("<image id> <class 1..200>"),
`classes.txt`, `train_test_split.txt` ("<image id> <1 if training>"), `bounding_boxes.txt`
("<image id> <x> <y> <w> <h>"), `images/`. The zero-shot split used in deep metric learning trains on classes
1-100 (5,864 images) and tests on classes 101-200 (5,924 images) with leave-one-out retrieval, so query and
gallery are both the test split; `split="classification"` uses `train_test_split.txt` instead.
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import InsideRoot, check_files_exist, find_root, require_dir, require_file
from .records import DatasetSplits, ImageRecord, relabel, require_nonempty


def _read_table(path: Path, columns: int, what: str, inside: InsideRoot | None = None) -> dict[int, list[str]]:
    """Parse "<image id> <value> ..." lines into {image id: values}; errors name the file and line.

    inside: the first value is an image path that must stay inside this folder (refused otherwise).
    """
    table: dict[int, list[str]] = {}
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            fields = line.split(maxsplit=columns)
            if len(fields) != columns + 1 or not fields[0].isdigit():
                raise ValueError(f"{path}:{line_no}: expected '<image id> {what}', got {line.strip()!r}")
            image_id = int(fields[0])
            if image_id in table:
                raise ValueError(f"{path}:{line_no}: image id {image_id} appears twice")
            if inside is not None:
                fields[1] = str(inside(fields[1].strip(), f"{path}:{line_no}"))
            table[image_id] = fields[1:]
    return table


def _int_field(path: Path, image_id: int, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{path}: image id {image_id} has non-integer value {value!r}") from None


def load_cub200(
    root: str | os.PathLike,
    crop_bbox: bool = False,
    split: str = "metric",
    num_train_classes: int | None = None,
    name: str = "cub200",
) -> DatasetSplits:
    """Load CUB-200-2011 from `root` (or `root/CUB_200_2011`).

    crop_bbox: carry each image's (x, y, w, h) box in `ImageRecord.bbox` so the dataset crops it.
    split: "metric" (classes 1..num_train_classes train, the rest test; by default the first half of the
    classes, i.e. 1-100 on CUB-200-2011) or "classification" (train_test_split.txt; both splits share classes).
    """
    if split not in ("metric", "classification"):
        raise ValueError(f"CUB-200-2011: split must be 'metric' or 'classification', got {split!r}")
    base = find_root(root, "images.txt", ("CUB_200_2011",), "CUB-200-2011")
    image_dir = require_dir(base / "images", "the CUB-200-2011 image folder 'images/'")
    images_txt = require_file(base / "images.txt", "the CUB-200-2011 image list 'images.txt'")
    labels_txt = require_file(base / "image_class_labels.txt", "the CUB-200-2011 labels 'image_class_labels.txt'")
    classes_txt = require_file(base / "classes.txt", "the CUB-200-2011 class names 'classes.txt'")
    paths = _read_table(images_txt, 1, "<relative path>", InsideRoot(image_dir))
    labels = _read_table(labels_txt, 1, "<class id>")
    class_names = _read_table(classes_txt, 1, "<class name>")
    missing = sorted(set(paths) - set(labels))
    if missing:
        raise ValueError(f"{labels_txt}: no class label for image id {missing[0]} listed in {images_txt}")
    boxes: dict[int, list[str]] = {}
    if crop_bbox:
        boxes_txt = require_file(base / "bounding_boxes.txt", "the CUB-200-2011 boxes 'bounding_boxes.txt'")
        boxes = _read_table(boxes_txt, 4, "<x> <y> <width> <height>")
        absent = sorted(set(paths) - set(boxes))
        if absent:
            raise ValueError(f"{boxes_txt}: no bounding box for image id {absent[0]}")
    is_train: dict[int, bool] = {}
    if split == "classification":
        split_txt = require_file(base / "train_test_split.txt", "the CUB-200-2011 split 'train_test_split.txt'")
        flags = _read_table(split_txt, 1, "<is training 0/1>")
        is_train = {i: _int_field(split_txt, i, v[0]) == 1 for i, v in flags.items()}

    class_of = {i: _int_field(labels_txt, i, labels[i][0]) for i in paths}
    unnamed = sorted(set(class_of.values()) - set(class_names))
    if unnamed:
        raise ValueError(f"{labels_txt}: class id {unnamed[0]} has no entry in {classes_txt}")
    if num_train_classes is None:
        num_train_classes = max(class_of.values()) // 2
    train: list[ImageRecord] = []
    test: list[ImageRecord] = []
    for image_id in sorted(paths):
        label = class_of[image_id]
        bbox = tuple(float(v) for v in boxes[image_id]) if crop_bbox else None
        record = ImageRecord(paths[image_id][0], label, 0, bbox)
        in_train = is_train.get(image_id, False) if split == "classification" else label <= num_train_classes
        (train if in_train else test).append(record)
    check_files_exist([r.path for r in train + test], "CUB-200-2011", str(images_txt))
    require_nonempty(train, "train", name, str(images_txt))
    require_nonempty(test, "test", name, str(images_txt))
    train, _ = relabel(train)
    return DatasetSplits(name, "cub", train, test, test, len({r.pid for r in train}))
