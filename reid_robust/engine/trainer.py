"""The training loop: ``train(cfg)`` reads top to bottom like a run does.

records -> noise -> PK sampler -> transforms -> model -> named outputs -> weighted loss terms -> step;
every ``eval.every`` epochs the model is evaluated with the dataset's protocol; checkpoints are atomic.
The pieces: ``train_state`` (what a checkpoint holds), ``resume``, ``steps`` (one epoch, one step),
``divergence`` (NaN never hides), ``interrupts`` (Ctrl-C, SIGTERM), ``loader``, ``logs``, ``run_dir``.
"""
from __future__ import annotations

import json
import logging
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from reid_robust.atomic import atomic_write_text
from reid_robust.config import PROTOCOL_METRICS, Config, save_config, with_absolute_paths
from reid_robust.data import build_transforms
from reid_robust.data.dataset import ImageDataset
from reid_robust.data.records import DatasetSplits
from reid_robust.data.summary import summarize
from reid_robust.engine import run_dir
from reid_robust.engine.builders import (
    build_dataset_from_config,
    build_loss_terms,
    build_model_from_config,
    build_optimizer,
    build_scheduler,
)
from reid_robust.engine.cleaning import cleaning_round, initial_cleaning, restart_due, restore_cleaning
from reid_robust.engine.distributed import (
    DistInfo,
    barrier,
    cleanup,
    init_distributed,
    replica_divergence,
    resolve_device,
)
from reid_robust.engine.divergence import kept
from reid_robust.engine.evaluate import check_cameras, evaluate_model
from reid_robust.engine.interrupts import CtrlC, sigterm_exits
from reid_robust.engine.loader import build_sampler, seed_everything, steps_per_epoch
from reid_robust.engine.logs import (
    TensorBoard,
    append_csv,
    epoch_line,
    json_default,
    setup_logging,
    truncate_csv,
)
from reid_robust.engine.noise import apply_label_noise, class_space
from reid_robust.engine.resume import Resume, load_resume, restore
from reid_robust.engine.steps import EpochMeter, cpu_mixed_precision, train_one_epoch
from reid_robust.engine.train_state import RunContext, TrainData, TrainState, make_scaler, save_checkpoint
from reid_robust.evaluation.report import metrics_table

__all__ = ["train", "seed_everything"]
log = logging.getLogger("reid_robust")


def train(cfg: Config) -> dict[str, Any]:
    """Train and evaluate as ``cfg`` says; returns the final metrics (also written to metrics.json)."""
    info = init_distributed(cfg.device)  # the configured device picks the backend (gloo for cpu)
    try:
        cfg = with_absolute_paths(cfg)  # the saved config (and every checkpoint's) finds the data from anywhere
        device = resolve_device(cfg.device, info)
        resume = load_resume(cfg, device)  # refused keys fail here, before the folder is touched
        lock, notices = run_dir.take(Path(cfg.output_dir), cfg.train.resume, cfg.train.overwrite, info)
        try:
            with sigterm_exits(), cpu_mixed_precision(device, cfg.train.amp):
                run = start_run(cfg, info, device, notices + (resume.changes if resume else []))
                return run_epochs(run, resume)
        finally:
            if lock is not None:
                lock.release()
    finally:
        cleanup(info)


def run_epochs(run: RunContext, resume: Resume | None) -> dict[str, Any]:
    """Set up, resume, then one ``train_one_epoch`` and ``end_of_epoch`` per epoch, then ``finish``."""
    data = setup_data(run)
    state = setup_state(run, data)
    if resume is not None:
        restore(state, resume, run.cfg.train.amp)
        restore_cleaning(state, run, resume.checkpoint.get("cleaning"), resume.path)
        if run.info.is_main:  # epochs after the checkpoint are trained again: their rows go
            truncate_csv(run.csv_path, state.epoch)
    evaluate_untrained(state, run, data, resuming=resume is not None)
    state.net = wrap_ddp(state.model, run)
    ctrl_c = CtrlC(lambda: f"interrupted again: stopped without saving; {kept(run.last_path)}")
    board = TensorBoard(run.out, run.cfg.train.tensorboard and run.info.is_main)
    with ctrl_c.installed(), closing(board):
        while state.epoch < run.cfg.train.total_epochs:
            meter = train_one_epoch(state, run, data, ctrl_c)
            if meter.interrupted:
                save_and_stop(state, run)
            state.epoch, state.iteration = state.epoch + 1, 0
            check_replicas(state, run)
            end_of_epoch(state, run, data, meter, board)
    return finish(state, run, data)


def start_run(cfg: Config, info: DistInfo, device: torch.device, notices: list[str]) -> RunContext:
    """Write ``config.yaml``, open the logs (notices first), set threads and the seed."""
    out = Path(cfg.output_dir)
    if info.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    barrier(info)
    setup_logging(out, info.is_main)
    for line in notices:
        log.warning("%s", line)
    if cfg.train.num_threads:
        torch.set_num_threads(cfg.train.num_threads)
    seed_everything(cfg.seed)
    return RunContext(cfg, info, device, out, started=time.time())


