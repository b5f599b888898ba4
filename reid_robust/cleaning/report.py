"""A cleaning round against the truth: the noise manifest (``noise_manifest.csv``: path, clean_label,
noisy_label, is_noisy) is read for the report only, never for a decision."""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

log = logging.getLogger("reid_robust")


@dataclass(frozen=True)
class Manifest:
    """Per training image: ``is_noisy`` [N] bool, ``clean`` [N] and ``noisy`` [N] identity ids."""

    is_noisy: np.ndarray
    clean: np.ndarray
    noisy: np.ndarray


def read_manifest(path: str | os.PathLike, records: Sequence) -> Manifest | None:
    """The manifest rows of ``records`` (matched by path, then by file name), or None when it lists others."""
    by_path: dict[str, tuple[bool, int, int]] = {}
    with open(path, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_path[os.path.normpath(row["path"])] = (row["is_noisy"].strip() in ("1", "True", "true"),
                                                      int(row["clean_label"]), int(row["noisy_label"]))
    keys = [os.path.normpath(r.path) for r in records]
    found = None
    if all(k in by_path for k in keys):
        found = [by_path[k] for k in keys]
    else:
        by_name = {os.path.basename(k): v for k, v in by_path.items()}
        names = [os.path.basename(k) for k in keys]
        if len(by_name) == len(by_path) and all(n in by_name for n in names):
            found = [by_name[n] for n in names]
    if found is None:
        log.warning("%s does not list the training images of this config; no detection metrics", path)
        return None
    flags, clean, noisy = zip(*found)
    return Manifest(np.array(flags, dtype=bool), np.array(clean, dtype=np.int64), np.array(noisy, dtype=np.int64))


def true_classes(manifest: Manifest, trained: np.ndarray) -> np.ndarray:
    """Each image's clean identity in the class space the losses train on ([N], -1 when that identity has no
    class, e.g. hidden by open-set noise), through the (noisy id -> trained class) pairs of the run."""
    mapping = dict(zip(manifest.noisy.tolist(), np.asarray(trained).tolist()))
    return np.array([mapping.get(c, -1) for c in manifest.clean.tolist()], dtype=np.int64)


def round_metrics(flagged: np.ndarray, keep: np.ndarray, labels: np.ndarray, manifest: Manifest,
                  trained: np.ndarray) -> dict[str, float | None]:
    """``precision`` and ``recall`` of the flagged images as wrong labels (None when undefined: nothing flagged,
    or no wrong label), and ``labels_correct``: the share of the images still trained on whose current label
    is their true identity. ``trained``: the labels the run started from (the class space of ``labels``)."""
    truth = manifest.is_noisy
    hits = int((flagged & truth).sum())
    correct = labels[keep] == true_classes(manifest, trained)[keep]
    return {"precision": hits / int(flagged.sum()) if flagged.any() else None,
            "recall": hits / int(truth.sum()) if truth.any() else None,
            "labels_correct": float(correct.mean()) if correct.size else None}
