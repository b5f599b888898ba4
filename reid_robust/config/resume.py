"""Resuming with a changed config: which keys take effect, which only shape outputs, which are refused.

``train.resume`` with a key changed from the checkpoint's config: "applied" keys take effect (the trainer
lists them in the log), "ignored" keys only shape outputs, every other key (data, model, loss, seed,
optimizer) is refused, because the checkpoint's weights and optimiser state belong to the old value.
"""
from __future__ import annotations

from typing import Any

from reid_robust.config.loader import flatten
from reid_robust.config.sections import Config

RESUME_APPLIED = ("train.epochs", "train.lr", "train.loss_lr", "train.weight_decay", "train.momentum",
                  "train.scheduler", "train.milestones", "train.gamma", "train.warmup_epochs", "train.warmup_factor",
                  "train.grad_clip", "train.amp", "train.checkpoint_every", "train.best_metric",
                  "train.gather_embeddings", "device", "data.root", "eval.")
RESUME_IGNORED = ("output_dir", "train.resume", "train.overwrite", "train.progress", "train.num_threads",
                  "train.tensorboard", "data.num_workers", "data.cache_images", "data.test_batch_size",
                  "model.pretrained", "sweep.")

Change = tuple[str, Any, Any]  # (dotted key, checkpoint's value, new value)


def resume_kind(key: str) -> str:
    """``applied``, ``ignored`` or ``refused`` for a dotted key changed on resuming."""
    if key.startswith(RESUME_APPLIED):
        return "applied"
    return "ignored" if key.startswith(RESUME_IGNORED) else "refused"


def resume_changes(saved: Config, cfg: Config) -> dict[str, list[Change]]:
    """Keys whose value in ``cfg`` differs from the checkpoint's config ``saved`` (reloaded through
    ``config_from_mapping``, so a key the checkpoint lacks has its default), as
    ``{"applied": [...], "ignored": [...], "refused": [...]}`` of (key, old, new)."""
    old, new = flatten(saved.to_dict()), flatten(cfg.to_dict())
    out: dict[str, list[Change]] = {"applied": [], "ignored": [], "refused": []}
    for key in sorted(new):
        if old.get(key) != new[key]:
            out[resume_kind(key)].append((key, old.get(key), new[key]))
    return out