def setup_data(run: RunContext) -> TrainData:
    """The splits (rank 0 generates synthetic trees; the others wait, then read them), the label noise and
    the classes the losses train on, the training dataset and the test transform."""
    d, info = run.cfg.data, run.info
    if info.is_main:
        splits = build_dataset_from_config(d)
    barrier(info)
    if not info.is_main:
        splits = build_dataset_from_config(d)
    log.info("dataset %s at %s\n%s", d.dataset, d.root, summarize(splits))
    best_metric(run.cfg, splits)  # a metric the protocol does not report fails now, not after the first epoch
    check_cameras(run.cfg.eval, splits)  # so does a Market split without cameras under eval.camera_filter=true
    clean = np.array([r.pid for r in splits.train], dtype=np.int64)
    noisy = apply_label_noise(d.noise, splits.train, clean, run.out if info.is_main else None)
    labels, num_classes = class_space(d.noise, noisy, splits.num_train_classes)
    train_set = ImageDataset(splits.train, build_transforms(d.transforms, train=True), labels=labels,
                             cache_images=d.cache_images)
    return TrainData(splits, clean, noisy, labels, num_classes, train_set,
                     build_transforms(d.transforms, train=False))


def setup_state(run: RunContext, data: TrainData) -> TrainState:
    """Model, loss terms, optimiser, per-step schedule, gradient scaler and PK sampler."""
    cfg = run.cfg
    spe = steps_per_epoch(cfg.data.sampler, len(data.labels))
    model, terms, optimizer, scheduler, scaler = build_trainables(run, data, spe)
    cleaning = initial_cleaning(cfg.train.cleaning, data)
    return TrainState(model=model, terms=terms, optimizer=optimizer, scheduler=scheduler, scaler=scaler,
                      sampler=build_sampler(data.labels, cfg.data.sampler, cfg.seed, spe, run.info,
                                            keep=None if cleaning is None else cleaning.keep),
                      steps_per_epoch=spe, total_steps=spe * cfg.train.epochs, started=run.started, cleaning=cleaning)


def build_trainables(run: RunContext, data: TrainData, spe: int) -> tuple[torch.nn.Module, list, torch.optim.Optimizer,
                                                                          torch.optim.lr_scheduler.LambdaLR,
                                                                          torch.amp.GradScaler]:
    """What trains, at initialisation: the model, the loss terms, their optimiser, its schedule and the scaler."""
    cfg = run.cfg
    model = build_model_from_config(cfg.model).to(run.device)
    terms = build_loss_terms(cfg.loss.terms, data.num_classes, model.out_dim)
    for term in terms:
        term.module.to(run.device)
    optimizer = build_optimizer(cfg.train, model, [t.module for t in terms])
    return model, terms, optimizer, build_scheduler(cfg.train, optimizer, spe), make_scaler(run.device, cfg.train.amp)


def restart_training(state: TrainState, run: RunContext, data: TrainData) -> None:
    """``train.cleaning.restart_epochs``: the model, loss terms, optimiser, schedule and scaler start again from
    the seed's initialisation (every rank alike); the cleaning decision, the epoch count and the logs go on."""
    seed_everything(run.cfg.seed)
    model, terms, optimizer, scheduler, scaler = build_trainables(run, data, state.steps_per_epoch)
    state.model, state.terms, state.optimizer, state.scheduler, state.scaler = model, terms, optimizer, scheduler, scaler
    state.net, state.best, state.final, state.skipped = wrap_ddp(model, run), None, None, 0
    assert state.cleaning is not None  # a restart follows a round (checked when the config loads)
    log.info("train.cleaning.restart_epochs: after epoch %d training starts again from initialisation on the "
             "cleaned set (%d of %d images kept)", state.epoch, int(state.cleaning.keep.sum()), len(data.labels))


def wrap_ddp(model: torch.nn.Module, run: RunContext) -> torch.nn.Module:
    """The model as the step calls it: DistributedDataParallel under DDP (gradients averaged over ranks)."""
    if not run.info.enabled:
        return model
    ids = [run.info.local_rank] if run.device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def evaluate(state: TrainState, run: RunContext, data: TrainData) -> dict[str, Any]:
    """Every rank embeds its share of the test images; rank 0 evaluates; every rank gets the metrics."""
    return evaluate_model(state.model, data.splits, run.cfg.eval, run.cfg.data, data.test_transform, run.device,
                          progress=None if run.cfg.train.progress else False, info=run.info)


def evaluate_untrained(state: TrainState, run: RunContext, data: TrainData, resuming: bool) -> None:
    """``eval.untrained``: the network at initialisation, on the same test split (a fresh run)."""
    if run.cfg.eval.untrained and state.epoch == 0 and not resuming:
        state.untrained = evaluate(state, run, data)
        log.info("untrained network (same initialisation, same test split):\n%s",
                 metrics_table({"untrained": state.untrained}))
    barrier(run.info)


