"""Build datasets, models, loss terms, optimisers and schedules, each from its own config section."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reid_robust.config import DataConfig, LossTermConfig, ModelConfig, TrainConfig
from reid_robust.data import build_dataset
from reid_robust.data.records import DatasetSplits
from reid_robust.losses import LOSSES, MetricLoss, build_loss
from reid_robust.models import ReIDModel, build_model


def build_dataset_from_config(data: DataConfig) -> DatasetSplits:
    """The splits of ``data.dataset`` under ``data.root`` with the loader's ``data.options``."""
    options: dict[str, Any] = dict(data.options)
    if data.crop_bbox:
        options["crop_bbox"] = True
    try:
        return build_dataset(data.dataset, data.root, **options)
    except TypeError as exc:  # unknown loader option
        raise ValueError(f"data.options: {exc}") from None


def build_model_from_config(model: ModelConfig) -> ReIDModel:
    """The embedder (classifiers belong to the loss terms that need them)."""
    return build_model(backbone=model.backbone, pretrained=model.pretrained, embedding_dim=model.embedding_dim,
                       last_stride=model.last_stride, pooling=model.pooling, neck=model.neck,
                       freeze_stages=model.freeze_stages)


@dataclass
class LossTerm:
    name: str
    weight: float
    input: str
    module: MetricLoss


def build_loss_terms(terms: Sequence[LossTermConfig], num_classes: int, embedding_dim: int) -> list[LossTerm]:
    """One module per ``loss.terms`` entry; class-parameter losses get ``num_classes``/``embedding_dim``."""
    out = []
    for i, term in enumerate(terms):
        params = dict(term.params)
        if getattr(LOSSES.get(term.name), "needs_num_classes", False):
            params.setdefault("num_classes", num_classes)
            params.setdefault("embedding_dim", embedding_dim)
        try:
            module = build_loss(term.name, **params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"loss.terms[{i}] ({term.name}): {exc}") from None
        out.append(LossTerm(term.name, term.weight, term.input, module))
    return out


def build_optimizer(train: TrainConfig, model: nn.Module, loss_modules: Sequence[nn.Module]) -> torch.optim.Optimizer:
    """SGD (Nesterov), Adam or AdamW over the model at ``train.lr`` and the loss parameters at ``train.loss_lr``."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": train.lr}]
    loss_params = [p for m in loss_modules for p in m.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": train.loss_lr if train.loss_lr is not None else train.lr})
    if train.optimizer == "sgd":
        return torch.optim.SGD(groups, momentum=train.momentum, weight_decay=train.weight_decay, nesterov=True)
    if train.optimizer == "adam":
        return torch.optim.Adam(groups, weight_decay=train.weight_decay)
    return torch.optim.AdamW(groups, weight_decay=train.weight_decay)


def lr_factor(train: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimisation ``step``: linear warm-up, then cosine or multi-step decay."""
    epoch = step / max(steps_per_epoch, 1)
    warm = train.warmup_epochs
    if warm > 0 and epoch < warm:
        return train.warmup_factor + (1.0 - train.warmup_factor) * epoch / warm
    if train.scheduler == "cosine":
        total = max(train.epochs - warm, 1e-8)
        progress = min(max((epoch - warm) / total, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if train.scheduler == "multistep":
        return train.gamma ** sum(int(epoch) >= m for m in train.milestones)
    return 1.0


def build_scheduler(train: TrainConfig, optimizer: torch.optim.Optimizer,
                    steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-iteration LambdaLR (so warm-up is smooth and resuming restores the exact position)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(train, step, steps_per_epoch))
