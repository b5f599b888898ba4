"""Audit a trained checkpoint's training labels: ``suspects.csv``, a contact sheet and, when the injected noise
is known (the run's ``noise_manifest.csv``), precision at the number of wrong labels, AUROC and a PR plot."""
from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from reid_robust.config import Config
    from reid_robust.data.records import DatasetSplits

from reid_robust.atomic import atomic_write_text
from reid_robust.cleaning.report import read_manifest
from reid_robust.cleaning.scoring import COMPONENTS, audit_metrics, suspicion_scores

log = logging.getLogger("reid_robust")


def run_dir_of(checkpoint: str | os.PathLike) -> Path:
    """``<run>/checkpoints/last.pth`` -> ``<run>``; a checkpoint elsewhere -> its folder."""
    path = Path(checkpoint).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def _write_suspects(path: Path, order: np.ndarray, scores: dict[str, np.ndarray], labels: np.ndarray,
                    records: Sequence, is_noisy: np.ndarray | None) -> None:
    comps = [c for c in COMPONENTS if c in scores]
    fields = ["rank", "score"] + comps + ["label", "path"] + (["injected_error"] if is_noisy is not None else [])
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(fields)
    for rank, i in enumerate(order, 1):
        row = [rank, f"{scores['score'][i]:.6f}"] + [f"{scores[c][i]:.6f}" for c in comps]
        row += [int(labels[i]), records[i].path]
        if is_noisy is not None:
            row.append(int(is_noisy[i]))
        writer.writerow(row)
    atomic_write_text(path, text.getvalue())


def _contact_sheet(path: Path, order: np.ndarray, score: np.ndarray, labels: np.ndarray, records: Sequence,
                   top: int, per_row: int = 4, is_noisy: np.ndarray | None = None) -> Path:
    from reid_robust.analysis.plots import contact_sheet
    from reid_robust.data.dataset import load_image

    rank_of = np.empty(len(order), dtype=np.int64)
    rank_of[order] = np.arange(len(order))
    rows = []
    for rank, i in enumerate(order[:top], 1):
        same = np.flatnonzero(labels == labels[i])
        same = same[same != i]
        typical = same[np.argsort(rank_of[same])[::-1][:per_row]]   # least suspect images of that label
        caption = f"#{rank} label {labels[i]}\nscore {score[i]:.2f}"
        if is_noisy is not None:
            caption += "\n(injected)" if is_noisy[i] else "\n(not injected)"
        rows.append((load_image(records[i]), caption, [load_image(records[j]) for j in typical]))
    return contact_sheet(rows, path, title="top suspects (red) | least suspect images of their label")


def audit_config(run: Path, config: str | os.PathLike | None, overrides: Sequence[str], stored: Config) -> Config:
    """The training config to audit: ``config``, else the run's ``config.yaml``, else the checkpoint's own
    (``stored``); ``overrides`` applied through the config loader."""
    from reid_robust.config import load_config, with_overrides

    if config is None and (run / "config.yaml").is_file():
        config = run / "config.yaml"
    if config is None:
        return with_overrides(stored, list(overrides)) if overrides else stored
    return load_config(config, overrides)


