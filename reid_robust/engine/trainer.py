"""The training loop: one function, ``train(cfg)``, that reads top to bottom like an epoch does.

records -> noise -> PK sampler -> transforms -> model -> named outputs -> weighted loss terms -> step;
every ``eval.every`` epochs the model is evaluated with the dataset's protocol; checkpoints are atomic.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from reid_robust.data.dataset import ImageDataset
from reid_robust.data.samplers import DistributedPKSampler, PKSampler
from reid_robust.data.summary import summarize
from reid_robust.engine import checkpoint as ckpt_io
from reid_robust.engine.builders import (
    build_dataset_from_config,
    build_loss_terms,
    build_model_from_config,
    build_optimizer,
    build_scheduler,
    build_test_transform,
    build_train_transform,
)
from reid_robust.engine.config import PROTOCOL_METRICS, save_config, with_absolute_paths
from reid_robust.engine.distributed import (
    DistInfo,
    any_rank,
    barrier,
    cleanup,
    gather_with_grad,
    gathered_loss_factor,
    init_distributed,
    replica_divergence,
    requested_device,
)
from reid_robust.engine.evaluate import evaluate_model, metrics_table
from reid_robust.engine.noise import apply_label_noise, class_space

log = logging.getLogger("reid_robust")


def setup_logging(output_dir: Path | None, is_main: bool) -> None:
    """Readable logs: console and ``<output_dir>/train.log`` on rank 0, warnings only elsewhere."""
    log.setLevel(logging.INFO if is_main else logging.WARNING)
    log.propagate = False
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S")
    console = logging.StreamHandler(sys.stdout)
    console.setFormatter(fmt)
    log.addHandler(console)
    if is_main and output_dir is not None:
        fh = logging.FileHandler(output_dir / "train.log", encoding="utf-8")
        fh.setFormatter(fmt)
        log.addHandler(fh)


def resolve_device(name: str, info: DistInfo) -> torch.device:
    """The training device; under DDP on CUDA, this rank's GPU."""
    device = requested_device(name)
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The RNG seed of one epoch on one rank: a resumed run re-derives exactly the same streams."""
    return (seed * 1_000_003 + epoch * 1009 + rank) % 2**31


def _worker_init(worker_id: int) -> None:
    """Seed a DataLoader worker and make it ignore SIGINT: a terminal's Ctrl-C reaches every process of the
    group, and only the main process handles it (it finishes the step, saves and stops the workers); a
    worker would otherwise run the trainer's handler it inherited and report the interrupt once more."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def _autocast(device: torch.device, enabled: bool):
    if not enabled:
        return nullcontext()
    dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    return torch.autocast(device_type=device.type, dtype=dtype)


WEIGHT_STATS_EVERY = 10  # steps between reads of the losses' sample weights (some compute them lazily)


