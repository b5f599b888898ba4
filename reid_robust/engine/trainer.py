"""The training loop: one function, ``train(cfg)``, that reads top to bottom like an epoch does.

records -> noise -> PK sampler -> transforms -> model -> named outputs -> weighted loss terms -> step;
every ``eval.every`` epochs the model is evaluated with the dataset's protocol; checkpoints are atomic.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import random
import re
import signal
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from reid_robust.data.dataset import ImageDataset
from reid_robust.data.samplers import DistributedPKSampler, PKSampler
from reid_robust.data.summary import summarize
from reid_robust.engine import checkpoint as ckpt_io
from reid_robust.engine import run_dir
from reid_robust.engine.builders import (
    build_dataset_from_config,
    build_loss_terms,
    build_model_from_config,
    build_optimizer,
    build_scheduler,
    build_test_transform,
    build_train_transform,
)
from reid_robust.engine.config import (
    PROTOCOL_METRICS,
    resume_changes,
    save_config,
    validate_positives,
    with_absolute_paths,
)
from reid_robust.engine.distributed import (
    DistInfo,
    any_rank,
    barrier,
    broadcast_object,
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
        fh = _LogFile(output_dir / "train.log", encoding="utf-8")
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
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the trainer's handler: the main process stops them
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


MAX_SKIPPED_STEPS = 20  # consecutive mixed-precision steps skipped for non-finite gradients: divergence


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    """Train and evaluate as ``cfg`` says; returns the final metrics (also written to metrics.json)."""
    info = init_distributed(cfg["device"])  # the configured device picks the backend (gloo for cpu)
    try:
        # the saved config (and every checkpoint's) finds the data from anywhere
        return _train_in_folder(with_absolute_paths(cfg), info)
    finally:
        cleanup(info)


def _train_in_folder(cfg: dict[str, Any], info: DistInfo) -> dict[str, Any]:
    """Check the resume and take ``output_dir`` (run_dir.prepare on rank 0, whose verdict reaches every rank
    before any work), train, and release the folder's lock on every exit (SIGTERM included)."""
    validate_positives(cfg)
    device = resolve_device(cfg["device"], info)
    resume = _load_resume(cfg, device)  # refused keys fail here, before the folder is touched
    lock, refusal = None, None
    notices: list[str] = []
    if info.is_main:
        try:
            lock, notices = run_dir.prepare(Path(cfg["output_dir"]), cfg["train"]["resume"],
                                            cfg["train"]["overwrite"])
        except (OSError, ValueError) as exc:
            refusal = exc
    message = broadcast_object(None if refusal is None else str(refusal), info)
    if refusal is not None:
        raise refusal
    if message is not None:  # other ranks: rank 0 refused the folder
        raise run_dir.RunDirError(message)
    try:
        with _sigterm_exits():
            return _train(cfg, info, device, resume, notices)
    finally:
        if lock is not None:
            lock.release()


@contextmanager
def _sigterm_exits():
    """SIGTERM (kill, torchrun stopping its workers) exits through every ``finally`` (the lock is released,
    a checkpoint being written is abandoned and the last one kept) with code 143."""
    if not threading_main():
        yield
        return

    def on_sigterm(signum, frame):
        log.warning("terminated (SIGTERM): stopping without saving; the last checkpoint is kept as it was")
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _load_resume(cfg: dict[str, Any], device: torch.device) -> tuple[dict[str, Any], list[str]] | None:
    """The ``train.resume`` checkpoint and the log lines of the keys changed since (applied or ignored);
    a changed optimizer type or data/model/loss key is a ValueError naming them (nothing is kept silently)."""
    path = cfg["train"]["resume"]
    if not path:
        return None
    state = ckpt_io.load_checkpoint(path, device)
    saved = state.get("config")
    if not isinstance(saved, dict):
        raise ValueError(f"train.resume={path}: the checkpoint's config is not a mapping")
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
    return state, lines


