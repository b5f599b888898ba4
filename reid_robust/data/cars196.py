"""Cars196 (Krause et al., "3D Object Representations for Fine-Grained Categorization", 3dRR 2013).

Standard metric-learning split: all 16,185 images, classes 1-98 train (8,054 images), 99-196 test (8,131),
leave-one-out retrieval on the test split (protocol "cub"); the release's own train/test flag is ignored.

Annotations are read from `cars_annos.mat` (struct array `annotations` with `relative_im_path`, `bbox_x1`,
`bbox_y1`, `bbox_x2`, `bbox_y2`, `class`; needs scipy) or, if that is absent, from a text list
`cars_annos.txt` with lines "<relative image path> <class 1..196> [<x1> <y1> <x2> <y2>]" ('#' starts a
comment). Paths are relative to the root; boxes are 1-based inclusive corners as in the .mat file.
"""
from __future__ import annotations

import os
from pathlib import Path

from .files import InsideRoot, check_files_exist, require_dir
from .records import DatasetSplits, ImageRecord, relabel, require_nonempty

Entry = tuple[str, int, tuple | None]  # (image path under the root, class, (x1, y1, x2, y2) or None)


def _read_mat(path: Path, inside: InsideRoot) -> list[Entry]:
    try:
        from scipy.io import loadmat
    except ImportError:  # pragma: no cover - scipy ships with scikit-learn
        raise ImportError(f"reading {path} needs scipy; install it or provide cars_annos.txt instead") from None
    mat = loadmat(path, squeeze_me=True)
    if "annotations" not in mat:
        raise ValueError(f"{path}: no 'annotations' struct array (is this the Cars196 cars_annos.mat?)")
    annotations = mat["annotations"]
    fields = ("relative_im_path", "class", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2")
    missing = [f for f in fields if f not in (annotations.dtype.names or ())]
    if missing:
        raise ValueError(f"{path}: annotations lack field(s) {missing}")
    return [(str(inside(str(a["relative_im_path"]), f"{path}: annotation {i}")), int(a["class"]),
             tuple(float(a[f]) for f in fields[2:])) for i, a in enumerate(annotations.reshape(-1), 1)]


def _read_text(path: Path, inside: InsideRoot) -> list[Entry]:
    entries = []
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, 1):
            text = line.split("#", 1)[0].strip()
            if not text:
                continue
            fields = text.split()
            if len(fields) not in (2, 6):
                raise ValueError(f"{path}:{line_no}: expected '<path> <class> [<x1> <y1> <x2> <y2>]', got {text!r}")
            try:
                box = tuple(float(v) for v in fields[2:]) or None
                cls = int(fields[1])
            except ValueError:
                raise ValueError(f"{path}:{line_no}: non-numeric class or box in {text!r}") from None
            entries.append((str(inside(fields[0], f"{path}:{line_no}")), cls, box))
    return entries


def load_cars196(root: str | os.PathLike, crop_bbox: bool = False, num_train_classes: int | None = None,
                 name: str = "cars196") -> DatasetSplits:
    """Load Cars196 from `root`: classes 1..num_train_classes (default: the first half, 98) train, rest test."""
    base = require_dir(root, "the Cars196 root directory")
    mat, text = base / "cars_annos.mat", base / "cars_annos.txt"
    if mat.is_file():
        entries, source = _read_mat(mat, InsideRoot(base)), mat
    elif text.is_file():
        entries, source = _read_text(text, InsideRoot(base)), text
    else:
        raise FileNotFoundError(f"Cars196: expected annotations 'cars_annos.mat' or 'cars_annos.txt' in {base}")
    if not entries:
        raise ValueError(f"{source} lists no images")
    if num_train_classes is None:
        num_train_classes = max(cls for _, cls, _ in entries) // 2
    train: list[ImageRecord] = []
    test: list[ImageRecord] = []
    for path, cls, box in entries:
        if crop_bbox and box is None:
            raise ValueError(f"{source}: crop_bbox=True but {path} has no box")
        bbox = (box[0] - 1, box[1] - 1, box[2] - box[0] + 1, box[3] - box[1] + 1) if crop_bbox and box is not None else None
        (train if cls <= num_train_classes else test).append(ImageRecord(path, cls, 0, bbox))
    require_nonempty(train, "train", name, str(source))
    require_nonempty(test, "test", name, str(source))
    check_files_exist([r.path for r in train + test], "Cars196", str(source))
    train, _ = relabel(train)
    return DatasetSplits(name, "cub", train, test, test, len({r.pid for r in train}))