def _weight_stats(terms) -> dict[str, float]:
    """Per weighting term: ``<name>_w_mean``, the mean raw weight (e.g. OSM+CAA's mean attention), and
    ``<name>_w_std``, the spread of the weights rescaled to mean 1."""
    stats = {}
    for term in terms:
        w = getattr(term.module, "last_sample_weights", None)
        if w is not None and w.numel() > 0:
            stats[f"{term.name}_w_mean"] = term.module.last_raw_weight_mean
            stats[f"{term.name}_w_std"] = float(w.float().std(unbiased=False))
    return stats


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate as ``cfg`` says; returns the final metrics (also written to metrics.json)."""
    info = init_distributed(cfg["device"])  # the configured device picks the backend (gloo for cpu)
    try:
        return _train(cfg, info)
    finally:
        cleanup(info)


def _train(cfg: dict[str, Any], info: DistInfo) -> dict[str, Any]:
    cfg = with_absolute_paths(cfg)  # the saved config (and every checkpoint's) finds the data from anywhere
    t_cfg, e_cfg, d_cfg = cfg["train"], cfg["eval"], cfg["data"]
    out = Path(cfg["output_dir"])
    if info.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    barrier(info)
    setup_logging(out, info.is_main)
    if t_cfg["num_threads"]:
        torch.set_num_threads(t_cfg["num_threads"])
    device = resolve_device(cfg["device"], info)
    seed_everything(cfg["seed"])
    started = time.time()

    # data and noise (rank 0 generates synthetic trees; the others wait, then read them)
    if info.is_main:
        splits = build_dataset_from_config(cfg)
    barrier(info)
    if not info.is_main:
        splits = build_dataset_from_config(cfg)
    log.info("dataset %s at %s\n%s", d_cfg["dataset"], d_cfg["root"], summarize(splits))
    _best_key(cfg, splits)  # a metric the protocol does not report fails now, not after the first epoch
    clean = np.array([r.pid for r in splits.train], dtype=np.int64)
    noisy = apply_label_noise(cfg, splits.train, clean, out if info.is_main else None)
    labels, num_classes = class_space(cfg, noisy, splits.num_train_classes)

    # model, losses, optimisation
    model = build_model_from_config(cfg).to(device)
    terms = build_loss_terms(cfg, num_classes, model.out_dim)
    for term in terms:
        term.module.to(device)
    test_tf = build_test_transform(cfg)
    s_cfg = d_cfg["sampler"]
    batch = s_cfg["num_identities"] * s_cfg["num_instances"]
    steps_per_epoch = s_cfg["batches_per_epoch"] or max(1, len(labels) // batch)
    optimizer = build_optimizer(cfg, model, [t.module for t in terms])
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch)
    scaler = _make_scaler(device, t_cfg["amp"])
    sampler: PKSampler
    if info.enabled:
        sampler = DistributedPKSampler(labels, s_cfg["num_identities"], s_cfg["num_instances"], seed=cfg["seed"],
                                       num_batches=steps_per_epoch, rank=info.rank, world_size=info.world_size,
                                       augment_seeds=True)
    else:
        sampler = PKSampler(labels, s_cfg["num_identities"], s_cfg["num_instances"], seed=cfg["seed"],
                            num_batches=steps_per_epoch, augment_seeds=True)
    total_steps = steps_per_epoch * t_cfg["epochs"]

    start_epoch, skip_iters, history, best = 0, 0, [], None
    results: dict[str, Any] = {}
    if t_cfg["resume"]:
        state = ckpt_io.load_checkpoint(t_cfg["resume"], device)
        _load_resumable_state(t_cfg["resume"], state, model, optimizer, terms)
        scheduler.load_state_dict(state["scheduler"])
        saved_amp = (state.get("config") or {}).get("train", {}).get("amp")
        if saved_amp is not None and bool(saved_amp) != bool(t_cfg["amp"]):
            log.warning("train.amp was %s in the run of %s and is %s now: the gradient scaler starts afresh",
                        str(bool(saved_amp)).lower(), t_cfg["resume"], str(bool(t_cfg["amp"])).lower())
        if not _load_scaler_state(scaler, state.get("scaler")) and scaler.is_enabled():
            log.warning("%s holds no gradient-scaler state (trained without AMP or on another device): "
                        "starting from the default scale", t_cfg["resume"])
        if state.get("rng"):
            ckpt_io.set_rng_state(state["rng"])
        start_epoch, skip_iters = state["epoch"], state.get("iteration", 0)
        history, best = state.get("history", []), state.get("best")
        results["untrained"] = state.get("untrained")
        started = time.time() - float(state.get("elapsed_s", 0.0))  # train_time_s spans every session
        log.info("resumed from %s at epoch %d (iteration %d)", t_cfg["resume"], start_epoch, skip_iters)

    if e_cfg["untrained"] and start_epoch == 0 and not t_cfg["resume"] and info.is_main:
        results["untrained"] = evaluate_model(model, splits, cfg, test_tf, device)
        log.info("untrained network (same initialisation, same test split):\n%s",
                 metrics_table({"untrained": results["untrained"]}))
    barrier(info)

    net: torch.nn.Module = model
    if info.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[info.local_rank] if device.type == "cuda" else None)
    loader_gen = torch.Generator()
    dataset = ImageDataset(splits.train, build_train_transform(cfg), labels=labels)

    def make_checkpoint(epoch: int, iteration: int) -> dict[str, Any]:
        return {"model": model.state_dict(), "config": cfg, "epoch": epoch, "iteration": iteration,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "losses": [t.module.state_dict() for t in terms],
                "rng": ckpt_io.rng_state(), "history": history, "best": best,
                "untrained": results.get("untrained"), "elapsed_s": time.time() - started}

    csv_path = out / "log.csv"
    writer = _TensorBoard(out, t_cfg["tensorboard"] and info.is_main)
    epoch, it = start_epoch, 0
    interrupted = {"flag": False}
    previous_handler = signal.getsignal(signal.SIGINT)

    def on_sigint(signum, frame):  # finish the current step, save, then stop
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True
        log.warning("interrupt received: saving a checkpoint after this step (Ctrl-C again to abort)")

    if threading_main():
        signal.signal(signal.SIGINT, on_sigint)
    try:
        for epoch in range(start_epoch, t_cfg["epochs"]):
            seed_everything(epoch_seed(cfg["seed"], epoch, info.rank))
            loader_gen.manual_seed(epoch_seed(cfg["seed"], epoch, info.rank))
            sampler.set_epoch(epoch)
            if skip_iters:  # resuming mid-epoch (after Ctrl-C): the sampler skips the batches already trained
                sampler.load_state_dict({"seed": cfg["seed"], "epoch": epoch, "batches_done": skip_iters})
            loader = DataLoader(dataset, batch_sampler=sampler,
                                num_workers=d_cfg["num_workers"], worker_init_fn=_worker_init,
                                generator=loader_gen, pin_memory=device.type == "cuda")
            model.train()
            for term in terms:
                term.module.train()
            sums: dict[str, float] = {}
            weight_stats: dict[str, float] = {}
            n_images, t0 = 0, time.time()
            bar = _progress(loader, epoch, t_cfg, info, skip_iters, steps_per_epoch)
            it, stop = skip_iters, False
            for it, batch_data in enumerate(bar, start=skip_iters):
                images = batch_data["image"].to(device, non_blocking=True)
                targets = batch_data["label"].to(device, non_blocking=True)
                step = epoch * steps_per_epoch + it
                with _autocast(device, t_cfg["amp"]):
                    outputs = net(images)
                all_targets = gather_with_grad(targets, info) if t_cfg["gather_embeddings"] else targets
                loss = torch.zeros((), device=device)
                parts = {}
                for term in terms:
                    x = outputs[term.input].float()
                    if t_cfg["gather_embeddings"]:
                        x = gather_with_grad(x, info)
                    term.module.set_progress(step, total_steps)
                    value = term.module(x, all_targets)
                    parts[term.name] = float(value.detach())
                    loss = loss + term.weight * value
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss became {float(loss)} at epoch {epoch + 1}, iteration {it + 1}; "
                                             f"terms: {parts}. The last good checkpoint is untouched.")
                optimizer.zero_grad(set_to_none=True)
                # with gathered embeddings every rank computes the loss of the global batch, and rank r's model
                # gradient is that loss's gradient through its own images only: DDP's mean over ranks would
                # be 1/world of the single-process gradient, hence the factor (undone for loss parameters)
                factor = gathered_loss_factor(info, t_cfg["gather_embeddings"])
                scaler.scale(loss * factor).backward()
                average_loss_gradients(terms, info, factor)  # DDP syncs the model; loss parameters here
                clip_gradients(optimizer, scaler, t_cfg["grad_clip"])
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                n_images += images.shape[0]
                parts["loss"] = float(loss.detach())
                if (it - skip_iters) % WEIGHT_STATS_EVERY == 0:
                    weight_stats = _weight_stats(terms)
                parts.update(weight_stats)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + v
                if hasattr(bar, "set_postfix"):
                    shown = {k: f"{v:.3f}" for k, v in parts.items()}
                    shown["img/s"] = f"{n_images * info.world_size / max(time.time() - t0, 1e-9):.1f}"
                    bar.set_postfix(shown)
                # the flag is per process: under DDP the ranks agree (one all-reduce) so that they all stop
                # after this same step, and none waits alone in the next step's collectives
                stop = any_rank(interrupted["flag"], info, device)
                if stop:
                    break
            if stop:
                if info.is_main:
                    ckpt_io.atomic_save(make_checkpoint(epoch, it + 1), out / "checkpoints" / "last.pth")
                    log.warning("saved %s (epoch %d, iteration %d); resume with train.resume=%s",
                                out / "checkpoints" / "last.pth", epoch + 1, it + 1,
                                out / "checkpoints" / "last.pth")
                barrier(info)  # the other ranks exit only once rank 0's checkpoint is written
                raise KeyboardInterrupt
            n_steps = max(it + 1 - skip_iters, 1)
            skip_iters = 0
            if info.enabled:
                drift = replica_divergence([model, *(t.module for t in terms)], info)
                log.info("epoch %d: parameters of the %d replicas differ by at most %.3g", epoch + 1,
                         info.world_size, drift)
                if drift > 1e-5:
                    raise RuntimeError(f"DDP replicas diverged by {drift:.3g} after epoch {epoch + 1}: a parameter "
                                       "was updated on some ranks only (a loss parameter without a gradient?)")
            row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"],
                   "images_per_s": n_images * info.world_size / max(time.time() - t0, 1e-9)}
            row.update({k: v / n_steps for k, v in sums.items()})
            if (e_cfg["every"] and (epoch + 1) % e_cfg["every"] == 0) or epoch + 1 == t_cfg["epochs"]:
                if info.is_main:
                    metrics = evaluate_model(model, splits, cfg, test_tf, device)
                    row.update({k: v for k, v in metrics.items() if isinstance(v, float)})
                    key = _best_key(cfg, splits)
                    if best is None or metrics[key] > best["value"]:
                        best = {"metric": key, "value": metrics[key], "epoch": epoch + 1}
                        ckpt_io.atomic_save(make_checkpoint(epoch + 1, 0), out / "checkpoints" / "best.pth")
                    log.info("epoch %d evaluation:\n%s", epoch + 1, metrics_table({f"epoch {epoch + 1}": metrics}))
                    results["final"] = metrics
                barrier(info)
            history.append(row)
            if info.is_main:
                _append_csv(csv_path, row)
                writer.log(row, epoch + 1)
                log.info("epoch %d/%d  %s", epoch + 1, t_cfg["epochs"],
                         "  ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
                last_epoch = epoch + 1 == t_cfg["epochs"]
                if last_epoch or (epoch + 1) % max(t_cfg["checkpoint_every"], 1) == 0:
                    ckpt_io.atomic_save(make_checkpoint(epoch + 1, 0), out / "checkpoints" / "last.pth")
    finally:
        if threading_main():
            signal.signal(signal.SIGINT, previous_handler)
        writer.close()

    if "final" not in results and info.is_main:  # resumed after the last epoch, or zero epochs
        results["final"] = evaluate_model(model, splits, cfg, test_tf, device)
    summary: dict[str, Any] = {}
    if info.is_main:
        final = results["final"]
        summary = {k: v for k, v in final.items()}
        summary["untrained"] = results.get("untrained")
        summary["best"] = best
        summary["epochs"] = t_cfg["epochs"]
        summary["train_time_s"] = round(time.time() - started, 1)
        summary["noise"] = {"rate": d_cfg["noise"]["rate"], "mode": d_cfg["noise"]["mode"],
                            "realised_rate": float(np.mean(noisy != clean)) if len(clean) else 0.0}
        tmp = out / "metrics.json.tmp"
        tmp.write_text(json.dumps(summary, indent=2, default=_json_default), encoding="utf-8")
        os.replace(tmp, out / "metrics.json")
        rows = {"trained (final)": final}
        if results.get("untrained"):
            rows = {"untrained": results["untrained"], **rows}
        log.info("results on the test split (%s protocol):\n%s", splits.protocol, metrics_table(rows))
        log.info("wrote %s, %s and %s", out / "metrics.json", out / "config.yaml", out / "checkpoints")
    barrier(info)
    return summary


def _make_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """Loss scaling for float16 autocast on CUDA; disabled otherwise (bfloat16 on CPU needs none)."""
    return torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")


def _load_scaler_state(scaler: torch.amp.GradScaler, saved: dict | None) -> bool:
    """Load a resumed run's GradScaler state when there is one to load; returns whether it was loaded.

    A disabled scaler saves ``{}``, and ``load_state_dict({})`` on an enabled one raises, so a run
    resumed with ``train.amp`` switched on (or on CUDA after CPU) starts from the default scale instead;
    a disabled scaler ignores any state.
    """
    if not saved or not scaler.is_enabled():
        return False
    scaler.load_state_dict(saved)
    return True


def _load_resumable_state(path, state: dict[str, Any], model, optimizer, terms) -> None:
    """Load the model, optimiser and loss-module states of a ``train.resume`` checkpoint.

    A checkpoint of another architecture (backbone, embedding_dim, loss terms) raises ValueError naming
    the checkpoint and ``train.resume`` instead of torch's raw multi-line RuntimeError.
    """
    def refuse(what: str, detail: str) -> ValueError:
        return ValueError(f"train.resume={path}: the checkpoint's {what} does not fit this config "
                          f"(another model.backbone, model.embedding_dim or loss.terms?): {detail}")

    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise refuse("model", ckpt_io.state_dict_mismatch(exc)) from exc
    saved_losses = state.get("losses", [])
    if len(saved_losses) != len(terms):
        raise refuse("loss terms", f"{len(saved_losses)} saved, {len(terms)} configured")
    for term, sd in zip(terms, saved_losses):
        try:
            term.module.load_state_dict(sd)
        except RuntimeError as exc:
            raise refuse(f"loss term {term.name}", ckpt_io.state_dict_mismatch(exc)) from exc
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise refuse("optimizer state", ckpt_io.state_dict_mismatch(exc)) from exc


def clip_gradients(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, max_norm: float):
    """``train.grad_clip``: rescale the gradients of every parameter the optimiser updates (model and loss
    parameters, one global norm) to a norm of at most ``max_norm``, after undoing AMP's loss scale.

    Returns the total norm before clipping (a tensor), or None when ``max_norm`` is 0 (off).
    """
    if max_norm <= 0:
        return None
    scaler.unscale_(optimizer)  # scaler.step then knows the gradients are unscaled already
    params = [p for group in optimizer.param_groups for p in group["params"]]
    return torch.nn.utils.clip_grad_norm_(params, max_norm)


def average_loss_gradients(terms, info: DistInfo, loss_factor: float = 1.0) -> None:
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


def threading_main() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _best_key(cfg: dict, splits) -> str:
    """The metric that selects best.pth; refused before training when the dataset's protocol lacks it."""
    key = cfg["train"]["best_metric"]
    if splits.protocol == "cub" and key == "mAP":
        return "map_at_r"
    reported = PROTOCOL_METRICS[splits.protocol]
    if key not in reported:
        raise ValueError(f"train.best_metric={key} is not reported by the {splits.protocol} protocol of "
                         f"dataset {cfg['data']['dataset']}; choose one of {', '.join(reported)}")
    return key


