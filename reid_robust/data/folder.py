"""Generic identity-folder dataset so users can bring their own data: `<split>/<identity>/<image>`.

Layouts (non-image files are ignored; images must sit inside identity folders):
- `root/train/`, `root/query/`, `root/gallery/` -> protocol "market" (query/gallery with cameras);
- `root/train/`, `root/test/` -> protocol "cub" (leave-one-out retrieval on test);
- `root/<identity>/` only -> identities in sorted order, the first `train_fraction` of them train, the rest test
  (protocol "cub", the zero-shot split of metric learning).
Identity folders with integer names keep that id (so `-1` is junk and `0`/`0000` distractors, as in Market-1501,
and neither is used for training); otherwise ids are 1-based ranks of the sorted names. A `-1`/`0` folder next to
non-numeric identity names (in any split) is an error rather than an ordinary identity. `camera_pattern` is a
regex searched in each file name whose named group `cam` (or first group) gives the camera; cameras are mapped
to 0..C-1 in sorted order. Without it the layout has no cameras: every camid is ``UNKNOWN_CAMID`` (-1), the
features of such a split carry no camids, and the market protocol runs with the explicit switch
``camera_filter=False`` (``eval.camera_filter=false`` in training, ``reid-eval --no-camera-filter``), under which
every gallery image of the query's identity is a true match.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .files import is_image_file, list_images, require_dir
from .records import DISTRACTOR_PID, JUNK_PID, UNKNOWN_CAMID, DatasetSplits, ImageRecord, relabel, require_nonempty

Item = tuple[str, str, str | None]  # (image path, identity folder name, camera string or None: no pattern)


def _scan(split_dir: Path, pattern: re.Pattern | None) -> list[Item]:
    items = []
    for entry in sorted(os.scandir(split_dir), key=lambda e: e.name):
        if entry.is_file() and is_image_file(entry.name):
            raise ValueError(f"image {entry.path} is not inside an identity folder (expected {split_dir}/<identity>/)")
        if not entry.is_dir():
            continue
        for name in list_images(Path(entry.path)):
            camera = None
            if pattern is not None:
                match = pattern.search(name)
                if match is None:
                    raise ValueError(f"file name {os.path.join(entry.path, name)!r} does not match camera_pattern "
                                     f"{pattern.pattern!r}")
                camera = match.group("cam") if "cam" in pattern.groupindex else match.group(1)
            items.append((os.path.join(entry.path, name), entry.name, camera))
    return items


def _numeric(names) -> bool:
    return all(re.fullmatch(r"-?\d+", n) for n in names)


def _sort_key(names):
    return (lambda n: int(n)) if _numeric(names) else (lambda n: n)


def _reject_mixed_special_folders(base: Path, items: dict[str, list[Item]]) -> None:
    """Junk (-1) / distractor (0) folders only mean that when every identity folder name is an integer."""
    folders = {os.path.relpath(os.path.dirname(path), base): ident for found in items.values() for path, ident, _ in found}
    special = sorted(f for f, i in folders.items() if _numeric([i]) and int(i) in (JUNK_PID, DISTRACTOR_PID))
    if not special:
        return
    named = sorted(f for f, i in folders.items() if not _numeric([i]))
    shown = ", ".join(named[:5]) + (f", ... ({len(named)} in all)" if len(named) > 5 else "")
    raise ValueError(f"folder dataset {base}: identity folder(s) {', '.join(special)} look like junk (-1) / "
                     f"distractor (0) folders, but other identity folders have non-numeric names ({shown}); "
                     "-1/0 junk/distractor folders need numeric identity names everywhere. Rename the identity "
                     "folders to integers, or rename the -1/0 folders if they are ordinary identities")


def load_folder(root: str | os.PathLike, camera_pattern: str | None = None, train_fraction: float = 0.5,
                name: str = "folder") -> DatasetSplits:
    """Load an identity-folder tree (see the module docstring for the layouts)."""
    base = require_dir(root, "the folder dataset root")
    pattern = None
    if camera_pattern is not None:
        pattern = re.compile(camera_pattern)
        if pattern.groups < 1:
            raise ValueError(f"camera_pattern {camera_pattern!r} needs a capture group (e.g. r'_c(\\d+)')")
    split_names: tuple[str, ...]
    if (base / "train").is_dir():
        has_qg = [(base / s).is_dir() for s in ("query", "gallery")]
        if all(has_qg):
            protocol, split_names = "market", ("train", "query", "gallery")
        elif (base / "test").is_dir() and not any(has_qg):
            protocol, split_names = "cub", ("train", "test")
        else:
            raise FileNotFoundError(f"folder dataset {base}: next to train/ expected both query/ and gallery/, "
                                    "or test/")
        items = {s: _scan(base / s, pattern) for s in split_names}
        for split, found in items.items():
            require_nonempty(found, split, name, str(base / split))
    else:
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction!r}")
        protocol, everything = "cub", _scan(base, pattern)
        require_nonempty(everything, "train", name, f"identity folders under {base}")
        names = {i for _, i, _ in everything}
        identities = sorted(names, key=_sort_key(names))
        if len(identities) < 2:
            raise ValueError(f"folder dataset {base}: need at least 2 identity folders to split, got {identities}")
        cut = min(max(round(train_fraction * len(identities)), 1), len(identities) - 1)
        train_ids = set(identities[:cut])
        items = {"train": [it for it in everything if it[1] in train_ids],
                 "test": [it for it in everything if it[1] not in train_ids]}

    all_ids = {i for found in items.values() for _, i, _ in found}
    numeric = _numeric(all_ids)
    if not numeric:
        _reject_mixed_special_folders(base, items)
    pid_of = {n: int(n) for n in all_ids} if numeric else {n: k + 1 for k, n in enumerate(sorted(all_ids))}
    camera_names = {c for found in items.values() for _, _, c in found if c is not None}
    cam_of: dict[str | None, int] = {c: k for k, c in enumerate(sorted(camera_names, key=_sort_key(camera_names)))}
    cam_of[None] = UNKNOWN_CAMID

    def records(split: str) -> list[ImageRecord]:
        return [ImageRecord(path, pid_of[ident], cam_of[cam]) for path, ident, cam in items[split]]

    train = [r for r in records("train") if r.pid not in (JUNK_PID, DISTRACTOR_PID) or not numeric]
    train, _ = relabel(require_nonempty(train, "train", name, str(base)))
    if protocol == "market":
        return DatasetSplits(name, protocol, train, records("query"), records("gallery"), len({r.pid for r in train}))
    test = records("test")
    return DatasetSplits(name, protocol, train, test, test, len({r.pid for r in train}))
