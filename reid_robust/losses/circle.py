"""Circle loss, pair-based form.

Sun et al., "Circle Loss: A Unified Perspective of Pair Similarity Optimization", CVPR 2020, eq. (4):
``L_i = softplus(LSE_n[gamma a_n (s_n - m)] + LSE_p[-gamma a_p (s_p - 1 + m)])`` with detached
``a_p = [1 + m - s_p]_+`` and ``a_n = [s_n + m]_+`` on cosine similarities; mean over anchors that have a
positive and a negative. Defaults m = 0.25, gamma = 128 (the paper's ReID setting; PML uses 0.4 / 80).

Sample weights: each pair term ``exp(z_ij)`` inside the two log-sum-exps becomes ``m_ij exp(z_ij)``,
``m_ij = min(w_i, w_j)``, and the valid anchors are averaged with weights ``w_i`` (``sum w L / sum w``);
images of weight 0 are removed (their pairs leave both sets).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import MetricLoss
from .pairwise import (
    active_pairs,
    cosine_similarity_matrix,
    log_pair_weights,
    masked_logsumexp,
    masked_softmax,
    negative_mask,
    pair_weights_to_sample_weights,
    positive_mask,
    weighted_mean,
    zero_loss,
)


def circle_logits(sim: Tensor, pos: Tensor, m: float, gamma: float) -> Tensor:
    """Logits [N, M]: ``-gamma a_p (s - (1 - m))`` on positive entries, ``gamma a_n (s - m)`` elsewhere,
    with the detached weights ``a_p = [1 + m - s]_+`` and ``a_n = [s + m]_+``."""
    s = sim.detach()
    coef = torch.where(pos, F.relu(1.0 + m - s).mul_(-gamma), F.relu(s + m).mul_(gamma))
    offset = torch.where(pos, 1.0 - m, m)
    return coef * (sim - offset)


def circle_sample_weights(sim: Tensor, logits: Tensor, total: Tensor, pos: Tensor, neg: Tensor, valid: Tensor,
                          m: float) -> Tensor:
    """Per-sample share of ``|dL/dS|`` = sigmoid(total) x softmax within the set x gamma alpha (detached)."""
    scale = torch.sigmoid(total) * valid
    slope = torch.where(pos, F.relu(1.0 + m - sim), F.relu(sim + m))
    soft = masked_softmax(logits, pos, dim=1) + masked_softmax(logits, neg, dim=1)
    return pair_weights_to_sample_weights(scale[:, None] * soft * slope)


class CircleLoss(MetricLoss):
    """Circle loss (pair form) on cosine similarities.

    Args:
        m: relaxation margin (0.25). gamma: scale (128).
    ``last_sample_weights``: each sample's share of ``|dL/dS|`` over its pairs (hardness).
    """

    weights_meaning = "hardness"

    def __init__(self, m: float = 0.25, gamma: float = 128.0) -> None:
        super().__init__()
        if gamma <= 0:
            raise ValueError(f"CircleLoss: gamma must be > 0, got {gamma}")
        self.m = float(m)
        self.gamma = float(gamma)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        sim = cosine_similarity_matrix(embeddings)
        pos, neg = active_pairs(positive_mask(labels), weights), active_pairs(negative_mask(labels), weights)
        valid = pos.any(dim=1) & neg.any(dim=1)
        logits = circle_logits(sim, pos, self.m, self.gamma)
        weighted_logits = logits if weights is None else logits + log_pair_weights(weights)
        total = masked_logsumexp(weighted_logits, pos, dim=1) + masked_logsumexp(weighted_logits, neg, dim=1)
        total = torch.where(valid, total, torch.zeros_like(total))
        s, z, t = sim.detach(), logits.detach(), total.detach()
        self._record_weights_lazily(lambda: circle_sample_weights(s, z, t, pos, neg, valid, self.m))
        if not bool(valid.any()):
            return zero_loss(embeddings)
        return weighted_mean(F.softplus(total[valid]), None if weights is None else weights[valid])

    def extra_repr(self) -> str:
        return f"m={self.m}, gamma={self.gamma}"
