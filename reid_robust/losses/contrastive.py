"""Contrastive losses with positive and negative margins.

Hadsell, Chopra, LeCun, "Dimensionality Reduction by Learning an Invariant Mapping", CVPR 2006, in the
pytorch-metric-learning form: ``mean_{pos, >0} [d - m_pos]_+ + mean_{neg, >0} [m_neg - d]_+``, each part
averaged over its non-zero terms only. ``xbm_contrastive`` is the cosine form used with a memory in
XBM / PRISM (Liu et al., CVPR 2021).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import MetricLoss
from .pairwise import (
    batch_distance_matrix,
    negative_mask,
    positive_mask,
)


def contrastive_from_distances(dist: Tensor, pos: Tensor, neg: Tensor, pos_margin: float,
                               neg_margin: float) -> Tensor:
    """PML-style contrastive loss from a distance matrix [N, M] and boolean pair masks [N, M]."""
    # one hinge matrix: positive entries hold [d - m_pos]_+, all others [m_neg - d]_+
    hinge = F.relu(torch.where(pos, dist - pos_margin, neg_margin - dist))
    nonzero = hinge > 0
    pos_count = (pos & nonzero).sum().clamp_min(1).to(hinge.dtype)
    neg_count = (neg & nonzero).sum().clamp_min(1).to(hinge.dtype)
    return torch.where(pos, hinge, 0.0).sum() / pos_count + torch.where(neg, hinge, 0.0).sum() / neg_count


def xbm_contrastive(sim: Tensor, pos: Tensor, neg: Tensor, neg_threshold: float = 0.5,
                    num_anchors: int | None = None) -> Tensor:
    """Cosine contrastive loss of XBM/PRISM: ``(sum_pos (1 - S) + sum_{neg, S > t} S) / N``.

    ``sim`` [n, M] cosine similarities of n anchors to M references; the sum runs over all pairs and is
    divided by ``num_anchors`` (default n; PRISM's memory term divides by the whole batch, dropped or not).
    """
    pos_loss = torch.where(pos, 1.0 - sim, torch.zeros_like(sim)).sum()
    neg_loss = torch.where(neg & (sim > neg_threshold), sim, torch.zeros_like(sim)).sum()
    return (pos_loss + neg_loss) / (sim.shape[0] if num_anchors is None else num_anchors)


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

    def compute(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        dist = batch_distance_matrix(embeddings, self.normalize)
        return contrastive_from_distances(dist, positive_mask(labels), negative_mask(labels),
                                          self.pos_margin, self.neg_margin)

    def extra_repr(self) -> str:
        return f"pos_margin={self.pos_margin}, neg_margin={self.neg_margin}, normalize={self.normalize}"
