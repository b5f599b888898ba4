"""One epoch and one optimisation step: images -> model (autocast) -> named outputs -> weighted loss terms
-> backward (DDP: loss-parameter gradients averaged too) -> clipping -> divergence checks -> step."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from reid_robust.engine.builders import LossTerm
from reid_robust.engine.cleaning import phase_start
from reid_robust.engine.distributed import DistInfo, any_rank, gather_with_grad, gathered_loss_factor
from reid_robust.engine.divergence import check_gradients, diverged, kept, nonfinite_loss
from reid_robust.engine.interrupts import CtrlC
from reid_robust.engine.loader import batches, epoch_loader
from reid_robust.engine.logs import progress_bar
from reid_robust.engine.train_state import RunContext, TrainData, TrainState

WEIGHT_STATS_EVERY = 10  # steps between reads of the losses' sample weights (some compute them lazily)


@dataclass
class EpochMeter:
    """Running sums of the step values (losses, weight statistics) and the throughput of one epoch."""

    world_size: int
    started: float = field(default_factory=time.time)
    sums: dict[str, float] = field(default_factory=dict)
    steps: int = 0
    images: int = 0
    interrupted: bool = False

    def add(self, parts: dict[str, float], images: int) -> None:
        self.steps += 1
        self.images += images
        for k, v in parts.items():
            self.sums[k] = self.sums.get(k, 0.0) + v

    def images_per_s(self) -> float:
        return self.images * self.world_size / max(time.time() - self.started, 1e-9)

    def means(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.sums.items()}


def train_one_epoch(state: TrainState, run: RunContext, data: TrainData, ctrl_c: CtrlC) -> EpochMeter:
    """Train epoch ``state.epoch`` from step ``state.iteration``; stops early (``interrupted``) after the step
    during which Ctrl-C arrived on any rank, with the loader's workers stopped."""
    cfg, info = run.cfg, run.info
    # after a cleaning restart the epochs count from it: the restarted phase draws the batches and augmentations
    # of a fresh run on the cleaned set (and equals it when nothing was dropped)
    phase_epoch = state.epoch - phase_start(cfg.train.cleaning, state.epoch)
    loader = epoch_loader(data.train_set, state.sampler, cfg.seed, phase_epoch, state.iteration, info,
                          cfg.data.num_workers, pin_memory=run.device.type == "cuda")
    state.train_mode()
    meter, skip = EpochMeter(info.world_size), state.iteration
    stream = batches(loader)
    bar = progress_bar(stream, f"epoch {state.epoch + 1}/{cfg.train.total_epochs}", cfg.train.progress and info.is_main,
                       skip, state.steps_per_epoch)
    weight_stats: dict[str, float] = {}
    for it, batch in enumerate(bar, start=skip):
        parts = train_step(state, run, batch, it)
        if (it - skip) % WEIGHT_STATS_EVERY == 0:
            weight_stats = sample_weight_stats(state.terms)
        parts.update(weight_stats)
        meter.add(parts, batch["image"].shape[0])
        state.iteration = it + 1
        if hasattr(bar, "set_postfix"):
            bar.set_postfix({**{k: f"{v:.3f}" for k, v in parts.items()}, "img/s": f"{meter.images_per_s():.1f}"})
        # the flag is per process: under DDP the ranks agree (one all-reduce) so that they all stop after this
        # same step, and none waits alone in the next step's collectives
        if any_rank(ctrl_c.requested, info, run.device):
            stream.close()  # the loader's workers stop before the checkpoint is written
            meter.interrupted = True
            break
    return meter


def train_step(state: TrainState, run: RunContext, batch: dict[str, Any], it: int) -> dict[str, float]:
    """One optimisation step on ``batch``; returns each loss term's value and the total (``loss``)."""
    t, info, device = run.cfg.train, run.info, run.device
    images = batch["image"].to(device, non_blocking=True)
    targets, weights = batch_targets(state, batch, device)
    assert state.net is not None
    with autocast(device, t.amp):
        outputs = state.net(images)
    step = (state.epoch - phase_start(t.cleaning, state.epoch)) * state.steps_per_epoch + it  # since the (re)start
    loss, parts = weighted_loss(state.terms, outputs, targets, step, state.total_steps, info, t.gather_embeddings,
                                weights)
    if any_rank(not math.isfinite(float(loss.detach())), info, device):
        raise FloatingPointError(diverged(state.epoch, it, nonfinite_loss(parts, outputs, info), kept(run.last_path)))
    state.optimizer.zero_grad(set_to_none=True)
    # with gathered embeddings every rank computes the loss of the global batch, and rank r's model gradient is
    # that loss's gradient through its own images only: DDP's mean over ranks would be 1/world of the
    # single-process gradient, hence the factor (undone for loss parameters)
    factor = gathered_loss_factor(info, t.gather_embeddings)
    state.scaler.scale(loss * factor).backward()
    average_loss_gradients(state.terms, info, factor)  # DDP syncs the model; loss parameters here
    norm = clip_gradients(state.optimizer, state.scaler, t.grad_clip)
    state.skipped = check_gradients(state.optimizer, state.scaler, norm, state.skipped, state.epoch, it,
                                    kept(run.last_path))
    state.scaler.step(state.optimizer)
    state.scaler.update()
    state.scheduler.step()
    parts["loss"] = float(loss.detach())
    return parts


