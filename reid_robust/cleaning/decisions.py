"""The decisions of one self-cleaning round: which images are flagged, and what ``drop``, ``relabel`` and
``weight`` do with them. Pure functions over the round's scores; the state they produce is plain arrays.

Every round scores all training images under their current labels (a dropped image can come back, a
relabelled one is judged under its new label), flags the ``round(rate * N)`` highest combined scores (ties:
lower index first; ``rate`` is the estimate times ``rate_scale``, at most ``max_rate``), then:

- ``drop``: flagged images leave the sampler; an identity that lost images and is left with fewer than
  ``min_images`` is removed (all its images leave), one left with fewer than K (``num_instances``) is sampled
  with replacement (the PK sampler's rule for small identities).
- ``relabel``: a flagged image whose classifier softmax peaks at another identity with probability at least
  ``relabel_confidence`` takes that identity (cumulative over rounds); the others keep their label.
- ``weight``: a flagged image weighs ``1 - posterior`` of the suspect mixture component (DivideMix's clean
  probability, Li et al. ICLR 2020) in every loss term; 0 when the rate was given and the mixture found no
  two populations. Unflagged images weigh 1.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from reid_robust.cleaning.rate import estimate_rate
from reid_robust.cleaning.scoring import WRONG_SIDE, suspicion_scores
from reid_robust.config.sections import CleaningConfig, SamplerConfig


@dataclass
class CleaningState:
    """What the rounds changed, per training image: ``keep`` [N] (in the sampler), ``labels`` [N] (what the
    losses train on), ``weights`` [N] (``sample_weight``); ``round``: rounds done; ``rows``: cleaning.csv."""

    round: int
    keep: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    rows: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def initial(cls, labels: np.ndarray) -> CleaningState:
        n = len(labels)
        return cls(0, np.ones(n, dtype=bool), np.asarray(labels, dtype=np.int64).copy(), np.ones(n, np.float32))

    def to_plain(self) -> dict[str, Any]:
        """Tensors, lists and scalars only: a checkpoint entry ``torch.load(weights_only=True)`` reads."""
        return {"round": int(self.round), "keep": torch.from_numpy(self.keep.copy()),
                "labels": torch.from_numpy(self.labels.copy()), "weights": torch.from_numpy(self.weights.copy()),
                "rows": [dict(r) for r in self.rows]}

    @classmethod
    def from_plain(cls, saved: dict[str, Any], n: int, where: str) -> CleaningState:
        state = cls(int(saved["round"]), saved["keep"].numpy().astype(bool), saved["labels"].numpy().astype(np.int64),
                    saved["weights"].numpy().astype(np.float32), [dict(r) for r in saved.get("rows", [])])
        if not len(state.keep) == len(state.labels) == len(state.weights) == n:
            raise ValueError(f"{where}: the cleaning state covers {len(state.keep)} images, the training split "
                             f"has {n}; resume with the data it was trained on")
        return state


@dataclass(frozen=True)
class Decision:
    """A round's outcome: the new per-image state and what it did (counts for cleaning.csv)."""

    flagged: np.ndarray
    keep: np.ndarray
    labels: np.ndarray
    weights: np.ndarray
    estimated_rate: float
    rate: float
    separation: float
    counts: dict[str, int]


def flag_top(score: np.ndarray, rate: float) -> np.ndarray:
    """Bool [N]: the ``round(rate * N)`` highest scores (stable: among ties, lower indices first)."""
    score = np.asarray(score, dtype=np.float64)
    flagged = np.zeros(len(score), dtype=bool)
    flagged[np.argsort(-score, kind="stable")[: int(round(rate * len(score)))]] = True
    return flagged


