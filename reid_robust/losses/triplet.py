"""Triplet loss with batch-hard, batch-all and semi-hard mining.

Hermans, Beyer, Leibe, "In Defense of the Triplet Loss for Person Re-Identification", arXiv 1703.07737
(batch-hard, batch-all, soft margin); Schroff et al., "FaceNet", CVPR 2015 (semi-hard).
Per triplet ``l(a, p, n) = [d_ap - d_an + margin]_+`` or, with ``soft=True``, ``softplus(d_ap - d_an)``.

Sample weights: a triplet weighs ``t = min(w_a, w_p, w_n)``; every mean below becomes ``sum(t l) / sum(t)``
over the same set of triplets. Mining runs as without weights on the unweighted distances, among the images of
positive weight (an image of weight 0 is removed); the weight is applied to the mined triplets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import MetricLoss
from .pairwise import (
    active_pairs,
    batch_distance_matrix,
    masked_max,
    masked_min,
    negative_mask,
    pair_weight_matrix,
    positive_mask,
    safe_divide,
    weighted_mean,
    zero_loss,
)

MINING_MODES = ("batch_hard", "batch_all", "semi_hard")


def triplet_hinge(d_ap: Tensor, d_an: Tensor, margin: float, soft: bool) -> Tensor:
    """Elementwise triplet loss: ``[d_ap - d_an + margin]_+`` or ``softplus(d_ap - d_an)``."""
    if soft:
        return F.softplus(d_ap - d_an)
    return F.relu(d_ap - d_an + margin)


def batch_hard_triplet(dist: Tensor, pos: Tensor, neg: Tensor, margin: float, soft: bool,
                       weights: Tensor | None = None) -> Tensor | None:
    """Hermans et al. eq. (5): per anchor the farthest positive and closest negative.

    ``dist`` [N, N]; ``pos``/``neg`` boolean masks. Returns the mean over anchors having at least one
    positive and one negative (weighted by ``min(w_a, w_p*, w_n*)`` with ``weights`` [N]), or None when there
    is no such anchor.
    """
    valid = pos.any(dim=1) & neg.any(dim=1)
    if not bool(valid.any()):
        return None
    hardest_pos = masked_max(dist, pos, dim=1)
    hardest_neg = masked_min(dist, neg, dim=1)
    losses = triplet_hinge(hardest_pos[valid], hardest_neg[valid], margin, soft)
    if weights is None:
        return losses.mean()
    d = dist.detach()
    p_idx = torch.where(pos, d, float("-inf")).argmax(dim=1)  # the first hardest, as masked_max's value
    n_idx = torch.where(neg, d, float("inf")).argmin(dim=1)
    t = torch.minimum(weights, torch.minimum(weights[p_idx], weights[n_idx]))
    return weighted_mean(losses, t[valid])


def batch_all_triplet(dist: Tensor, pos: Tensor, neg: Tensor, margin: float, soft: bool,
                      weights: Tensor | None = None) -> Tensor | None:
    """All (a, p, n) triplets; hinge: mean over non-zero losses (Hermans' "BA != 0"); soft: plain mean.
    With ``weights`` [N] the means weigh each triplet by ``min(w_a, w_p, w_n)``.

    Anchors are processed in blocks so that no block tensor exceeds about 2^24 elements.
    """
    if not _has_triplet(pos, neg):
        return None
    n = dist.shape[0]
    block = max(1, (1 << 24) // max(n * n, 1))
    total = dist.sum() * 0.0
    count = 0
    weight_sum = torch.zeros((), dtype=dist.dtype, device=dist.device)
    pair_w = None if weights is None else pair_weight_matrix(weights)
    for start in range(0, n, block):
        d = dist[start:start + block]
        valid = pos[start:start + block].unsqueeze(2) & neg[start:start + block].unsqueeze(1)
        losses = triplet_hinge(d.unsqueeze(2), d.unsqueeze(1), margin, soft)
        keep = valid if soft else valid & (losses > 0)
        if pair_w is None or weights is None:
            total = total + torch.where(keep, losses, torch.zeros_like(losses)).sum()
            count += int(keep.sum())
            continue
        t = torch.where(keep, torch.minimum(pair_w[start:start + block].unsqueeze(2), weights.view(1, 1, -1)), 0.0)
        total = total + (t * losses).sum()
        weight_sum = weight_sum + t.sum()
    if pair_w is not None:
        return safe_divide(total, weight_sum)
    return total / max(count, 1)


def _has_triplet(pos: Tensor, neg: Tensor) -> bool:
    """True when some anchor has both a positive and a negative."""
    return bool((pos.any(dim=1) & neg.any(dim=1)).any())


def semi_hard_triplet(dist: Tensor, pos: Tensor, neg: Tensor, margin: float, soft: bool,
                      weights: Tensor | None = None) -> Tensor | None:
    """FaceNet semi-hard mining as in TensorFlow's ``triplet_semihard_loss``.

    For each positive pair (a, p) the negative is the closest one farther than the positive
    (``d_an > d_ap``); if none is farther, the farthest negative. Mean over positive pairs whose anchor
    has a negative (weighted by ``min(w_a, w_p, w_n)`` with ``weights`` [N]).
    """
    a_idx, p_idx = torch.nonzero(pos & neg.any(dim=1, keepdim=True), as_tuple=True)
    if a_idx.numel() == 0:
        return None
    d_ap = dist[a_idx, p_idx]
    d_a = dist[a_idx]                      # [P, N]
    n_mask = neg[a_idx]                    # [P, N]
    outside = n_mask & (d_a > d_ap.unsqueeze(1))
    semi = masked_min(d_a, outside, dim=1)
    easiest = masked_max(d_a, n_mask, dim=1)
    d_an = torch.where(outside.any(dim=1), semi, easiest)
    losses = triplet_hinge(d_ap, d_an, margin, soft)
    if weights is None:
        return losses.mean()
    da = d_a.detach()
    semi_idx = torch.where(outside, da, float("inf")).argmin(dim=1)
    easiest_idx = torch.where(n_mask, da, float("-inf")).argmax(dim=1)
    n_idx = torch.where(outside.any(dim=1), semi_idx, easiest_idx)
    t = torch.minimum(torch.minimum(weights[a_idx], weights[p_idx]), weights[n_idx])
    return weighted_mean(losses, t)


_MINERS = {"batch_hard": batch_hard_triplet, "batch_all": batch_all_triplet, "semi_hard": semi_hard_triplet}


class TripletLoss(MetricLoss):
    """Triplet loss on Euclidean distances.

    Args:
        margin: hinge margin (ignored when ``soft``); BoT/ReID default 0.3 on raw features.
        mining: ``"batch_hard"`` (Hermans), ``"batch_all"`` (mean over non-zero), ``"semi_hard"`` (FaceNet).
        soft: soft-margin form ``softplus(d_ap - d_an)``.
        normalize: L2-normalise embeddings first (distances then lie in [0, 2]).
    """

    def __init__(self, margin: float = 0.3, mining: str = "batch_hard", soft: bool = False,
                 normalize: bool = False) -> None:
        super().__init__()
        if mining not in MINING_MODES:
            raise ValueError(f"TripletLoss: mining must be one of {MINING_MODES}, got {mining!r}")
        if margin < 0:
            raise ValueError(f"TripletLoss: margin must be >= 0, got {margin}")
        self.margin = float(margin)
        self.mining = mining
        self.soft = bool(soft)
        self.normalize = bool(normalize)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        dist = batch_distance_matrix(embeddings, self.normalize)
        pos, neg = active_pairs(positive_mask(labels), weights), active_pairs(negative_mask(labels), weights)
        loss = _MINERS[self.mining](dist, pos, neg, self.margin, self.soft, weights)
        return zero_loss(embeddings) if loss is None else loss

    def extra_repr(self) -> str:
        return f"margin={self.margin}, mining={self.mining!r}, soft={self.soft}, normalize={self.normalize}"