def batch_targets(state: TrainState, batch: dict[str, Any],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The batch's labels and per-image loss weights: the dataset's labels, or with ``train.cleaning`` the
    rounds' current labels and (``weight``, after a round) weights, looked up by dataset index."""
    cleaning = state.cleaning
    if cleaning is None:
        return batch["label"].to(device, non_blocking=True), None
    index = batch["index"].numpy()
    targets = torch.from_numpy(cleaning.labels[index]).to(device, non_blocking=True)
    if cleaning.round == 0 or not (cleaning.weights != 1).any():
        return targets, None
    return targets, torch.from_numpy(cleaning.weights[index]).to(device, non_blocking=True)


def weighted_loss(terms: Sequence[LossTerm], outputs: dict[str, torch.Tensor], targets: torch.Tensor, step: int,
                  total_steps: int, info: DistInfo, gather: bool,
                  sample_weight: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """``sum_i weight_i * loss_i(outputs[input_i], targets)`` in float32, and each term's value. Each term is
    told the training progress first (``set_progress``: ProSelfLC's trust, PRISM's warm-up); with ``gather``
    the terms see the embeddings of every rank. ``sample_weight`` [n]: per-image weights for every term."""
    all_targets = gather_with_grad(targets, info) if gather else targets
    if sample_weight is not None and gather:
        sample_weight = gather_with_grad(sample_weight, info)
    loss = torch.zeros((), device=targets.device)
    parts = {}
    for term in terms:
        x = outputs[term.input].float()
        if gather:
            x = gather_with_grad(x, info)
        term.module.set_progress(step, total_steps)
        value = term.module(x, all_targets) if sample_weight is None else term.module(x, all_targets,
                                                                                       sample_weight=sample_weight)
        parts[term.name] = float(value.detach())
        loss = loss + term.weight * value
    return loss, parts


def autocast(device: torch.device, enabled: bool) -> AbstractContextManager:
    """Mixed precision: float16 on CUDA, bfloat16 on CPU; nothing when off."""
    if not enabled:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


def cpu_mixed_precision(device: torch.device, amp: bool) -> AbstractContextManager:
    """bfloat16 training on the CPU runs with oneDNN off (forward and backward).

    With torch 2.14.1 on an AVX-512 Xeon, oneDNN's bfloat16 convolutions returned NaN for a ResNet-18 forward
    and different values for the same input on every call (even on one thread), while the native kernels
    are deterministic and finite: `tests/test_engine_train.py::test_cpu_bf16_convolutions_are_deterministic`.
    """
    if amp and device.type == "cpu":
        return torch.backends.mkldnn.flags(enabled=False)
    return nullcontext()


def sample_weight_stats(terms: Sequence[LossTerm]) -> dict[str, float]:
    """Per weighting term: ``<name>_w_mean``, the mean raw weight (e.g. OSM+CAA's mean attention), and
    ``<name>_w_std``, the spread of the weights rescaled to mean 1."""
    stats = {}
    for term in terms:
        w, mean = getattr(term.module, "last_sample_weights", None), term.module.last_raw_weight_mean
        if w is not None and w.numel() > 0 and mean is not None:
            stats[f"{term.name}_w_mean"] = float(mean)
            stats[f"{term.name}_w_std"] = float(w.float().std(unbiased=False))
    return stats


def clip_gradients(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   max_norm: float) -> torch.Tensor | None:
    """``train.grad_clip``: rescale the gradients of every parameter the optimiser updates (model and loss
    parameters, one global norm) to a norm of at most ``max_norm``, after undoing AMP's loss scale.

    Returns the total norm before clipping (a tensor), or None when ``max_norm`` is 0 (off).
    """
    if max_norm <= 0:
        return None
    scaler.unscale_(optimizer)  # scaler.step then knows the gradients are unscaled already
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def average_loss_gradients(terms: Sequence[Any], info: DistInfo, loss_factor: float = 1.0) -> None:
    """Average the gradients of loss parameters (class weights) over ranks so every rank keeps the same ones.

    A parameter that received a gradient on some ranks only (a class absent from their batches, say) is
    averaged with zeros from the others, so that every rank takes the same optimiser step. ``loss_factor``:
    the factor the loss was multiplied by before backward (``gathered_loss_factor``), divided out here.
    """
    if not info.enabled:
        return
    params = [p for term in terms for p in term.module.parameters() if p.requires_grad]
    if not params:
        return
    has_grad = torch.tensor([float(p.grad is not None) for p in params], device=params[0].device)
    torch.distributed.all_reduce(has_grad)
    for p, count in zip(params, has_grad.tolist()):
        if count == 0:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        torch.distributed.all_reduce(p.grad)
        p.grad /= info.world_size * loss_factor