def drop_flagged(flagged: np.ndarray, labels: np.ndarray, num_identities: int, num_instances: int,
                 min_images: int) -> tuple[np.ndarray, dict[str, int]]:
    """``(keep [N], counts)``: flagged images out; identities under ``min_images`` kept images removed.

    Only identities that lost a flagged image count: ``identities_removed`` (left with fewer than
    ``min_images``), ``identities_resampled`` (left with min_images..K-1 images, drawn with replacement). Raises
    ValueError when fewer than P identities would remain (no PK batch could be drawn)."""
    keep = ~np.asarray(flagged, dtype=bool)
    classes, inverse = np.unique(labels, return_inverse=True)
    kept_per_class = np.bincount(inverse, weights=keep, minlength=len(classes)).astype(np.int64)
    lost = kept_per_class < np.bincount(inverse, minlength=len(classes))  # identities that lost an image
    removed = lost & (kept_per_class < min_images)
    keep &= ~removed[inverse]
    remaining = len(classes) - int(removed.sum())
    if remaining < num_identities:
        raise ValueError(f"train.cleaning: dropping {int(flagged.sum())} images would leave {remaining} identities, "
                         f"fewer than the P={num_identities} a batch needs; lower train.cleaning.rate, max_rate or "
                         "min_images")
    resampled = lost & ~removed & (kept_per_class < num_instances)
    return keep, {"identities_removed": int(removed.sum()), "identities_resampled": int(resampled.sum())}


def relabel_flagged(flagged: np.ndarray, labels: np.ndarray, probs: np.ndarray,
                    confidence: float) -> np.ndarray:
    """New labels [N]: a flagged image takes its classifier's argmax when that probability >= ``confidence``."""
    if probs.ndim != 2 or len(probs) != len(labels) or probs.shape[1] <= int(labels.max()):
        raise ValueError(f"relabel: classifier probabilities {probs.shape} do not cover the {len(labels)} images' "
                         f"labels 0..{int(labels.max())} (the classifier's class space must be the training labels')")
    best, top = probs.argmax(axis=1), probs.max(axis=1)
    return np.where(flagged & (top >= confidence), best, labels).astype(np.int64)


def classifier_probabilities(outputs: dict[str, torch.Tensor], labels: np.ndarray, terms: Sequence) -> np.ndarray:
    """Softmax [N, C] of the first classifier term's logits (float64)."""
    from reid_robust.losses.base import ClassifierLoss

    term = next((t for t in terms if isinstance(t.module, ClassifierLoss)), None)
    if term is None:
        raise ValueError("train.cleaning.action=relabel needs a classifier term in loss.terms")
    with torch.no_grad():
        logits = term.module.logits(outputs[term.input], torch.as_tensor(labels))
    return torch.softmax(logits.double(), dim=1).cpu().numpy()


def decide(outputs: dict[str, torch.Tensor], state: CleaningState, terms: Sequence, cleaning: CleaningConfig,
           sampler: SamplerConfig, seed: int = 0) -> Decision:
    """Score the images under ``state.labels``, estimate the rate, flag and act (see the module docstring).
    Inputs are the model's outputs, the current labels and the loss terms only: never the noise manifest."""
    labels = state.labels
    scores = suspicion_scores(outputs, labels, terms, sampler.num_identities, sampler.num_instances, k=cleaning.k,
                              passes=cleaning.passes, seed=seed)
    if cleaning.component not in scores:
        raise ValueError(f"train.cleaning.component={cleaning.component}: the loss terms give no such score; "
                         f"available: {', '.join(k for k in scores if k != 'score')}")
    estimate = estimate_rate(scores[cleaning.component], cleaning.min_separation, cleaning.max_rate, seed,
                             boundary=WRONG_SIDE[cleaning.component])
    rate = min(estimate.rate * cleaning.rate_scale, cleaning.max_rate) if cleaning.rate is None else cleaning.rate
    flagged = flag_top(scores["score"], rate)
    keep, new_labels, weights = state.keep.copy(), labels.copy(), state.weights.copy()
    counts = {"identities_removed": 0, "identities_resampled": 0, "images_relabelled": 0}
    if cleaning.action == "drop":
        keep, found = drop_flagged(flagged, labels, sampler.num_identities, sampler.num_instances,
                                   cleaning.min_images)
        counts.update(found)
    elif cleaning.action == "relabel":
        new_labels = relabel_flagged(flagged, labels, classifier_probabilities(outputs, labels, terms),
                                     cleaning.relabel_confidence)
        counts["images_relabelled"] = int((new_labels != labels).sum())
    elif cleaning.action == "weight":
        clean_probability = 1.0 - estimate.posterior if estimate.rate > 0 else np.zeros(len(labels))
        weights = np.where(flagged, clean_probability, 1.0).astype(np.float32)
    counts.update(images_flagged=int(flagged.sum()), images_dropped=int((~keep).sum()))
    return Decision(flagged, keep, new_labels, weights, estimate.rate, float(rate), estimate.separation, counts)
