"""``train.resume``: read the checkpoint and its config, refuse changes that would train something else (the
optimizer type, data, model or loss keys), and restore the state so the run continues where it stopped
with the config's learning rates and schedule."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from reid_robust.config import Config, resume_changes
from reid_robust.engine import checkpoint as ckpt_io
from reid_robust.engine.builders import LossTerm
from reid_robust.engine.train_state import TrainState

log = logging.getLogger("reid_robust")


@dataclass(frozen=True)
class Resume:
    """A ``train.resume`` checkpoint, the config it was trained with and the log lines of the changed keys."""

    path: str
    checkpoint: dict[str, Any]
    config: Config
    changes: list[str]


def load_resume(cfg: Config, device: torch.device) -> Resume | None:
    """The ``train.resume`` checkpoint; a changed optimizer type or data/model/loss key is a ValueError naming
    them (nothing is kept silently). None when not resuming."""
    path = cfg.train.resume
    if not path:
        return None
    ckpt = ckpt_io.load_checkpoint(path, device)
    saved = ckpt_io.checkpoint_config(ckpt, path)
    changes = resume_changes(saved, cfg)
    for key, old, new in changes["refused"]:
        if key == "train.optimizer":
            raise ValueError(f"train.optimizer changed from {old} to {new}: cannot resume the {old} optimizer "
                             f"state of {path}; keep train.optimizer={old}, or start a new run in another "
                             "output_dir")
    if changes["refused"]:
        shown = ", ".join(f"{k} ({o!r} -> {n!r})" for k, o, n in changes["refused"])
        raise ValueError(f"train.resume={path}: cannot resume with changed {shown}: they change the data, model "
                         "or losses being trained; keep the checkpoint's values, or start a new run in another "
                         "output_dir")
    lines = [f"resuming with changed {k}: {o!r} -> {n!r} ({kind}{': output only' if kind == 'ignored' else ''})"
             for kind in ("applied", "ignored") for k, o, n in changes[kind]]
    return Resume(path, ckpt, saved, lines)


def restore(state: TrainState, resume: Resume, amp: bool) -> None:
    """Load the model, loss, optimiser, schedule, scaler and RNG states and the loop's position into ``state``."""
    ckpt = resume.checkpoint
    load_training_state(resume.path, ckpt, state.model, state.optimizer, state.terms)
    apply_configured_schedule(state.scheduler, ckpt["scheduler"])
    if resume.config.train.amp != amp:
        log.warning("train.amp was %s in the run of %s and is %s now: the gradient scaler starts afresh",
                    str(resume.config.train.amp).lower(), resume.path, str(amp).lower())
    if not load_scaler_state(state.scaler, ckpt.get("scaler")) and state.scaler.is_enabled():
        log.warning("%s holds no gradient-scaler state (trained without AMP or on another device): "
                    "starting from the default scale", resume.path)
    if ckpt.get("rng"):
        ckpt_io.set_rng_state(ckpt["rng"])
    state.epoch, state.iteration = ckpt["epoch"], ckpt.get("iteration", 0)
    state.history, state.best = ckpt.get("history", []), ckpt.get("best")
    state.untrained = ckpt.get("untrained")
    state.started -= float(ckpt.get("elapsed_s", 0.0))  # train_time_s spans every session
    log.info("resumed from %s at epoch %d (iteration %d)", resume.path, state.epoch, state.iteration)


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict | None) -> bool:
    """Load a resumed run's GradScaler state when there is one to load; returns whether it was loaded.

    A disabled scaler saves ``{}``, and ``load_state_dict({})`` on an enabled one raises, so a run
    resumed with ``train.amp`` switched on (or on CUDA after CPU) starts from the default scale instead;
    a disabled scaler ignores any state.
    """
    if not saved or not scaler.is_enabled():
        return False
    scaler.load_state_dict(saved)
    return True


def load_training_state(path: str, ckpt: dict[str, Any], model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        terms: list[LossTerm]) -> None:
    """Load the model, optimiser and loss-module states of a ``train.resume`` checkpoint.

    A checkpoint of another architecture (backbone, embedding_dim, loss terms) raises ValueError naming
    the checkpoint and ``train.resume`` instead of torch's raw multi-line RuntimeError.
    """
    def refuse(what: str, detail: str) -> ValueError:
        return ValueError(f"train.resume={path}: the checkpoint's {what} does not fit this config "
                          f"(another model.backbone, model.embedding_dim or loss.terms?): {detail}")

    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise refuse("model", ckpt_io.state_dict_mismatch(exc)) from exc
    saved_losses = ckpt.get("losses", [])
    if len(saved_losses) != len(terms):
        raise refuse("loss terms", f"{len(saved_losses)} saved, {len(terms)} configured")
    for term, sd in zip(terms, saved_losses):
        try:
            term.module.load_state_dict(sd)
        except RuntimeError as exc:
            raise refuse(f"loss term {term.name}", ckpt_io.state_dict_mismatch(exc)) from exc
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise refuse("optimizer state", ckpt_io.state_dict_mismatch(exc)) from exc
    for group, hyper in zip(optimizer.param_groups, configured):  # the config's lr, weight decay, momentum
        group.update(hyper)


def apply_configured_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, saved: dict[str, Any]) -> None:
    """Load the scheduler's position (``last_epoch``) but keep this config's base learning rates (the
    groups' ``initial_lr``) and schedule, and set each group's lr to it: a resumed run with a new
    ``train.lr`` or schedule uses them (the saved state would bring the old base rates back)."""
    scheduler.load_state_dict(saved)
    groups = scheduler.optimizer.param_groups
    scheduler.base_lrs = [g["initial_lr"] for g in groups]
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in groups]  # type: ignore[attr-defined]
