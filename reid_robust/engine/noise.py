"""Apply the config's label noise to the training split and record it (``noise_manifest.csv``)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reid_robust.data.noise import (
    confusable_identities,
    inject_identity_noise,
    load_noisy_label_list,
    write_noise_manifest,
)
from reid_robust.data.records import ImageRecord
from reid_robust.safe_load import numpy_load

log = logging.getLogger("reid_robust")


def _load_confusable(path: str, cfg: dict, records: Sequence[ImageRecord], clean: np.ndarray) -> np.ndarray:
    """``data.noise.confusable`` is a ``.npy`` array (one identity per identity) or a clean-trained checkpoint;
    both are read without running code (``allow_pickle=False``, ``torch.load(weights_only=True)``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data.noise.confusable: file not found: {p}")
    if p.suffix == ".npy":
        return numpy_load(p, "data.noise.confusable file")  # allow_pickle=False: never runs code
    from reid_robust.engine.builders import build_test_transform
    from reid_robust.engine.checkpoint import load_model_from_checkpoint
    from reid_robust.engine.inference import extract_features

    model, _ = load_model_from_checkpoint(p)
    feats, _, _ = extract_features(model, records, build_test_transform(cfg), batch_size=cfg["data"]["test_batch_size"])
    return confusable_identities(feats, clean)


def apply_label_noise(cfg: dict, records: Sequence[ImageRecord], clean: np.ndarray,
                      output_dir: Path | None) -> np.ndarray:
    """Return the training labels (noisy if configured); rank 0 writes the manifest to ``output_dir``."""
    n_cfg = cfg["data"]["noise"]
    if n_cfg["list"]:
        noisy = load_noisy_label_list(n_cfg["list"], records)
        is_noisy = noisy != clean
    elif n_cfg["rate"] > 0:
        confusable = None
        if n_cfg["mode"] == "pattern":
            if not n_cfg["confusable"]:
                raise ValueError("data.noise.mode=pattern needs data.noise.confusable: a .npy array with each "
                                 "identity's most confusable other identity, or a checkpoint trained on clean "
                                 "labels to compute it from (tools/noise_sweep.py does this for you)")
            confusable = _load_confusable(n_cfg["confusable"], cfg, records, clean)
        noisy, is_noisy = inject_identity_noise(clean, n_cfg["rate"], mode=n_cfg["mode"], seed=n_cfg["seed"],
                                                confusable=confusable)
    else:
        return clean.copy()
    noisy = np.asarray(noisy, dtype=np.int64)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    realised = is_noisy.mean() if len(is_noisy) else 0.0
    if n_cfg["list"]:  # mode and rate do not apply to a published list
        log.info("label noise: list=%s realised rate=%.4f (%d of %d training labels wrong)",
                 n_cfg["list"], realised, int(is_noisy.sum()), len(is_noisy))
    else:
        log.info("label noise: mode=%s requested rate=%.3f realised rate=%.4f (%d of %d training labels wrong)",
                 n_cfg["mode"], n_cfg["rate"], realised, int(is_noisy.sum()), len(is_noisy))
    if output_dir is not None:
        write_noise_manifest(Path(output_dir) / "noise_manifest.csv", records, clean, noisy, is_noisy)
    return noisy


def class_space(cfg: dict, labels: np.ndarray, num_train_classes: int) -> tuple[np.ndarray, int]:
    """``(labels the losses train on, number of classes)``.

    Open-set noise hides identities as classes: their images carry other identities' labels and the hidden
    ids never occur. The losses then train on the remaining identities only, renumbered ``0..K-1`` in
    sorted order, so a classifier has no output for a person it can never be taught (the manifest and
    ``suspects.csv`` keep the original ids). Every other setting returns ``(labels, num_train_classes)``.
    """
    n_cfg = cfg["data"]["noise"]
    if n_cfg["list"] or n_cfg["mode"] != "open_set" or n_cfg["rate"] <= 0:
        return labels, int(num_train_classes)
    present, compact = np.unique(labels, return_inverse=True)
    log.info("open-set noise: %d of %d identities keep a class; the losses see them as classes 0..%d",
             len(present), num_train_classes, len(present) - 1)
    return compact.astype(np.int64), len(present)
