"""Instance Cross Entropy.

Wang, Kodirov, Hua, Robertson, "Instance Cross Entropy for Deep Metric Learning", arXiv:1911.09976, 2019.
On cosine similarities with scale s, each positive i of anchor a competes with the anchor's negatives:
``p(i|a) = exp(s S_ai) / (exp(s S_ai) + sum_{N_a} exp(s S_aj))``, ``L_a = -mean_{i in P_a} log p(i|a)``,
averaged over anchors that have at least one positive and one negative (others are skipped). The
gradient reweights samples: ``|dL/dS_ai| = s (1 - p(i|a)) / |P_a|`` for positives and a softmax over the
negatives, so harder pairs weigh more and ``s`` sets how sharply.

Sample weights: each negative's ``exp(s S_aj)`` in the denominator becomes ``m_aj exp(s S_aj)``
(``m = min(w_a, w_j)``), the mean over positives a weighted mean ``sum m_ai (-log p) / sum m_ai``, and the
valid anchors are averaged with weights ``w_a``; images of weight 0 are removed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import MetricLoss
from .pairwise import (
    active_pairs,
    cosine_similarity_matrix,
    log_pair_weights,
    masked_logsumexp,
    negative_mask,
    pair_weight_matrix,
    pair_weights_to_sample_weights,
    positive_mask,
    safe_divide,
    weighted_mean,
    zero_loss,
)


def ice_pair_weights(scaled_sim: Tensor, pos: Tensor, neg: Tensor, neg_lse: Tensor) -> Tensor:
    """``|dL_a/d(s S_aj)|`` [N, N] of the ICE loss (before the 1/num_anchors factor), detached.

    Positives: ``(1 - p(i|a)) / |P_a|``; negatives: ``exp(s S_aj) sum_i 1 / (exp(s S_ai) + Z_a) / |P_a|``.
    """
    z = scaled_sim.detach()
    num_pos = pos.sum(dim=1, keepdim=True).clamp_min(1).to(z.dtype)
    log_denominator = torch.logaddexp(z, neg_lse.detach().unsqueeze(1))     # log(e^{z_ai} + Z_a)
    p = torch.exp(z - log_denominator)
    w_pos = torch.where(pos, (1.0 - p) / num_pos, torch.zeros_like(z))
    inv = masked_logsumexp(-log_denominator, pos, dim=1)                    # log sum_i 1/(e^{z_ai}+Z_a)
    w_neg = torch.where(neg, torch.exp(z + inv.unsqueeze(1)) / num_pos, torch.zeros_like(z))
    return w_pos + w_neg


class InstanceCrossEntropyLoss(MetricLoss):
    """Instance cross entropy with scale ``s`` (inverse temperature).

    Args:
        scale: s (16 here; the paper's default is not confirmed; s = 1/0.07 ~ 14 is SimCLR's setting).
    ``last_sample_weights``: each sample's share of the gradient pair weights (hardness).
    """

    weights_meaning = "hardness"

    def __init__(self, scale: float = 16.0) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"InstanceCrossEntropyLoss: scale must be > 0, got {scale}")
        self.scale = float(scale)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        z = self.scale * cosine_similarity_matrix(embeddings)
        pos, neg = active_pairs(positive_mask(labels), weights), active_pairs(negative_mask(labels), weights)
        valid = pos.any(dim=1) & neg.any(dim=1)
        pos = pos & valid.unsqueeze(1)
        neg = neg & valid.unsqueeze(1)
        neg_logits = z if weights is None else z + log_pair_weights(weights)
        neg_lse = torch.where(valid, masked_logsumexp(neg_logits, neg, dim=1), torch.zeros(1, dtype=z.dtype,
                                                                                            device=z.device))
        log_p = z - torch.logaddexp(z, neg_lse.unsqueeze(1))
        if weights is None:
            num_pos = pos.sum(dim=1).clamp_min(1).to(z.dtype)
            per_anchor = -torch.where(pos, log_p, torch.zeros_like(log_p)).sum(dim=1) / num_pos
        else:
            m = torch.where(pos, pair_weight_matrix(weights), 0.0)
            per_anchor = -safe_divide((m * torch.where(pos, log_p, 0.0)).sum(dim=1), m.sum(dim=1))
        zd, lse = z.detach(), neg_lse.detach()
        self._record_weights_lazily(lambda: pair_weights_to_sample_weights(ice_pair_weights(zd, pos, neg, lse)))
        if not bool(valid.any()):
            return zero_loss(embeddings)
        return weighted_mean(per_anchor[valid], None if weights is None else weights[valid])

    def extra_repr(self) -> str:
        return f"scale={self.scale}"
