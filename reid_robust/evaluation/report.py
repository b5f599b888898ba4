"""Evaluation inputs and outputs: feature files (.npz), metric tables and JSON summaries."""
from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tabulate import tabulate

from reid_robust.atomic import atomic_write, atomic_write_text

# the one list of metric keys per protocol, in table order (also train.best_metric's choices)
from reid_robust.config.sections import PROTOCOL_METRICS

from .search import as_feature_matrix, as_label_vector


@dataclass
class FeatureSet:
    """Embeddings of one set of images: ``feats`` [N, D] float32; optional ``pids`` [N] (identities; needed
    to evaluate), ``camids`` [N] (cameras; without them evaluate with ``camera_filter=False``), ``paths``
    [N] (image files) and ``identities`` [N] (identity folder names, when they are not integers: query and
    gallery pids are then matched through these names). ``source`` names the set in messages."""

    feats: np.ndarray
    pids: np.ndarray | None = None
    camids: np.ndarray | None = None
    paths: list[str] | None = None
    identities: list[str] | None = None
    source: str = "features"

    def __len__(self) -> int:
        return len(self.feats)

    def labelled(self) -> np.ndarray:
        """``pids`` [N]; a set without them is refused in one line (evaluation needs identities)."""
        if self.pids is None:
            raise ValueError(f"{self.source} has no pids (identities), so it cannot be evaluated; embed a "
                             "layout that gives identities (Market-1501 names, identity folders, a labels CSV)")
        return self.pids


NPZ_LAYOUT = "feats [N, D], optionally pids [N], camids [N], paths [N] and identities [N]"
_OPTIONAL = ("pids", "camids", "paths", "identities")
# what np.load and reading an archive member raise for a file that is not a sound .npz
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def save_features(path: str | os.PathLike, features: FeatureSet) -> Path:
    """Write ``features`` to an ``.npz`` (atomically): ``feats`` float32, ``pids``/``camids`` int64,
    ``paths``/``identities`` str, each optional array only when the set has it. Read back by
    :func:`load_features`."""
    feats = as_feature_matrix(features.feats, "feats")
    arrays: dict[str, np.ndarray] = {"feats": np.asarray(feats, dtype=np.float32)}
    for key in ("pids", "camids"):
        if getattr(features, key) is not None:
            arrays[key] = as_label_vector(getattr(features, key), key, len(feats))
    for key in ("paths", "identities"):
        values = getattr(features, key)
        if values is not None:
            if len(values) != len(feats):
                raise ValueError(f"{key} has {len(values)} entries but the features have {len(feats)} rows")
            arrays[key] = np.asarray([str(v) for v in values], dtype=str)
    path = check_output_path(path, "features output")
    atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]  # numpy's stub
    return path


