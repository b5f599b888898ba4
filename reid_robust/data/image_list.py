"""The images a user hands over to embed or evaluate, with their identities and cameras where the layout
gives them.

A source is one of:
- a folder of Market-1501-named images (``<pid>_c<camera>...jpg``): pids and cameras from the names;
- a folder of identity folders (``<root>/<identity>/*.jpg``, read by :mod:`reid_robust.data.folder`):
  pids from the folder names (integers keep their value, other names are numbered in sorted order and kept
  as ``identities``), cameras from ``camera_pattern`` (a regex whose group ``cam``, or first group, is an
  integer) or none;
- any other folder (searched recursively), a glob (``'dir/**/*.jpg'``), a single image, a list file
  (``.txt``: one path per line, relative to the list's folder) or a Python list of paths: no labels;
- a labels CSV (``.csv`` with columns ``path``, ``pid`` and optionally ``camid``; paths relative to the CSV's
  folder), alone or as ``labels`` beside any source above: it gives the listed images their pids (cameras).
"""
from __future__ import annotations

import csv
import glob
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import is_image_file
from .folder import _numeric, _scan
from .market1501 import parse_market_filename
from .records import UNKNOWN_CAMID, ImageRecord

Source = str | os.PathLike | Sequence[str | os.PathLike]
LIST_SUFFIXES = (".txt", ".lst")


@dataclass
class ImageList:
    """Image files with their optional labels: ``pids``/``camids`` [N] int64 or None, ``identities`` (names)."""

    paths: list[str]
    pids: np.ndarray | None = None
    camids: np.ndarray | None = None
    identities: list[str] | None = None
    layout: str = "images"

    def records(self) -> list[ImageRecord]:
        """One record per image (pid 0 and camid ``UNKNOWN_CAMID`` where unknown: the extractor reads only the
        paths)."""
        pids = self.pids if self.pids is not None else np.zeros(len(self.paths), dtype=np.int64)
        camids = self.camids if self.camids is not None else np.full(len(self.paths), UNKNOWN_CAMID, dtype=np.int64)
        return [ImageRecord(p, int(i), int(c)) for p, i, c in zip(self.paths, pids, camids)]


def is_glob(text: str) -> bool:
    return any(ch in text for ch in "*?[") and not os.path.exists(text)


def is_image_source(text: str | os.PathLike) -> bool:
    """A folder, a glob, an image, a list file or a labels CSV (anything else is read as a feature file)."""
    text = os.fspath(text)
    suffix = Path(text).suffix.lower()
    return os.path.isdir(text) or is_glob(text) or is_image_file(text) or suffix in LIST_SUFFIXES + (".csv",)


def image_list(source: Source, labels: str | os.PathLike | None = None,
               camera_pattern: str | None = None) -> ImageList:
    """Resolve ``source`` (see the module docstring) to its images; every problem is one line naming it."""
    if isinstance(source, (str, os.PathLike)):
        found = _from_path(os.fspath(source), camera_pattern)
    else:
        found = ImageList(_existing([os.fspath(p) for p in source], "the list of image paths"))
    if not found.paths:
        raise ValueError(f"no images given ({_describe(source)})")
    if labels is not None:
        found = with_labels(found.paths, read_labels_csv(labels))
    return found


def _describe(source: Source) -> str:
    return repr(os.fspath(source)) if isinstance(source, (str, os.PathLike)) else "an empty list"


def _from_path(text: str, camera_pattern: str | None) -> ImageList:
    if is_glob(text):
        paths = sorted(p for p in glob.glob(text, recursive=True) if os.path.isfile(p) and is_image_file(p))
        if not paths:
            raise FileNotFoundError(f"glob {text!r} matches no image files")
        return ImageList(paths)
    path = Path(text)
    if path.is_dir():
        return _from_folder(path, camera_pattern)
    if not path.is_file():
        raise FileNotFoundError(f"{text!r} is neither a folder, an image, a list file nor a glob that exists")
    if path.suffix.lower() == ".csv":
        table = read_labels_csv(path)
        return with_labels(list(table), table)
    if path.suffix.lower() in LIST_SUFFIXES:
        return ImageList(_read_list_file(path))
    if is_image_file(path.name):
        return ImageList([str(path)])
    raise ValueError(f"{text!r} is not an image, a list file ({', '.join(LIST_SUFFIXES)}) or a labels CSV (.csv)")


