"""Multi-Similarity loss with its pair miner.

Wang, Han, Huang, Dong, Scott, "Multi-Similarity Loss with General Pair Weighting for Deep Metric
Learning", CVPR 2019, eqs. (11)-(12) (mining) and (15) (loss), on cosine similarities S:
``L_i = 1/alpha log(1 + sum_{P~_i} exp(-alpha (S - base))) + 1/beta log(1 + sum_{N~_i} exp(beta (S - base)))``,
averaged over all N anchors (anchors with nothing mined count as 0, as in the official code and PML).
``base`` is the paper's lambda: the paper states 1, the official code and pytorch-metric-learning use 0.5;
we follow the code (default 0.5) and take beta = 50 from the paper (the official config uses 40).

Sample weights: each pair term ``exp(z_ij)`` inside the two sums becomes ``m_ij exp(z_ij)``,
``m_ij = min(w_i, w_j)``, and the anchors are averaged with weights ``w_i``: ``sum_i w_i L_i / sum_i w_i``
over all anchors (weights scaled to maximum 1, so equal weights give the unweighted loss). Mining runs on the
unweighted similarities among the images of positive weight.
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
    masked_softmax,
    negative_mask,
    pair_weights_to_sample_weights,
    positive_mask,
    weighted_mean,
)


def multi_similarity_mining(sim: Tensor, pos: Tensor, neg: Tensor, epsilon: float) -> tuple[Tensor, Tensor]:
    """MS pair mining on similarities [N, M]: keep a negative if ``S + eps > min positive S`` and a
    positive if ``S - eps < max negative S`` of the same anchor. Returns the kept (pos, neg) masks."""
    s = sim.detach()
    inf = torch.full_like(s, float("inf"))
    min_pos = torch.where(pos, s, inf).min(dim=1, keepdim=True).values       # +inf without positives
    max_neg = torch.where(neg, s, -inf).max(dim=1, keepdim=True).values      # -inf without negatives
    return pos & (s - epsilon < max_neg), neg & (s + epsilon > min_pos)


def multi_similarity_per_anchor(sim: Tensor, pos: Tensor, neg: Tensor, alpha: float, beta: float,
                                base: float, log_weights: Tensor | float = 0.0) -> Tensor:
    """Per-anchor MS loss [N]; ``log(1 + sum exp)`` as a logsumexp with a zero logit (0 for empty sets).
    ``log_weights`` [N, M]: ``log m_ij`` added to each pair's logit (``log_pair_weights``)."""
    pos_logits, neg_logits = -alpha * (sim - base), beta * (sim - base)
    if isinstance(log_weights, Tensor):
        pos_logits, neg_logits = pos_logits + log_weights, neg_logits + log_weights
    pos_term = masked_logsumexp(pos_logits, pos, dim=1, add_zero=True) / alpha
    neg_term = masked_logsumexp(neg_logits, neg, dim=1, add_zero=True) / beta
    return pos_term + neg_term


def multi_similarity_pair_weights(sim: Tensor, pos: Tensor, neg: Tensor, alpha: float, beta: float,
                                  base: float) -> Tensor:
    """GPW pair weights ``|dL_i/dS_ij|`` [N, M] of the MS loss (paper eqs. (13)-(14)), detached."""
    s = sim.detach()
    w_pos = masked_softmax(-alpha * (s - base), pos, dim=1, add_zero=True)
    w_neg = masked_softmax(beta * (s - base), neg, dim=1, add_zero=True)
    return w_pos + w_neg


class MultiSimilarityLoss(MetricLoss):
    """Multi-Similarity loss on cosine similarities, with the MS miner (``mining=True``).

    Args:
        alpha: positive scale (2). beta: negative scale (50). base: similarity offset lambda (0.5).
        epsilon: miner margin (0.1). mining: apply the MS miner before the loss.
    ``last_sample_weights``: each sample's share of the pair weights (hardness).
    """

    weights_meaning = "hardness"

    def __init__(self, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5, epsilon: float = 0.1,
                 mining: bool = True) -> None:
        super().__init__()
        if alpha <= 0 or beta <= 0:
            raise ValueError(f"MultiSimilarityLoss: alpha and beta must be > 0, got {alpha}, {beta}")
        if epsilon < 0:
            raise ValueError(f"MultiSimilarityLoss: epsilon must be >= 0, got {epsilon}")
        self.alpha, self.beta, self.base = float(alpha), float(beta), float(base)
        self.epsilon = float(epsilon)
        self.mining = bool(mining)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        sim = cosine_similarity_matrix(embeddings)
        pos, neg = active_pairs(positive_mask(labels), weights), active_pairs(negative_mask(labels), weights)
        if self.mining:
            pos, neg = multi_similarity_mining(sim, pos, neg, self.epsilon)
        per_anchor = multi_similarity_per_anchor(sim, pos, neg, self.alpha, self.beta, self.base,
                                                 log_pair_weights(weights))
        s = sim.detach()
        self._record_weights_lazily(lambda: pair_weights_to_sample_weights(
            multi_similarity_pair_weights(s, pos, neg, self.alpha, self.beta, self.base)))
        return weighted_mean(per_anchor, weights)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, beta={self.beta}, base={self.base}, epsilon={self.epsilon}, "
                f"mining={self.mining}")
