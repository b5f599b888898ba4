"""Identity-label noise for the training split: injection, confusable identities, manifests, published lists.

Closed-set protocol of the ReID label-noise literature (PurifyNet, Ye & Yuen, TIFS 2020; CORE, Ye et al.,
TIP 2022): every identity c with n_c images gets exactly round(rate * n_c) wrong labels (numpy rounding,
half to even), on images chosen uniformly without replacement. Modes:

- ``symmetric``: each wrong label is drawn uniformly from the other identities ("random noise");
- ``pair``: all wrong labels of an identity go to one other identity, fixed by a seeded random cyclic pairing;
- ``pattern``: each wrong label is the identity's most confusable other identity (``confusable[c]``, e.g. from
  `confusable_identities` on features of a model trained on clean labels);
- ``open_set``: round(rate * C) identities, chosen by the seed, are hidden as classes; each of their images is
  relabelled uniformly to one of the remaining identities, so the wrong labels point at people with no class.
  Labels keep their original values (hidden classes simply never occur), so the manifest stays comparable.

Evaluation never sees these labels: noise touches the training split only.
"""
from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike

from reid_robust.atomic import atomic_write_text

from .records import ImageRecord

NOISE_MODES = ("symmetric", "pair", "pattern", "open_set")
MANIFEST_COLUMNS = ("path", "clean_label", "noisy_label", "is_noisy")


def _as_labels(labels, what: str = "labels") -> np.ndarray:
    array = np.asarray(labels)
    if array.ndim != 1 or array.size == 0:
        raise ValueError(f"{what} must be a non-empty 1-D array of integer ids, got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{what} must hold integer ids, got dtype {array.dtype}")
    return array.astype(np.int64)


def _groups(inverse: np.ndarray, num_classes: int) -> list[np.ndarray]:
    """Indices of each class (by position in the sorted class list), ascending."""
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.cumsum(np.bincount(inverse, minlength=num_classes))[:-1])


def _confusable_targets(confusable, classes: np.ndarray) -> np.ndarray:
    """Validate `confusable` (indexed by identity value) and return the target of each class position."""
    target = np.asarray(confusable)
    if target.ndim != 1 or not np.issubdtype(target.dtype, np.integer):
        raise ValueError(f"confusable must be a 1-D integer array (one identity per identity), got "
                         f"shape {target.shape}, dtype {target.dtype}")
    if len(target) <= classes.max():
        raise ValueError(f"confusable has {len(target)} entries but the labels go up to {classes.max()}")
    out = target[classes].astype(np.int64)
    same = classes[out == classes]
    if same.size:
        raise ValueError(f"confusable maps identity {same[0]} to itself; it must name a different identity")
    unknown = out[~np.isin(out, classes)]
    if unknown.size:
        raise ValueError(f"confusable names identity {unknown[0]}, which has no training image")
    return out