def _progress(loader, epoch: int, t_cfg: dict, info: DistInfo, skip: int, total: int):
    if not (t_cfg["progress"] and info.is_main and sys.stderr.isatty()):
        return loader  # no bar in files and CI logs: the per-epoch log line says the same
    from tqdm import tqdm
    return tqdm(loader, desc=f"epoch {epoch + 1}/{t_cfg['epochs']}", initial=skip, total=total,
                unit="it", leave=False, dynamic_ncols=True, mininterval=1.0)


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    exists = path.exists()
    fields = list(row)
    if exists:
        with open(path, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh), [])
        fields = header + [k for k in row if k not in header]
        if fields != header:  # new columns (e.g. evaluation): rewrite with the wider header
            with open(path, newline="", encoding="utf-8") as fh:
                old = list(csv.DictReader(fh))
            with open(path, "w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=fields)
                w.writeheader()
                w.writerows(old)
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        if not exists:
            w.writeheader()
        w.writerow(row)


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


class _TensorBoard:
    """Optional TensorBoard scalars (needs the ``tensorboard`` package)."""

    def __init__(self, out: Path, enabled: bool):
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ValueError("train.tensorboard=true needs the tensorboard package: pip install tensorboard") from None
            self.writer = SummaryWriter(str(out / "tensorboard"))

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.writer is not None:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k != "epoch":
                    self.writer.add_scalar(k, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