def save_and_stop(state: TrainState, run: RunContext) -> None:
    """After Ctrl-C: rank 0 saves ``last.pth`` at this step, every rank stops (KeyboardInterrupt)."""
    if run.info.is_main:
        save_checkpoint(state, run, run.last_path)
        log.warning("saved %s (epoch %d, iteration %d); resume with train.resume=%s", run.last_path,
                    state.epoch + 1, state.iteration, run.last_path)
    barrier(run.info)  # the other ranks exit only once rank 0's checkpoint is written
    raise KeyboardInterrupt


def check_replicas(state: TrainState, run: RunContext) -> None:
    """Under DDP, every rank must hold rank 0's parameters after an epoch (model and loss class weights)."""
    if not run.info.enabled:
        return
    drift = replica_divergence(state.modules(), run.info)
    log.info("epoch %d: parameters of the %d replicas differ by at most %.3g", state.epoch, run.info.world_size,
             drift)
    if drift > 1e-5:
        raise RuntimeError(f"DDP replicas diverged by {drift:.3g} after epoch {state.epoch}: a parameter was "
                           "updated on some ranks only (a loss parameter without a gradient?)")


def end_of_epoch(state: TrainState, run: RunContext, data: TrainData, meter: EpochMeter, board: TensorBoard) -> None:
    """A cleaning round when due (``train.cleaning``); evaluate when due (``best.pth`` on a new best); the
    cleaning restart when due; log the epoch's row; write ``last.pth`` when due."""
    cleaning_round(state, run, data)
    cfg, epoch, last = run.cfg, state.epoch, run.cfg.train.total_epochs
    row = {"epoch": epoch, "lr": state.optimizer.param_groups[0]["lr"], "images_per_s": meter.images_per_s(),
           **meter.means()}
    if (cfg.eval.every and epoch % cfg.eval.every == 0) or epoch == last:
        row.update(evaluate_and_keep_best(state, run, data))  # every rank (a share of the images each)
    state.history.append(row)
    if restart_due(cfg.train.cleaning, epoch):  # after the round and the evaluation of the model it replaces
        restart_training(state, run, data)
    if run.info.is_main:
        append_csv(run.csv_path, row)
        board.log(row, epoch)
        log.info("epoch %d/%d  %s", epoch, last, epoch_line(row))
        if epoch == last or epoch % cfg.train.checkpoint_every == 0:
            save_checkpoint(state, run, run.last_path)


def evaluate_and_keep_best(state: TrainState, run: RunContext, data: TrainData) -> dict[str, float]:
    """Evaluate; a new best (``train.best_metric``) is saved as ``best.pth``. Returns the numeric metrics."""
    metrics = evaluate(state, run, data)
    key = best_metric(run.cfg, data.splits)
    best = state.best
    if best is None or best["metric"] != key or metrics[key] > best["value"]:
        state.best = {"metric": key, "value": metrics[key], "epoch": state.epoch}
        if run.info.is_main:
            save_checkpoint(state, run, run.best_path)
    log.info("epoch %d evaluation:\n%s", state.epoch, metrics_table({f"epoch {state.epoch}": metrics}))
    state.final = metrics
    return {k: v for k, v in metrics.items() if isinstance(v, float)}


def best_metric(cfg: Config, splits: DatasetSplits) -> str:
    """The metric that selects best.pth; refused before training when the dataset's protocol lacks it."""
    key = cfg.train.best_metric
    if splits.protocol == "cub" and key == "mAP":
        return "map_at_r"
    reported = PROTOCOL_METRICS[splits.protocol]
    if key not in reported:
        raise ValueError(f"train.best_metric={key} is not reported by the {splits.protocol} protocol of "
                         f"dataset {cfg.data.dataset}; choose one of {', '.join(reported)}")
    return key


def finish(state: TrainState, run: RunContext, data: TrainData) -> dict[str, Any]:
    """``metrics.json``: the final metrics, the untrained ones, the best epoch, time and the realised noise."""
    if state.final is None:  # resumed after the last epoch, or zero epochs (every rank: see evaluate)
        state.final = evaluate(state, run, data)
    summary: dict[str, Any] = {}
    if run.info.is_main:
        assert state.final is not None
        noise = run.cfg.data.noise
        realised = float(np.mean(data.noisy != data.clean)) if len(data.clean) else 0.0
        summary = {**state.final, "untrained": state.untrained, "best": state.best, "epochs": run.cfg.train.total_epochs,
                   "train_time_s": round(time.time() - state.started, 1),
                   "noise": {"rate": noise.rate, "mode": noise.mode, "realised_rate": realised}}
        atomic_write_text(run.out / "metrics.json", json.dumps(summary, indent=2, default=json_default))
        rows = {"trained (final)": state.final}
        if state.untrained:
            rows = {"untrained": state.untrained, **rows}
        log.info("results on the test split (%s protocol):\n%s", data.splits.protocol, metrics_table(rows))
        log.info("wrote %s, %s and %s", run.out / "metrics.json", run.out / "config.yaml", run.out / "checkpoints")
    barrier(run.info)
    return summary