def inject_identity_noise(labels: ArrayLike, rate: float, mode: str = "symmetric", seed: int = 0,
                          confusable: ArrayLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Corrupt training identity labels; returns (noisy_labels int64 [N], is_noisy bool [N]).

    labels: [N] clean training labels. rate in [0, 1]: per-identity share of wrong labels (closed-set modes)
    or share of identities hidden (``open_set``). Same arguments give the same result; a flagged label always
    differs from the clean one. See the module docstring for the modes.
    """
    clean = _as_labels(labels)
    if mode not in NOISE_MODES:
        raise ValueError(f"unknown noise mode {mode!r}; valid modes: {', '.join(NOISE_MODES)}")
    if isinstance(rate, (bool, str)) or not 0.0 <= float(rate) <= 1.0:
        raise ValueError(f"noise rate must be a number in [0, 1], got {rate!r}")
    rate = float(rate)
    if mode == "pattern" and confusable is None:
        raise ValueError("noise mode 'pattern' needs `confusable` (one most-confusable identity per identity), "
                         "e.g. from confusable_identities(features, labels) of a model trained on clean labels")
    classes, inverse = np.unique(clean, return_inverse=True)
    num_classes = len(classes)
    if num_classes < 2 and rate > 0:
        raise ValueError(f"label noise needs at least 2 identities, got {num_classes}")
    rng = np.random.default_rng(seed)
    groups = _groups(inverse, num_classes)
    noisy = inverse.copy()  # work in class positions 0..C-1, map back at the end

    if mode == "open_set":
        num_hidden = int(np.round(rate * num_classes))
        if num_hidden >= num_classes:
            raise ValueError(f"open_set noise with rate {rate} would hide all {num_classes} identities")
        hidden = rng.choice(num_classes, num_hidden, replace=False)
        kept = np.setdiff1d(np.arange(num_classes), hidden)
        for position in np.sort(hidden):
            members = groups[position]
            noisy[members] = kept[rng.integers(0, len(kept), size=len(members))]
    else:
        if mode == "pair":
            cycle = rng.permutation(num_classes)
            target = np.empty(num_classes, dtype=np.int64)
            target[cycle] = np.roll(cycle, -1)  # class cycle[i] -> cycle[i + 1]: never itself
        elif mode == "pattern":
            target = np.searchsorted(classes, _confusable_targets(confusable, classes))
        for position, members in enumerate(groups):
            num_wrong = int(np.round(rate * len(members)))
            chosen = rng.choice(members, num_wrong, replace=False)
            if mode == "symmetric":
                draw = rng.integers(0, num_classes - 1, size=num_wrong)
                noisy[chosen] = draw + (draw >= position)  # uniform over the other classes
            else:
                noisy[chosen] = target[position]
    noisy_labels = classes[noisy]
    is_noisy = noisy_labels != clean
    return noisy_labels, is_noisy


def noise_summary(clean: ArrayLike, noisy: ArrayLike) -> dict:
    """Realised noise: overall rate, noisy count, per-identity min/max noisy share, classes left in the labels."""
    clean, noisy = _as_labels(clean, "clean labels"), _as_labels(noisy, "noisy labels")
    if clean.shape != noisy.shape:
        raise ValueError(f"clean and noisy labels differ in length: {len(clean)} vs {len(noisy)}")
    wrong = noisy != clean
    classes, inverse = np.unique(clean, return_inverse=True)
    per_class = np.bincount(inverse, weights=wrong) / np.bincount(inverse)
    return {
        "num_images": len(clean),
        "num_noisy": int(wrong.sum()),
        "rate": float(wrong.mean()),
        "per_identity_rate_min": float(per_class.min()),
        "per_identity_rate_max": float(per_class.max()),
        "num_identities": len(classes),
        "num_classes_in_noisy_labels": len(np.unique(noisy)),
    }


def confusable_identities(feats, labels: ArrayLike) -> np.ndarray:
    """Most confusable other identity of each identity via class-centre cosine similarity.

    feats: [N, D] embeddings (numpy or torch) of the training images from a model trained on clean labels;
    labels: [N] clean labels. Centres are means of the L2-normalised features, normalised again; the result
    has one entry per label value 0..max(labels) (the argmax of the centre similarities, self excluded; -1 for
    a label value with no image).
    """
    if hasattr(feats, "detach"):
        feats = feats.detach().cpu().numpy()
    feats = np.asarray(feats, dtype=np.float64)
    labels = _as_labels(labels)
    if feats.ndim != 2 or len(feats) != len(labels):
        raise ValueError(f"feats must be [N, D] with N = {len(labels)} labels, got shape {feats.shape}")
    if not np.isfinite(feats).all():
        raise ValueError("feats contain NaN or infinite values")
    classes, inverse = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"confusable identities need at least 2 identities, got {len(classes)}")
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    centres = np.zeros((len(classes), feats.shape[1]))
    np.add.at(centres, inverse, unit)
    centres /= np.maximum(np.linalg.norm(centres, axis=1, keepdims=True), 1e-12)
    nearest = np.empty(len(classes), dtype=np.int64)
    for start in range(0, len(classes), 1024):  # blocks of rows: C x C would not fit for SOP's 11k classes
        similarity = centres[start:start + 1024] @ centres.T
        rows = np.arange(len(similarity))
        similarity[rows, start + rows] = -np.inf
        nearest[start:start + 1024] = similarity.argmax(axis=1)
    out = np.full(classes.max() + 1, -1, dtype=np.int64)
    out[classes] = classes[nearest]
    return out


def write_noise_manifest(path: str | os.PathLike, records: Sequence[ImageRecord], clean: ArrayLike,
                         noisy: ArrayLike, is_noisy: ArrayLike) -> Path:
    """Write the CSV `path, clean_label, noisy_label, is_noisy` (is_noisy as 0/1), one row per training image."""
    clean, noisy = _as_labels(clean, "clean labels"), _as_labels(noisy, "noisy labels")
    flags = np.asarray(is_noisy, dtype=bool)
    if not len(records) == len(clean) == len(noisy) == len(flags):
        raise ValueError(f"manifest columns differ in length: {len(records)} records, {len(clean)} clean, "
                         f"{len(noisy)} noisy, {len(flags)} flags")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(MANIFEST_COLUMNS)
    for record, c, n, f in zip(records, clean, noisy, flags):
        writer.writerow([record.path, int(c), int(n), int(f)])
    path = Path(path)
    atomic_write_text(path, buffer.getvalue())
    return path


def _read_label_list(path: Path) -> list[tuple[int, str, str]]:
    """(line number, path, label) from a CSV with `path` and `noisy_label` columns or a 2-column text list."""
    with open(path, encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines()
    first = next((line for line in lines if line.strip()), "")
    header = [h.strip() for h in first.split(",")]
    if "path" in header and "noisy_label" in header:
        start = lines.index(first)
        reader = csv.DictReader(lines[start:])
        return [(start + i + 2, row["path"], row["noisy_label"]) for i, row in enumerate(reader)]
    entries = []
    for line_no, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        fields = text.rsplit(",", 1) if "," in text else text.rsplit(None, 1)
        if len(fields) != 2:
            raise ValueError(f"{path}:{line_no}: expected '<image path> <label>', got {text!r}")
        entries.append((line_no, fields[0].strip(), fields[1].strip()))
    return entries


def load_noisy_label_list(path: str | os.PathLike, records: Sequence[ImageRecord]) -> np.ndarray:
    """Labels [N] for `records` from a published noisy-label list (`data.noise.list`).

    The file is a CSV with `path` and `noisy_label` columns (e.g. a `noise_manifest.csv`) or lines
    `<image path> <label>` (space- or comma-separated). Paths may be absolute or relative to any parent folder
    (matched as a path suffix, so `bounding_box_train/0002_c1s1_000451_03.jpg` or the bare file name work when
    unambiguous). Labels are training labels, 0..C-1. Every training image must be listed exactly once.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"noisy label list not found: {path}")
    by_name: dict[str, list[int]] = {}
    normalised = [os.path.normpath(r.path) for r in records]
    for index, rec_path in enumerate(normalised):
        by_name.setdefault(os.path.basename(rec_path), []).append(index)
    num_classes = max(r.pid for r in records) + 1
    labels = np.full(len(records), -1, dtype=np.int64)
    for line_no, entry, value in _read_label_list(path):
        wanted = os.path.normpath(entry)
        candidates = [i for i in by_name.get(os.path.basename(wanted), [])
                      if normalised[i] == wanted or normalised[i].endswith(os.sep + wanted)]
        if not candidates:
            raise ValueError(f"{path}:{line_no}: {entry!r} matches no training image")
        if len(candidates) > 1:
            raise ValueError(f"{path}:{line_no}: {entry!r} is ambiguous ({len(candidates)} training images end "
                             f"with it); give a longer path")
        try:
            label = int(value)
        except ValueError:
            raise ValueError(f"{path}:{line_no}: label {value!r} is not an integer") from None
        if not 0 <= label < num_classes:
            raise ValueError(f"{path}:{line_no}: label {label} outside the training labels 0..{num_classes - 1}")
        if labels[candidates[0]] != -1:
            raise ValueError(f"{path}:{line_no}: {entry!r} is listed twice")
        labels[candidates[0]] = label
    missing = np.flatnonzero(labels < 0)
    if missing.size:
        raise ValueError(f"{path} gives no label for {missing.size} of {len(records)} training images, "
                         f"e.g. {records[missing[0]].path}")
    return labels
