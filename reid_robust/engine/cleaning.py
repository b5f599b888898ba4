"""``train.cleaning``: the self-cleaning round of the training loop (issue 15).

After epoch ``start_epoch`` and every ``every`` epochs after it (the last included: its row reports the final
state, and a run resumed with more epochs decides exactly as an uninterrupted one), rank 0 embeds the training images
(the test transform, no augmentation, through the one extractor), scores them with the label audit's scorer,
estimates the rate and decides (``reid_robust.cleaning.decisions``); the per-image keep mask, labels and
weights are broadcast so every rank applies rank 0's decision, and the PK sampler is rebuilt from them. The
noise manifest is read afterwards, on rank 0, for ``cleaning.csv`` only. The state lives in the checkpoint.
With ``restart_epochs`` the trainer starts the model again after each listed epoch's round; between restarts
the decision stays fixed (one round decides again at the next restart epoch), after the last one for good.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import logging

import numpy as np
import torch

from reid_robust.atomic import atomic_write_text
from reid_robust.cleaning.decisions import CleaningState, Decision, decide
from reid_robust.cleaning.report import read_manifest, round_metrics
from reid_robust.config.sections import ROUND_ACTIONS, CleaningConfig
from reid_robust.engine.distributed import DistInfo
from reid_robust.engine.inference import extract_outputs
from reid_robust.engine.loader import build_sampler
from reid_robust.engine.train_state import RunContext, TrainData, TrainState

log = logging.getLogger("reid_robust")
CLEANING_COLUMNS = ("round", "epoch", "estimated_rate", "rate", "separation", "images_flagged", "images_dropped",
                    "images_relabelled", "identities_resampled", "identities_removed", "mean_weight", "precision",
                    "recall", "labels_correct")


def round_due(cleaning: CleaningConfig, epoch: int) -> bool:
    """Whether a round follows epoch ``epoch`` (1-based, just completed): on the ``start_epoch``/``every``
    grid up to the first restart, then once at each later restart epoch; none after the last restart."""
    if cleaning.action not in ROUND_ACTIONS or epoch < cleaning.start_epoch:
        return False
    restarts = cleaning.restart_epochs
    if restarts and epoch > restarts[0]:
        return epoch in restarts
    return (epoch - cleaning.start_epoch) % cleaning.every == 0 or epoch in restarts


def round_settings(cleaning: CleaningConfig, epoch: int) -> CleaningConfig:
    """The settings of the round after ``epoch``: after the first restart, ``restart_rate_scale`` when set."""
    if cleaning.restart_rate_scale is None or phase_start(cleaning, epoch - 1) == 0:  # the model that ran epoch
        return cleaning
    return dataclasses.replace(cleaning, rate_scale=cleaning.restart_rate_scale)


def restart_due(cleaning: CleaningConfig, epoch: int) -> bool:
    """Whether training starts again after epoch ``epoch`` (one of ``restart_epochs``, after its round)."""
    return epoch in cleaning.restart_epochs


def phase_start(cleaning: CleaningConfig, epoch: int) -> int:
    """The epoch the current model began training after: the last restart epoch at or before ``epoch``, else 0.
    Schedules that depend on training progress (ProSelfLC's ``set_progress``) count from it."""
    return max((r for r in cleaning.restart_epochs if r <= epoch), default=0)


def cleaning_round(state: TrainState, run: RunContext, data: TrainData) -> None:
    """One round after epoch ``state.epoch`` when due: decide on rank 0, share, apply, report (rank 0)."""
    cfg = run.cfg
    if state.cleaning is None or not round_due(cfg.train.cleaning, state.epoch):
        return
    decision = None
    if run.info.is_main:
        outputs = extract_outputs(state.model, data.splits.train, data.test_transform,
                                  batch_size=cfg.data.test_batch_size, device=run.device, outputs=None,
                                  num_workers=cfg.data.num_workers, progress=False, amp=cfg.train.amp)
        decision = decide(outputs, state.cleaning, state.terms, round_settings(cfg.train.cleaning, state.epoch),
                          cfg.data.sampler, cfg.seed)
        state.cleaning.keep, state.cleaning.labels = decision.keep, decision.labels
        state.cleaning.weights = decision.weights
    broadcast_state(state.cleaning, run.info, run.device)
    state.cleaning.round += 1
    apply_to_sampler(state, run)
    if decision is not None:
        row = report_row(state, run, data, decision)
        state.cleaning.rows.append(row)
        write_cleaning_csv(run, state.cleaning.rows)
        log.info("cleaning round %d after epoch %d: %s", row["round"], row["epoch"],
                 ", ".join(f"{k} {v}" for k, v in row.items() if k not in ("round", "epoch") and v != ""))


def apply_to_sampler(state: TrainState, run: RunContext) -> None:
    """The PK sampler over the current labels and kept images (same seed and batches per epoch)."""
    assert state.cleaning is not None
    state.sampler = build_sampler(state.cleaning.labels, run.cfg.data.sampler, run.cfg.seed, state.steps_per_epoch,
                                  run.info, keep=state.cleaning.keep)


def broadcast_state(cleaning: CleaningState, info: DistInfo, device: torch.device) -> None:
    """Under DDP, every rank takes rank 0's keep mask, labels and weights (in place): one decision."""
    if not info.enabled:
        return
    tensors = [torch.from_numpy(cleaning.keep.astype(np.uint8)).to(device),
               torch.from_numpy(cleaning.labels).to(device), torch.from_numpy(cleaning.weights).to(device)]
    for tensor in tensors:
        torch.distributed.broadcast(tensor, src=0)
    keep, labels, weights = (t.cpu().numpy() for t in tensors)
    cleaning.keep, cleaning.labels, cleaning.weights = keep.astype(bool), labels.astype(np.int64), weights


def report_row(state: TrainState, run: RunContext, data: TrainData, decision: Decision) -> dict[str, object]:
    """The round's ``cleaning.csv`` row; precision, recall and labels_correct when a noise manifest exists."""
    assert state.cleaning is not None
    row: dict[str, object] = {"round": state.cleaning.round, "epoch": state.epoch,
                              "estimated_rate": round(decision.estimated_rate, 6), "rate": round(decision.rate, 6),
                              "separation": round(decision.separation, 4), **decision.counts,
                              "mean_weight": round(float(decision.weights.mean()), 6)}
    path = run.out / "noise_manifest.csv"
    manifest = read_manifest(path, data.splits.train) if path.is_file() else None
    if manifest is not None:
        found = round_metrics(decision.flagged, decision.keep, decision.labels, manifest, data.labels)
        row.update({k: "" if v is None else round(v, 6) for k, v in found.items()})
    return {k: row.get(k, "") for k in CLEANING_COLUMNS}


def write_cleaning_csv(run: RunContext, rows: list[dict]) -> None:
    """``<output_dir>/cleaning.csv``: one row per round so far (rewritten atomically, so a resumed run's file
    holds exactly the rounds of its checkpoint and those after)."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CLEANING_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run.out / "cleaning.csv", text.getvalue())


def initial_cleaning(cleaning: CleaningConfig, data: TrainData) -> CleaningState | None:
    """The state before any round: None when off; every image kept under its training label, except under
    ``oracle`` (a benchmark's upper bound, not a method), which leaves out the images whose injected label is
    wrong (``noisy != clean``: the noise manifest's ``is_noisy``), the only place the truth decides anything."""
    if cleaning.action == "off":
        return None
    state = CleaningState.initial(data.labels)
    if cleaning.action == "oracle":
        state.keep = np.asarray(data.noisy == data.clean, dtype=bool)
        log.info("train.cleaning.action=oracle: %d of %d training images with a wrong injected label left out "
                 "(an upper bound for benchmarks: it reads the truth)", int((~state.keep).sum()), len(state.keep))
    return state


def restore_cleaning(state: TrainState, run: RunContext, saved: dict | None, where: str) -> None:
    """A resumed run's cleaning state from its checkpoint (rank 0 rewrites cleaning.csv from it)."""
    if state.cleaning is None or saved is None:
        return
    state.cleaning = CleaningState.from_plain(saved, len(state.cleaning.labels), where)
    apply_to_sampler(state, run)
    if run.info.is_main and state.cleaning.rows:
        write_cleaning_csv(run, state.cleaning.rows)