def _walk(root: Path) -> list[str]:
    """Every image file under ``root``, recursively, in sorted order."""
    found = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        found += [os.path.join(folder, f) for f in sorted(files) if is_image_file(f)]
    return found


def _from_folder(root: Path, camera_pattern: str | None) -> ImageList:
    """Market-named images, identity folders, or plain images (see the module docstring)."""
    paths = _walk(root)
    if not paths:
        raise FileNotFoundError(f"folder {str(root)!r} holds no image files")
    depths = {len(Path(p).relative_to(root).parts) for p in paths}
    if depths == {1}:
        try:
            parsed = [parse_market_filename(p, strict=False) for p in paths]
        except ValueError:
            return ImageList(paths)
        pids, camids = zip(*parsed)
        return ImageList(paths, np.array(pids, dtype=np.int64), np.array(camids, dtype=np.int64), layout="market")
    if depths == {2}:
        return _identity_folders(root, camera_pattern)
    return ImageList(paths)


def _identity_folders(root: Path, camera_pattern: str | None) -> ImageList:
    """``<root>/<identity>/*.jpg`` through :mod:`reid_robust.data.folder`'s scan."""
    pattern = re.compile(camera_pattern) if camera_pattern else None
    if pattern is not None and pattern.groups < 1:
        raise ValueError(f"camera pattern {camera_pattern!r} needs a capture group (e.g. r'_c(\\d+)')")
    items = _scan(root, pattern)
    names = [ident for _, ident, _ in items]
    numeric = _numeric(set(names))
    order = {n: k + 1 for k, n in enumerate(sorted(set(names)))}
    pids = np.array([int(n) if numeric else order[n] for n in names], dtype=np.int64)
    camids = None
    if pattern is not None:
        bad = next((path for path, _, cam in items if not re.fullmatch(r"\d+", cam or "")), None)
        if bad is not None:
            raise ValueError(f"camera pattern {camera_pattern!r} gives a camera that is not an integer for {bad!r}")
        camids = np.array([int(str(cam)) for _, _, cam in items], dtype=np.int64)
    return ImageList([path for path, _, _ in items], pids, camids, None if numeric else names, "identity folders")


def _existing(paths: list[str], listed_in: str) -> list[str]:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of {len(paths)} images of {listed_in} do not exist, e.g. {missing[0]!r}")
    return paths


def _read_list_file(path: Path) -> list[str]:
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    return _existing([str(path.parent / e) for e in entries], f"list file {str(path)!r}")


def read_labels_csv(path: str | os.PathLike) -> dict[str, tuple[int, int | None]]:
    """``{absolute image path: (pid, camid or None)}`` from a CSV with columns ``path``, ``pid``[, ``camid``]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labels CSV {str(path)!r} does not exist")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = set(reader.fieldnames or ())
        if not {"path", "pid"} <= columns:
            raise ValueError(f"labels CSV {str(path)!r} needs a header with columns path,pid[,camid]; "
                             f"it has {sorted(columns)}")
        table: dict[str, tuple[int, int | None]] = {}
        for line, row in enumerate(reader, start=2):
            try:
                camid = int(row["camid"]) if "camid" in columns else None
                table[os.path.abspath(path.parent / row["path"])] = (int(row["pid"]), camid)
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: pid and camid must be integers, got {row}") from None
    if not table:
        raise ValueError(f"labels CSV {str(path)!r} lists no images")
    _existing(list(table), f"labels CSV {str(path)!r}")
    return table


def with_labels(paths: list[str], table: dict[str, tuple[int, int | None]]) -> ImageList:
    """``paths`` labelled from a labels table (:func:`read_labels_csv`); an unlisted image is refused."""
    keys = [os.path.abspath(p) for p in paths]
    missing = [p for p, k in zip(paths, keys) if k not in table]
    if missing:
        raise ValueError(f"{len(missing)} image(s) are not in the labels CSV, e.g. {missing[0]!r}")
    pids = np.array([table[k][0] for k in keys], dtype=np.int64)
    cams = [table[k][1] for k in keys]
    camids = None if any(c is None for c in cams) else np.array(cams, dtype=np.int64)
    return ImageList(paths, pids, camids, layout="labels CSV")
