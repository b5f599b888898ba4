"""Ranked List Loss (paper form, RLL-Simpler by default).

Wang, Hua, Kodirov, Hu, Garnier, Robertson, "Ranked List Loss for Deep Metric Learning", CVPR 2019
(eqs. 2-8), on L2-normalised Euclidean distances with negative boundary alpha and margin m:
``L_i = sum_{P*_i} w+ (d - (alpha - m)) + lambda sum_{N*_i} w- (alpha - d)`` over the violating sets
``P*_i = {d > alpha - m}``, ``N*_i = {d < alpha}``, with constant weights ``w+ = softmax(T_p (d - alpha + m))``
(uniform for T_p = 0) and ``w- = softmax(T_n (alpha - d))``; mean over all anchors.

Sample weights: each set's weights become ``m_ij exp(T v_ij)`` normalised over the set (``m = min(w_i, w_j)``;
with T = 0 a weighted mean over the violating pairs), and the anchors are averaged with weights ``w_i``
(``sum w L / sum w`` over all anchors); images of weight 0 are removed.
"""

from __future__ import annotations

from torch import Tensor

from .base import MetricLoss
from .pairwise import (
    active_pairs,
    l2_normalize,
    log_pair_weights,
    masked_sum,
    negative_mask,
    pair_weights_to_sample_weights,
    positive_mask,
    unit_euclidean_distance_matrix,
    weighted_mean,
)
from .weighting import temperature_softmax_weights


class RankedListLoss(MetricLoss):
    """Ranked list loss.

    Args:
        margin: m, gap between the positive boundary alpha - m and the negative boundary alpha (0.4).
        boundary: alpha, the negative boundary (1.2, paper text; official prototxts 1.4).
        neg_temperature: T_n of the negative weighting (10).
        pos_temperature: T_p of the positive weighting (0: uniform, "RLL-Simpler").
        neg_weight: lambda balancing the negative term (1).
    ``last_sample_weights``: each sample's share of the pair weights (hardness).
    """

    weights_meaning = "hardness"

    def __init__(self, margin: float = 0.4, boundary: float = 1.2, neg_temperature: float = 10.0,
                 pos_temperature: float = 0.0, neg_weight: float = 1.0) -> None:
        super().__init__()
        if not 0 < margin <= boundary:
            raise ValueError(f"RankedListLoss: need 0 < margin <= boundary, got margin={margin}, "
                             f"boundary={boundary}")
        if neg_temperature < 0 or pos_temperature < 0 or neg_weight < 0:
            raise ValueError("RankedListLoss: temperatures and neg_weight must be >= 0, got "
                             f"{neg_temperature}, {pos_temperature}, {neg_weight}")
        self.margin, self.boundary = float(margin), float(boundary)
        self.neg_temperature, self.pos_temperature = float(neg_temperature), float(pos_temperature)
        self.neg_weight = float(neg_weight)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        dist = unit_euclidean_distance_matrix(l2_normalize(embeddings))
        pos_boundary = self.boundary - self.margin
        pos_violation = dist - pos_boundary
        neg_violation = self.boundary - dist
        pos = active_pairs(positive_mask(labels), weights) & (pos_violation.detach() > 0)
        neg = active_pairs(negative_mask(labels), weights) & (neg_violation.detach() > 0)
        log_m = log_pair_weights(weights)
        w_pos = temperature_softmax_weights(pos_violation, pos, self.pos_temperature, log_m)
        w_neg = temperature_softmax_weights(neg_violation, neg, self.neg_temperature, log_m)
        per_anchor = (masked_sum(w_pos * pos_violation, pos, dim=1)
                      + self.neg_weight * masked_sum(w_neg * neg_violation, neg, dim=1))
        self._record_weights(pair_weights_to_sample_weights(w_pos + self.neg_weight * w_neg))
        return weighted_mean(per_anchor, weights)

    def extra_repr(self) -> str:
        return (f"margin={self.margin}, boundary={self.boundary}, neg_temperature={self.neg_temperature}, "
                f"pos_temperature={self.pos_temperature}, neg_weight={self.neg_weight}")
