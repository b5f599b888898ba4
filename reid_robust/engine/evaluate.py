"""Evaluate a model on a dataset's test split with the dataset's protocol (the trainer's evaluation)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from reid_robust.config import DataConfig, EvalConfig
from reid_robust.data.records import DatasetSplits
from reid_robust.engine.embed import ExtractOptions, embed_records
from reid_robust.evaluation.features_eval import evaluate_reid_features, evaluate_retrieval_features


def evaluate_model(model: torch.nn.Module, splits: DatasetSplits, ev: EvalConfig, data: DataConfig,
                   transform: Callable, device: torch.device | str = "cpu",
                   progress: bool | None = None) -> dict[str, Any]:
    """Market-1501 protocol (query vs gallery, cameras) or CUB protocol (leave-one-out on the test split).

    ev: flip, metric, rerank; data: test_batch_size, num_workers. Features come from
    :func:`reid_robust.engine.embed.embed_records`, the path every tool embeds through.
    """
    options = ExtractOptions(batch_size=data.test_batch_size, flip=ev.flip, num_workers=data.num_workers,
                             progress=progress)
    query = embed_records(model, splits.query, transform, device, options, f"{splits.name} query")
    if splits.protocol == "cub":
        return evaluate_retrieval_features(query, metric=ev.metric)
    gallery = embed_records(model, splits.gallery, transform, device, options, f"{splits.name} gallery")
    return evaluate_reid_features(query, gallery, metric=ev.metric, rerank=ev.rerank)
