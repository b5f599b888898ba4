"""Evaluate a model on a dataset's test split with the dataset's protocol (the trainer's evaluation)."""
from __future__ import annotations

from typing import Any, Callable

import torch

from reid_robust.config import ConfigError, DataConfig, EvalConfig
from reid_robust.data.records import UNKNOWN_CAMID, DatasetSplits, ImageRecord
from reid_robust.engine.distributed import DistInfo, broadcast_buffers, broadcast_object
from reid_robust.engine.embed import ExtractOptions, embed_records, embed_records_on_ranks
from reid_robust.evaluation.features_eval import evaluate_reid_features, evaluate_retrieval_features
from reid_robust.evaluation.report import FeatureSet


def evaluate_model(model: torch.nn.Module, splits: DatasetSplits, ev: EvalConfig, data: DataConfig,
                   transform: Callable, device: torch.device | str = "cpu",
                   progress: bool | None = None, info: DistInfo | None = None) -> dict[str, Any]:
    """Market-1501 protocol (query vs gallery, cameras) or CUB protocol (leave-one-out on the test split).

    ev: flip, metric, rerank, camera_filter (:func:`check_cameras`); data: test_batch_size, num_workers.
    progress: None shows the embedding and evaluation steps, False not. Features come from
    :func:`reid_robust.engine.embed.embed_records`, the path every tool embeds through.
    info (torchrun, called by every rank): rank 0's model buffers are broadcast, each rank embeds its share
    of the query and gallery images, rank 0 gathers them, evaluates and broadcasts the metrics, which every
    rank returns: the metrics of one process evaluating rank 0's model.
    """
    check_cameras(ev, splits)
    info = info or DistInfo()
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    broadcast_buffers(model, info)
    options = ExtractOptions(batch_size=data.test_batch_size, flip=ev.flip, num_workers=data.num_workers,
                             progress=progress)

    def embed(records: list[ImageRecord], source: str) -> FeatureSet | None:
        if not info.enabled:
            return embed_records(model, records, transform, device, options, source)
        return embed_records_on_ranks(model, records, transform, device, options, info, source)

    query = embed(splits.query, f"{splits.name} query")
    gallery = None if splits.protocol == "cub" else embed(splits.gallery, f"{splits.name} gallery")
    metrics = None
    if query is not None:  # rank 0 (or the only process)
        if splits.protocol == "cub":
            metrics = evaluate_retrieval_features(query, metric=ev.metric, progress=progress)
        else:
            assert gallery is not None
            metrics = evaluate_reid_features(query, gallery, metric=ev.metric, rerank=ev.rerank,
                                             camera_filter=ev.camera_filter, progress=progress)
    return broadcast_object(metrics, info)


def check_cameras(ev: EvalConfig, splits: DatasetSplits) -> None:
    """The Market protocol's same-camera rule needs cameras: a query/gallery split without them (camid
    ``UNKNOWN_CAMID``: identity folders without ``data.options.camera_pattern``) is evaluated only with the
    explicit ``eval.camera_filter=false``; refused in one line otherwise (the trainer checks before training)."""
    if splits.protocol != "market" or not ev.camera_filter:
        return
    missing = [name for name, records in (("query", splits.query), ("gallery", splits.gallery))
               if any(r.camid == UNKNOWN_CAMID for r in records)]
    if missing:
        raise ConfigError(f"eval.camera_filter: the {' and '.join(missing)} images of dataset {splits.name} have no "
                          "cameras (a folder dataset without data.options.camera_pattern), so the Market protocol's "
                          "same-camera rule cannot apply; set eval.camera_filter=false (every gallery image of the "
                          "query's identity is then a true match) or give data.options.camera_pattern")