def training_labels(cfg: Config, splits: DatasetSplits, labels_list: str | None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(labels as listed, labels the losses trained on, number of classes)`` of the training split: the run's
    noise settings, or a noisy label list."""
    from reid_robust.data.noise import load_noisy_label_list
    from reid_robust.engine.noise import apply_label_noise, class_space

    if labels_list:
        labels = load_noisy_label_list(labels_list, splits.train)
        return labels, labels, splits.num_train_classes
    clean = np.array([r.pid for r in splits.train], dtype=np.int64)
    labels = apply_label_noise(cfg.data.noise, splits.train, clean, None)
    return (labels, *class_space(cfg.data.noise, labels, splits.num_train_classes))


def audit_checkpoint(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None,
                     overrides: Sequence[str] = (), out: str | os.PathLike | None = None, top: int = 16,
                     k: int = 10, passes: int = 8, labels_list: str | None = None, device: str = "auto",
                     progress: bool | None = None) -> dict[str, Any]:
    """Score every training image of the checkpoint's dataset; write the audit files to ``out``.

    config: the training config (default: the run's ``config.yaml``, else the checkpoint's own config); the
    training labels are those the run trained on (its noise settings), or ``labels_list`` (a noisy label list).
    Returns the summary also written to ``audit.json``.
    """
    from reid_robust.engine.builders import build_dataset_from_config, build_loss_terms
    from reid_robust.engine.checkpoint import checkpoint_config, load_checkpoint, model_from_checkpoint
    from reid_robust.engine.distributed import requested_device
    from reid_robust.engine.embed import transform_of
    from reid_robust.engine.inference import extract_outputs

    run = run_dir_of(checkpoint)
    where = requested_device(device)
    state = load_checkpoint(checkpoint)  # read once, without running code, before anything is written
    stored = checkpoint_config(state, checkpoint)
    cfg = audit_config(run, config, overrides, stored)
    out = Path(out) if out is not None else run / "audit"
    out.mkdir(parents=True, exist_ok=True)
    model = model_from_checkpoint(state, checkpoint, where, stored)
    splits = build_dataset_from_config(cfg.data)
    labels, train_labels, num_classes = training_labels(cfg, splits, labels_list)
    terms = build_loss_terms(stored.loss.terms, num_classes, model.out_dim)
    for term, sd in zip(terms, state.get("losses", [])):
        term.module.load_state_dict(sd)
    outputs = extract_outputs(model, splits.train, transform_of(cfg), batch_size=cfg.data.test_batch_size,
                              device=where, outputs=None, progress=progress)
    sampler = cfg.data.sampler
    scores = suspicion_scores(outputs, train_labels, terms, sampler.num_identities, sampler.num_instances, k=k,
                              passes=passes, seed=0, progress=progress)
    manifest = run / "noise_manifest.csv"
    truth = read_manifest(manifest, splits.train) if manifest.is_file() and not labels_list else None
    is_noisy = None if truth is None else truth.is_noisy
    summary = write_audit(out, scores, labels, splits.train, is_noisy, top)
    summary = {"checkpoint": str(checkpoint), **summary}
    atomic_write_text(out / "audit.json", json.dumps(summary, indent=2))
    return summary


def write_audit(out: Path, scores: dict[str, np.ndarray], labels: np.ndarray, records: Sequence,
                is_noisy: np.ndarray | None, top: int) -> dict[str, Any]:
    """``suspects.csv``, the contact sheet and, with known injected errors, their metrics and PR plot."""
    order = np.argsort(-scores["score"], kind="stable")
    _write_suspects(out / "suspects.csv", order, scores, labels, records, is_noisy)
    summary: dict[str, Any] = {"num_images": len(labels), "components": [c for c in COMPONENTS if c in scores],
                               "suspects_csv": str(out / "suspects.csv")}
    if top > 0:
        summary["contact_sheet"] = str(_contact_sheet(out / "contact_sheet.png", order, scores["score"], labels,
                                                      records, top, is_noisy=is_noisy))
    if is_noisy is None:
        return summary
    from sklearn.metrics import precision_recall_curve

    from reid_robust.analysis.plots import plot_precision_recall
    summary["metrics"] = m = audit_metrics(scores["score"], is_noisy)
    summary["component_metrics"] = {c: audit_metrics(scores[c], is_noisy) for c in COMPONENTS if c in scores}
    precision, recall, _ = precision_recall_curve(is_noisy, scores["score"])
    summary["pr_plot"] = str(plot_precision_recall(
        precision, recall, out / "precision_recall.png",
        title=f"{m['num_noisy']} wrong labels of {m['num_images']}: AUROC {m['auroc']:.3f}, "
              f"P@{m['num_noisy']} {m['precision_at_num_noisy']:.3f}"))
    return summary