def _train(cfg: dict[str, Any], info: DistInfo, device: torch.device,
           resume: tuple[dict[str, Any], list[str]] | None, notices: list[str]) -> dict[str, Any]:
    t_cfg, e_cfg, d_cfg = cfg["train"], cfg["eval"], cfg["data"]
    out = Path(cfg["output_dir"])
    if info.is_main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "config.yaml")
    barrier(info)
    setup_logging(out, info.is_main)
    for line in notices + (resume[1] if resume else []):
        log.warning("%s", line)
    if t_cfg["num_threads"]:
        torch.set_num_threads(t_cfg["num_threads"])
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
    if resume is not None:
        state = resume[0]
        _load_resumable_state(t_cfg["resume"], state, model, optimizer, terms)
        _apply_configured_schedule(scheduler, state["scheduler"])
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
        if info.is_main:  # epochs after the checkpoint were trained again: their rows go
            _write_csv(out / "log.csv", [r for r in _read_csv(out / "log.csv") if _epoch_of(r) <= start_epoch])

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
    last_path = out / "checkpoints" / "last.pth"
    writer = _TensorBoard(out, t_cfg["tensorboard"] and info.is_main)
    epoch, it, skipped = start_epoch, 0, 0
    interrupted = {"flag": False}
    previous_handler = signal.getsignal(signal.SIGINT)

    def save(checkpoint: dict[str, Any], path: Path) -> None:
        """Refuse non-finite weights (the last finite checkpoint stays), then write atomically; a second
        Ctrl-C during the write leaves ``path`` as it was."""
        where = f"epoch {checkpoint['epoch'] + (checkpoint['iteration'] > 0)}"
        _check_finite_state(model, terms, optimizer, where, _kept(last_path))
        try:
            ckpt_io.atomic_save(checkpoint, path)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(f"interrupted again while writing {path.name}: stopped without saving; "
                                    f"{_kept(path)}") from None

    def on_sigint(signum, frame):  # finish the current step, save, then stop
        if interrupted["flag"]:
            raise KeyboardInterrupt(f"interrupted again: stopped without saving; {_kept(last_path)}")
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
            batches = _batches(loader)
            bar = _progress(batches, epoch, t_cfg, info, skip_iters, steps_per_epoch)
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
                if any_rank(not math.isfinite(float(loss.detach())), info, device):
                    raise FloatingPointError(_divergence(epoch, it, _nonfinite_loss(parts, outputs, info),
                                                         _kept(last_path)))
                optimizer.zero_grad(set_to_none=True)
                # with gathered embeddings every rank computes the loss of the global batch, and rank r's model
                # gradient is that loss's gradient through its own images only: DDP's mean over ranks would
                # be 1/world of the single-process gradient, hence the factor (undone for loss parameters)
                factor = gathered_loss_factor(info, t_cfg["gather_embeddings"])
                scaler.scale(loss * factor).backward()
                average_loss_gradients(terms, info, factor)  # DDP syncs the model; loss parameters here
                norm = clip_gradients(optimizer, scaler, t_cfg["grad_clip"])
                skipped = _check_gradients(optimizer, scaler, norm, skipped, epoch, it, _kept(last_path))
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
                batches.close()  # the loader's workers stop before the save
                if info.is_main:
                    save(make_checkpoint(epoch, it + 1), last_path)
                    log.warning("saved %s (epoch %d, iteration %d); resume with train.resume=%s",
                                last_path, epoch + 1, it + 1, last_path)
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
                    if best is None or best["metric"] != key or metrics[key] > best["value"]:
                        best = {"metric": key, "value": metrics[key], "epoch": epoch + 1}
                        save(make_checkpoint(epoch + 1, 0), out / "checkpoints" / "best.pth")
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
                    save(make_checkpoint(epoch + 1, 0), last_path)
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
        run_dir.atomic_write_text(out / "metrics.json", json.dumps(summary, indent=2, default=_json_default))
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
    configured = [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError) as exc:
        raise refuse("optimizer state", ckpt_io.state_dict_mismatch(exc)) from exc
    for group, hyper in zip(optimizer.param_groups, configured):  # the config's lr, weight decay, momentum
        group.update(hyper)


def _apply_configured_schedule(scheduler: torch.optim.lr_scheduler.LambdaLR, saved: dict[str, Any]) -> None:
    """Load the scheduler's position (``last_epoch``) but keep this config's base learning rates (the
    groups' ``initial_lr``) and schedule, and set each group's lr to it: a resumed run with a new
    ``train.lr`` or schedule uses them (the saved state would bring the old base rates back)."""
    scheduler.load_state_dict(saved)
    groups = scheduler.optimizer.param_groups
    scheduler.base_lrs = [g["initial_lr"] for g in groups]
    for group, base, factor in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in groups]


def _kept(path: Path) -> str:
    """What a diverged or aborted run leaves: the last checkpoint as it was."""
    return f"{path} is kept as it was" if path.is_file() else "no checkpoint was written"


