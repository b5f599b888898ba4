"""Evaluation inputs and outputs: feature files (.npz), metric tables and JSON summaries."""
from __future__ import annotations

import json
import math
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

from .search import as_feature_matrix, as_label_vector

REID_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")
RETRIEVAL_KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "precision_at_1", "map_at_r", "nmi")


@dataclass
class FeatureSet:
    """Embeddings of one split: ``feats`` [N, D] float32, ``pids`` [N], ``camids`` [N] or None (no cameras:
    evaluate with ``camera_filter=False``), ``paths`` [N] (or None)."""

    feats: np.ndarray
    pids: np.ndarray
    camids: np.ndarray | None = None
    paths: list[str] | None = None


NPZ_LAYOUT = "feats [N, D], pids [N], optionally camids [N] and paths [N]"
# what np.load and reading an archive member raise for a file that is not a sound .npz
_UNREADABLE = (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error)


def load_features_npz(path: str | os.PathLike, what: str = "features", metric: str | None = None) -> FeatureSet:
    """Read an .npz with arrays ``feats`` [N, D], ``pids`` [N], optional ``camids`` [N] (None if absent) and
    optional ``paths`` [N] (image files, for --visualize), never unpickling anything.

    Every problem is one ValueError (OSError for a missing file) naming the file: not an .npz (empty,
    truncated, an .npy, a pickle), a missing array, wrong shapes or lengths, and the feature checks of
    :func:`reid_robust.evaluation.search.as_feature_matrix` (``metric`` adds the cosine ones).
    """
    path = Path(path)
    where = f"{what} file {str(path)!r}"
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
    try:
        data = np.load(path, allow_pickle=False)
    except _UNREADABLE as exc:
        raise ValueError(f"{where} is a truncated or corrupt .npz archive ({_reason(exc)})") from None
    with data:
        missing = {"feats", "pids"} - set(data.files)
        if missing:
            raise ValueError(f"{where} lacks array(s) {sorted(missing)}; it has {sorted(data.files)} "
                             f"(expected {NPZ_LAYOUT})")
        arrays = {}
        for key in ("feats", "pids", "camids", "paths"):
            if key in data.files:
                try:
                    arrays[key] = data[key]
                except _UNREADABLE as exc:  # a corrupt member, or an object array (it would need unpickling)
                    raise ValueError(f"{where}: array {key!r} cannot be read ({_reason(exc)})") from None
    try:
        return _feature_set(arrays, metric)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _reason(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _feature_set(arrays: dict[str, np.ndarray], metric: str | None) -> FeatureSet:
    """Validate the arrays of one feature file (messages name the array, the caller names the file)."""
    for key, array in arrays.items():
        if key != "feats" and array.ndim != 1:
            raise ValueError(f"{key} must be 1-D [N], got shape {array.shape}")
    feats = as_feature_matrix(arrays["feats"], "feats", metric)
    lengths = {key: len(array) for key, array in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays have different lengths {lengths}")
    pids = as_label_vector(arrays["pids"], "pids", len(feats))
    camids = as_label_vector(arrays["camids"], "camids", len(feats)) if "camids" in arrays else None
    paths = [str(p) for p in arrays["paths"]] if "paths" in arrays else None
    return FeatureSet(feats, pids, camids, paths)


def _percent(value) -> str:
    return "nan" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.2f}"


def metrics_table(metrics: dict, protocol: str) -> str:
    """A one-row table of the protocol's metrics in percent, with the number of evaluated queries."""
    keys = [k for k in (REID_KEYS if protocol == "market" else RETRIEVAL_KEYS) if k in metrics]
    header = [f"{k} (%)" for k in keys] + ["queries"]
    row = [_percent(metrics[k]) for k in keys] + [metrics.get("num_valid_queries", "")]
    return tabulate([row], headers=header, tablefmt="github", disable_numparse=True,
                    colalign=("right",) * len(header))


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path
