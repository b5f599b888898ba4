"""Evaluate a model on a dataset's test split with the dataset's protocol, and print metric tables."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tabulate import tabulate

from reid_robust.data.records import DatasetSplits
from reid_robust.engine.config import PROTOCOL_METRICS
from reid_robust.engine.inference import extract_features
from reid_robust.evaluation import evaluate_reid, evaluate_retrieval

REID_COLUMNS = PROTOCOL_METRICS["market"]
RETRIEVAL_COLUMNS = ("recall@1", "recall@2", "recall@4", "recall@8", "map_at_r", "nmi")


def evaluate_model(model: torch.nn.Module, splits: DatasetSplits, cfg: dict, transform,
                   device: torch.device | str = "cpu") -> dict[str, Any]:
    """Market-1501 protocol (query vs gallery, cameras) or CUB protocol (leave-one-out on the test split)."""
    e_cfg, d_cfg = cfg["eval"], cfg["data"]
    kwargs = dict(batch_size=d_cfg["test_batch_size"], flip=e_cfg["flip"], device=device,
                  num_workers=d_cfg["num_workers"])
    if splits.protocol == "cub":
        feats, labels, _ = extract_features(model, splits.query, transform, **kwargs)
        return evaluate_retrieval(feats, labels, metric=e_cfg["metric"])
    qf, qp, qc = extract_features(model, splits.query, transform, **kwargs)
    gf, gp, gc = extract_features(model, splits.gallery, transform, **kwargs)
    extra: dict[str, Any] = {"rerank": True} if e_cfg.get("rerank") else {}
    return evaluate_reid(qf, gf, qp, gp, qc, gc, metric=e_cfg["metric"], **extra)


def metrics_table(rows: dict[str, dict[str, Any]]) -> str:
    """A table with one row per named result (metrics shown as percentages)."""
    first = next(iter(rows.values()))
    columns: Sequence[str] = REID_COLUMNS if "mAP" in first else RETRIEVAL_COLUMNS
    columns = [c for c in columns if c in first]
    body = [[name] + [f"{100 * float(m[c]):.2f}" for c in columns] for name, m in rows.items()]
    return tabulate(body, headers=["model"] + [f"{c} (%)" for c in columns], tablefmt="github")
