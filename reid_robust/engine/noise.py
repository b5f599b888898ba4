"""Apply the config's label noise to the training split and record it (``noise_manifest.csv``)."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from reid_robust.config import NoiseConfig
from reid_robust.data.noise import (
    confusable_identities,
    inject_identity_noise,
    load_noisy_label_list,
    write_noise_manifest,
)
from reid_robust.data.records import ImageRecord
from reid_robust.safe_load import numpy_load

log = logging.getLogger("reid_robust")


def _load_confusable(path: str, records: Sequence[ImageRecord], clean: np.ndarray) -> np.ndarray:
    """``data.noise.confusable`` is a ``.npy`` array (one identity per identity) or a clean-trained checkpoint,
    whose model embeds ``records`` through its own test transforms; both are read without running code
    (``allow_pickle=False``, ``torch.load(weights_only=True)``)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data.noise.confusable: file not found: {p}")
    if p.suffix == ".npy":
        return numpy_load(p, "data.noise.confusable file")  # allow_pickle=False: never runs code
    from reid_robust.engine.embed import Embedder

    return confusable_identities(Embedder.from_checkpoint(p, device="cpu").embed_records(records).feats, clean)


def apply_label_noise(noise: NoiseConfig, records: Sequence[ImageRecord], clean: np.ndarray,
                      output_dir: Path | None) -> np.ndarray:
    """Return the training labels (noisy if configured); rank 0 writes the manifest to ``output_dir``."""
    if noise.list:
        noisy = load_noisy_label_list(noise.list, records)
        is_noisy = noisy != clean
    elif noise.rate > 0:
        confusable = None
        if noise.mode == "pattern":
            if not noise.confusable:
                raise ValueError("data.noise.mode=pattern needs data.noise.confusable: a .npy array with each "
                                 "identity's most confusable other identity, or a checkpoint trained on clean "
                                 "labels to compute it from (tools/noise_sweep.py does this for you)")
            confusable = _load_confusable(noise.confusable, records, clean)
        noisy, is_noisy = inject_identity_noise(clean, noise.rate, mode=noise.mode, seed=noise.seed,
                                                confusable=confusable)
    else:
        return clean.copy()
    noisy = np.asarray(noisy, dtype=np.int64)
    is_noisy = np.asarray(is_noisy, dtype=bool)
    realised = is_noisy.mean() if len(is_noisy) else 0.0
    if noise.list:  # mode and rate do not apply to a published list
        log.info("label noise: list=%s realised rate=%.4f (%d of %d training labels wrong)",
                 noise.list, realised, int(is_noisy.sum()), len(is_noisy))
    else:
        log.info("label noise: mode=%s requested rate=%.3f realised rate=%.4f (%d of %d training labels wrong)",
                 noise.mode, noise.rate, realised, int(is_noisy.sum()), len(is_noisy))
    if output_dir is not None:
        write_noise_manifest(Path(output_dir) / "noise_manifest.csv", records, clean, noisy, is_noisy)
    return noisy


def class_space(noise: NoiseConfig, labels: np.ndarray, num_train_classes: int) -> tuple[np.ndarray, int]:
    """``(labels the losses train on, number of classes)``.

    Open-set noise hides identities as classes: their images carry other identities' labels and the hidden
    ids never occur. The losses then train on the remaining identities only, renumbered ``0..K-1`` in
    sorted order, so a classifier has no output for a person it can never be taught (the manifest and
    ``suspects.csv`` keep the original ids). Every other setting returns ``(labels, num_train_classes)``.
    """
    if noise.list or noise.mode != "open_set" or noise.rate <= 0:
        return labels, int(num_train_classes)
    present, compact = np.unique(labels, return_inverse=True)
    log.info("open-set noise: %d of %d identities keep a class; the losses see them as classes 0..%d",
             len(present), num_train_classes, len(present) - 1)
    return compact.astype(np.int64), len(present)