def _divergence(epoch: int, it: int, what: str, kept: str) -> str:
    return (f"training diverged at epoch {epoch + 1}, step {it + 1}: {what}; {kept} "
            "(lower train.lr or set train.grad_clip)")


def _nonfinite_loss(parts: dict[str, float], outputs: dict[str, torch.Tensor], info: DistInfo) -> str:
    """Which loss terms (and which embeddings) are not finite, e.g. "loss term triplet = nan (feat non-finite)"."""
    bad = [f"{name} = {value}" for name, value in parts.items() if not math.isfinite(value)]
    if not bad:
        return "the loss is non-finite on another rank"
    inputs = [name for name, x in outputs.items() if not bool(torch.isfinite(x.detach()).all())]
    return f"loss term {', '.join(bad)}" + (f" (embeddings {', '.join(inputs)} non-finite)" if inputs else "")


def _check_gradients(optimizer, scaler: torch.amp.GradScaler, norm: torch.Tensor | None, skipped: int,
                     epoch: int, it: int, kept: str) -> int:
    """FloatingPointError when the gradient norm is not finite, or, with a mixed-precision scaler (which skips
    such steps and lowers its scale), after ``MAX_SKIPPED_STEPS`` consecutive skipped steps. Returns the
    number of consecutive skipped steps."""
    if norm is None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if math.isfinite(float(norm)):
        return 0
    if not scaler.is_enabled():
        raise FloatingPointError(_divergence(epoch, it, f"the gradient norm is {float(norm)}", kept))
    skipped += 1
    if skipped >= MAX_SKIPPED_STEPS:
        raise FloatingPointError(_divergence(epoch, it, f"the gradients were non-finite in {skipped} consecutive "
                                             f"steps (mixed-precision scale now {scaler.get_scale():g})", kept))
    return skipped


def _check_finite_state(model: torch.nn.Module, terms, optimizer, where: str, kept: str) -> None:
    """FloatingPointError naming the first non-finite parameter, buffer or optimiser state (nothing is saved)."""
    named = [(f"model.{k}", v) for k, v in model.state_dict().items()]
    named += [(f"loss {t.name}.{k}", v) for t in terms for k, v in t.module.state_dict().items()]
    named += [(f"optimizer state {k}", v) for st in optimizer.state.values() for k, v in st.items()]
    for name, value in named:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FloatingPointError(f"training diverged before the checkpoint of {where}: {name} is not finite; "
                                     f"not saving, {kept} (lower train.lr or set train.grad_clip)")


def _batches(loader):
    """Iterate ``loader``; an error re-raised from a DataLoader worker (its message holds the worker's whole
    traceback) becomes the one-line error it is with ``num_workers=0``. Closing stops the workers."""
    iterator = iter(loader)
    try:
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                raise _unwrap_worker_error(exc) from None
            yield batch
    finally:
        del iterator


def _unwrap_worker_error(exc: Exception) -> Exception:
    """``Caught ImageReadError in DataLoader worker process 0. Original Traceback ... ImageReadError: msg``
    -> ``ImageReadError(msg)``; any other exception unchanged."""
    text = str(exc)
    if not re.match(r"Caught \w+ in DataLoader worker process", text):
        return exc
    last = [line for line in text.splitlines() if line.strip()][-1]
    match = re.match(r"^[\w.]+: (.*)$", last)
    message = match.group(1) if match else last
    try:
        return type(exc)(message)
    except Exception:
        return RuntimeError(message)


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


def _read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _epoch_of(row: dict[str, Any]) -> int:
    try:
        return int(float(row.get("epoch") or 0))
    except ValueError:
        return 0


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (columns in order of appearance) atomically; nothing when there are none."""
    if not rows and not path.exists():
        return
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    text = io.StringIO()
    w = csv.DictWriter(text, fieldnames=fields)
    w.writeheader()
    w.writerows(rows)
    run_dir.atomic_write_text(path, text.getvalue())


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    """One row per epoch; the whole (small) file is rewritten atomically, so columns added later (evaluation
    metrics) widen the header and a full disk never leaves half a row."""
    _write_csv(path, _read_csv(path) + [row])


def _json_default(obj):
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return str(obj)


class _LogFile(logging.FileHandler):
    """train.log; a failed write (a full disk) is one warning line on stderr, once, not a traceback per record."""

    failed = False

    def handleError(self, record: logging.LogRecord) -> None:
        if not self.failed:
            self.failed = True
            error = sys.exc_info()[1]
            print(f"warning: cannot write {self.baseFilename}: {error}", file=sys.stderr)


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
