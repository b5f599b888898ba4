"""Contrastive losses with positive and negative margins.

Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006, in the
pytorch-metric-learning form: ``mean_{pos, >0} [d - m_pos]_+ + mean_{neg, >0} [m_neg - d]_+``, each part
averaged over its non-zero terms only. ``xbm_contrastive`` is the cosine form used with a memory in
XBM / PRISM (Liu et al., CVPR 2021).

Sample weights: a pair weighs ``m_ij = min(w_i, w_j)``; each part becomes ``sum m h / sum m`` over the same
non-zero terms (pairs of a weight-0 image removed). ``xbm_contrastive`` sums ``m_ij`` times each pair term.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import MetricLoss
from .pairwise import (
    active_pairs,
    batch_distance_matrix,
    negative_mask,
    pair_weight_matrix,
    positive_mask,
    safe_divide,
)


def contrastive_from_distances(dist: Tensor, pos: Tensor, neg: Tensor, pos_margin: float,
                               neg_margin: float, pair_weights: Tensor | None = None) -> Tensor:
    """PML-style contrastive loss from a distance matrix [N, M] and boolean pair masks [N, M]; with
    ``pair_weights`` [N, M] each part is the weighted mean of its non-zero terms."""
    # one hinge matrix: positive entries hold [d - m_pos]_+, all others [m_neg - d]_+
    hinge = F.relu(torch.where(pos, dist - pos_margin, neg_margin - dist))
    nonzero = hinge > 0
    if pair_weights is not None:
        wp = torch.where(pos & nonzero, pair_weights, 0.0)
        wn = torch.where(neg & nonzero, pair_weights, 0.0)
        return safe_divide((wp * hinge).sum(), wp.sum()) + safe_divide((wn * hinge).sum(), wn.sum())
    pos_count = (pos & nonzero).sum().clamp_min(1).to(hinge.dtype)
    neg_count = (neg & nonzero).sum().clamp_min(1).to(hinge.dtype)
    return torch.where(pos, hinge, 0.0).sum() / pos_count + torch.where(neg, hinge, 0.0).sum() / neg_count


def xbm_contrastive(sim: Tensor, pos: Tensor, neg: Tensor, neg_threshold: float = 0.5,
                    num_anchors: int | Tensor | None = None, pair_weights: Tensor | None = None) -> Tensor:
    """Cosine contrastive loss of XBM/PRISM: ``(sum_pos (1 - S) + sum_{neg, S > t} S) / N``.

    ``sim`` [n, M] cosine similarities of n anchors to M references; the sum runs over all pairs (each times
    ``pair_weights`` [n, M] when given) and is divided by ``num_anchors`` (default n; PRISM's memory term
    divides by the whole batch, dropped or not; a weighted caller passes its sum of anchor weights).
    """
    pos_terms = torch.where(pos, 1.0 - sim, torch.zeros_like(sim))
    neg_terms = torch.where(neg & (sim > neg_threshold), sim, torch.zeros_like(sim))
    if pair_weights is not None:
        pos_terms, neg_terms = pair_weights * pos_terms, pair_weights * neg_terms
    total = pos_terms.sum() + neg_terms.sum()
    if isinstance(num_anchors, Tensor):
        return safe_divide(total, num_anchors)
    return total / (sim.shape[0] if num_anchors is None else num_anchors)


class ContrastiveLoss(MetricLoss):
    """Contrastive loss on (by default L2-normalised) Euclidean distances.

    Args:
        pos_margin: positives closer than this cost nothing (PML default 0).
        neg_margin: negatives farther than this cost nothing (PML default 1).
        normalize: L2-normalise the embeddings first (PML default).
    """

    def __init__(self, pos_margin: float = 0.0, neg_margin: float = 1.0, normalize: bool = True) -> None:
        super().__init__()
        if neg_margin <= pos_margin:
            raise ValueError(f"ContrastiveLoss: neg_margin ({neg_margin}) must exceed pos_margin ({pos_margin})")
        self.pos_margin = float(pos_margin)
        self.neg_margin = float(neg_margin)
        self.normalize = bool(normalize)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        dist = batch_distance_matrix(embeddings, self.normalize)
        pos, neg = active_pairs(positive_mask(labels), weights), active_pairs(negative_mask(labels), weights)
        pair_weights = None if weights is None else pair_weight_matrix(weights)
        return contrastive_from_distances(dist, pos, neg, self.pos_margin, self.neg_margin, pair_weights)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, normalize={self.normalize}"
