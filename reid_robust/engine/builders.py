"""Build datasets, models, transforms, loss terms, optimisers and schedules from a resolved config."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from reid_robust.data import build_dataset, build_transforms
from reid_robust.data.records import DatasetSplits
from reid_robust.losses import LOSSES, MetricLoss, build_loss
from reid_robust.models import ReIDModel, build_model


def build_dataset_from_config(cfg: dict) -> DatasetSplits:
    data = cfg["data"]
    options: dict[str, Any] = dict(data.get("options") or {})
    if data.get("crop_bbox"):
        options["crop_bbox"] = True
    try:
        return build_dataset(data["dataset"], data["root"], **options)
    except TypeError as exc:  # unknown loader option
        raise ValueError(f"data.options: {exc}") from None


def build_model_from_config(cfg: dict, num_classes: int | None = None) -> ReIDModel:
    """The embedder; ``num_classes`` is unused (classifiers belong to the loss terms that need them)."""
    m = cfg["model"]
    return build_model(backbone=m["backbone"], pretrained=m["pretrained"], embedding_dim=m["embedding_dim"],
                       last_stride=m["last_stride"], pooling=m["pooling"], neck=m["neck"],
                       freeze_stages=m["freeze_stages"])


def build_train_transform(cfg: dict):
    return build_transforms(cfg["data"]["transforms"], train=True)


def build_test_transform(cfg: dict):
    return build_transforms(cfg["data"]["transforms"], train=False)


@dataclass
class LossTerm:
    name: str
    weight: float
    input: str
    module: MetricLoss


def build_loss_terms(cfg: dict, num_classes: int, embedding_dim: int) -> list[LossTerm]:
    """One module per ``loss.terms`` entry; class-parameter losses get ``num_classes``/``embedding_dim``."""
    terms = []
    for i, term in enumerate(cfg["loss"]["terms"]):
        params = {k: v for k, v in term.items() if k not in ("name", "weight", "input")}
        name = term["name"]
        cls = LOSSES.get(name)
        if cls is not None and getattr(cls, "needs_num_classes", False):
            params.setdefault("num_classes", num_classes)
            params.setdefault("embedding_dim", embedding_dim)
        try:
            module = build_loss(name, **params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"loss.terms[{i}] ({name}): {exc}") from None
        terms.append(LossTerm(name, float(term.get("weight", 1.0)), term.get("input", "feat"), module))
    return terms


def build_optimizer(cfg: dict, model: nn.Module, loss_modules: list[nn.Module]) -> torch.optim.Optimizer:
    t = cfg["train"]
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": t["lr"]}]
    loss_params = [p for m in loss_modules for p in m.parameters() if p.requires_grad]
    if loss_params:
        groups.append({"params": loss_params, "lr": t["loss_lr"] if t["loss_lr"] is not None else t["lr"]})
    if t["optimizer"] == "sgd":
        return torch.optim.SGD(groups, momentum=t["momentum"], weight_decay=t["weight_decay"], nesterov=True)
    if t["optimizer"] == "adam":
        return torch.optim.Adam(groups, weight_decay=t["weight_decay"])
    return torch.optim.AdamW(groups, weight_decay=t["weight_decay"])


def lr_factor(cfg: dict, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimisation ``step``: linear warm-up, then cosine or multi-step decay."""
    t = cfg["train"]
    epoch = step / max(steps_per_epoch, 1)
    warm = t["warmup_epochs"]
    if warm > 0 and epoch < warm:
        return t["warmup_factor"] + (1.0 - t["warmup_factor"]) * epoch / warm
    if t["scheduler"] == "cosine":
        total = max(t["epochs"] - warm, 1e-8)
        progress = min(max((epoch - warm) / total, 0.0), 1.0)
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if t["scheduler"] == "multistep":
        return t["gamma"] ** sum(int(epoch) >= m for m in t["milestones"])
    return 1.0


def build_scheduler(cfg: dict, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """A per-iteration LambdaLR (so warm-up is smooth and resuming restores the exact position)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(cfg, step, steps_per_epoch))
