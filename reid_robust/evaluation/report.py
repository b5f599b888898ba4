"""Evaluation inputs and outputs: feature files (.npz), metric tables and JSON summaries."""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tabulate import tabulate

REID_KEYS = ("mAP", "rank1", "rank5", "rank10", "mINP")
RETRIEVAL_KEYS = ("recall@1", "recall@2", "recall@4", "recall@8", "precision_at_1", "map_at_r", "nmi")


@dataclass
class FeatureSet:
    """Embeddings of one split: ``feats`` [N, D] float32, ``pids`` [N], ``camids`` [N], ``paths`` (or None)."""

    feats: np.ndarray
    pids: np.ndarray
    camids: np.ndarray
    paths: list[str] | None = None


def load_features_npz(path: str | os.PathLike, what: str = "features") -> FeatureSet:
    """Read an .npz with arrays ``feats`` [N, D], ``pids`` [N], optional ``camids`` [N] (0 if absent) and
    optional ``paths`` [N] (image files, for --visualize). Errors name the file and what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {str(path)!r} does not exist")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{what} file {str(path)!r} is not a readable .npz archive ({exc})") from None
    with data:
        keys = set(data.files)
        missing = {"feats", "pids"} - keys
        if missing:
            raise ValueError(f"{what} file {str(path)!r} lacks array(s) {sorted(missing)}; it has {sorted(keys)} "
                             f"(expected feats [N, D], pids [N], camids [N], optionally paths [N])")
        feats, pids = data["feats"], data["pids"]
        camids = data["camids"] if "camids" in keys else np.zeros(len(pids), dtype=np.int64)
        paths = [str(p) for p in data["paths"]] if "paths" in keys else None
    lengths = {"feats": len(feats), "pids": len(pids), "camids": len(camids)}
    if paths is not None:
        lengths["paths"] = len(paths)
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{what} file {str(path)!r}: arrays have different lengths {lengths}")
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


def write_json(path: str | os.PathLike, summary: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    os.replace(tmp, path)
    return path