def load_features(path: str | os.PathLike, what: str = "features", metric: str | None = None) -> FeatureSet:
    """Read an .npz written by :func:`save_features` (``feats`` [N, D] and the optional arrays), never
    unpickling anything.

    Every problem is one ValueError (OSError for a missing file) naming the file: not an .npz (empty,
    truncated, an .npy, a pickle), no ``feats``, wrong shapes or lengths, and the feature checks of
    :func:`reid_robust.evaluation.search.as_feature_matrix` (``metric`` adds the cosine ones).
    """
    path = Path(path)
    where = f"{what} file {str(path)!r}"
    _check_npz_file(path, where)
    try:
        data = np.load(path, allow_pickle=False)
    except _UNREADABLE as exc:
        raise ValueError(f"{where} is a truncated or corrupt .npz archive ({_reason(exc)})") from None
    with data:
        if "feats" not in data.files:
            raise ValueError(f"{where} lacks array 'feats'; it has {sorted(data.files)} (expected {NPZ_LAYOUT})")
        arrays = {}
        for key in ("feats",) + _OPTIONAL:
            if key in data.files:
                try:
                    arrays[key] = data[key]
                except _UNREADABLE as exc:  # a corrupt member, or an object array (it would need unpickling)
                    raise ValueError(f"{where}: array {key!r} cannot be read ({_reason(exc)})") from None
    try:
        return _feature_set(arrays, metric, where)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _check_npz_file(path: Path, where: str) -> None:
    """Refuse a missing file, a folder, an empty file, a single .npy array and anything without a zip header."""
    if path.is_dir():
        raise IsADirectoryError(f"{where} is a folder, not an .npz file ({NPZ_LAYOUT})")
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist")
    with path.open("rb") as handle:
        magic = handle.read(6)
    if not magic:
        raise ValueError(f"{where} is empty (0 bytes), not an .npz archive ({NPZ_LAYOUT})")
    if magic.startswith(b"\x93NUMPY"):
        raise ValueError(f"{where} holds a single .npy array, not an .npz archive of arrays ({NPZ_LAYOUT})")
    if not magic.startswith(b"PK"):
        raise ValueError(f"{where} is not an .npz archive (no zip signature; expected {NPZ_LAYOUT})")


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _feature_set(arrays: dict[str, np.ndarray], metric: str | None, source: str) -> FeatureSet:
    """Validate the arrays of one feature file (messages name the array, the caller names the file)."""
    for key, array in arrays.items():
        if key != "feats" and array.ndim != 1:
            raise ValueError(f"{key} must be 1-D [N], got shape {array.shape}")
    feats = as_feature_matrix(arrays["feats"], "feats", metric)
    lengths = {key: len(array) for key, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays have different lengths {lengths}")
    labels = {k: as_label_vector(arrays[k], k, len(feats)) if k in arrays else None for k in ("pids", "camids")}
    texts = {k: [str(v) for v in arrays[k]] if k in arrays else None for k in ("paths", "identities")}
    return FeatureSet(feats, labels["pids"], labels["camids"], texts["paths"], texts["identities"], source)


def _percent(value: Any) -> str:
    return "nan" if value is None or math.isnan(float(value)) else f"{100 * float(value):.2f}"


def protocol_of(metrics: Mapping[str, Any]) -> str:
    """``market`` for Market-1501 protocol results (they have ``mAP``), else ``cub``."""
    return "market" if "mAP" in metrics else "cub"


def metrics_table(rows: Mapping[str, Mapping[str, Any]], protocol: str | None = None) -> str:
    """A table with one row per named result: the protocol's metrics in percent (``PROTOCOL_METRICS``; the
    protocol is told by the first row when not given) and the number of evaluated queries when known."""
    if not rows:
        raise ValueError("metrics_table: no results to show")
    first = next(iter(rows.values()))
    keys = [k for k in PROTOCOL_METRICS[protocol or protocol_of(first)] if k in first]
    queries = any("num_valid_queries" in m for m in rows.values())
    header = ["result"] + [f"{k} (%)" for k in keys] + (["queries"] if queries else [])
    body = [[name] + [_percent(m.get(k)) for k in keys] + ([m.get("num_valid_queries", "")] if queries else [])
            for name, m in rows.items()]
    return tabulate(body, headers=header, tablefmt="github", disable_numparse=True,
                    colalign=("left",) + ("right",) * (len(header) - 1))


def json_summary(metrics: dict, **info) -> dict:
    """Metrics (fractions) plus run information, with numpy scalars turned into plain numbers."""
    out = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in metrics.items() if k != "per_query"}
    out.update(info)
    return out


def check_output_path(path: str | os.PathLike, what: str, folder: bool = False) -> Path:
    """Refuse, in one line naming it, an output path that cannot be written: a file path that is an existing
    folder (a folder path that is an existing file, with ``folder``), or one under an existing file."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {str(path)!r} is an existing file, not a folder")
    if not folder and path.is_dir():
        raise IsADirectoryError(f"{what} {str(path)!r} is an existing folder; give a file path")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{what} {str(path)!r} lies under {str(parent)!r}, which is a file")
            break
    return path


def write_json(path: str | os.PathLike, summary: dict) -> Path:
    """Write ``summary`` as JSON to ``path`` atomically (parent folders are created)."""
    path = check_output_path(path, "JSON output")
    atomic_write_text(path, json.dumps(summary, indent=2, allow_nan=True) + "\n")
    return path
