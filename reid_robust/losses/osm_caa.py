"""Online Soft Mining + Class-Aware Attention: a weighted contrastive loss plus an ID loss.

Wang, Hua, Kodirov, Hu, Robertson, "Deep Metric Learning by Online Soft Mining and Class-Aware Attention",
AAAI 2019. On L2-normalised embeddings with distances d:
``L_WCL = 1/2 sum_pos w+ d^2 / 2 + 1/2 sum_neg w- [alpha - d]_+^2 / 2`` with
``w+ ~ exp(-d^2 / 2 s_osm^2) min(a_i, a_j)``, ``w- ~ [alpha - d]_+ min(a_i, a_j)`` (each normalised over its
set) and ``a_i = exp(-(1 - p_i)^2 / 2 s_caa^2)``, p_i the classifier's probability of the annotated label.
The full objective of the official code adds the classifier's cross entropy (``id_weight``).

Normalisation: the backward of the official Caffe layer (DistanceWeightedValidPairLossV5 over Caffe's
ContrastiveLoss, which divides by its number of pairs) is the gradient of ``L_WCL / P``, P = N(N-1)/2
unordered pairs (``normalization="pairs"``); ``"weights"`` (the default) stops at the per-set weight
normalisation, which weighs the metric term P times more against the ID term (1540x at batch 56).

Sample weights multiply the method's own pair weights: ``w+`` and ``w-`` of pair (i, j) are multiplied by
``min(w_i, w_j)`` before the per-set normalisation (pairs of a weight-0 image removed; with ``"pairs"``, N
counts the images of positive weight); the ID term is the weighted mean ``sum w_i CE_i / sum w_i`` (with
``confidence_weighted_id``, the Gaussian weights times ``w_i``, normalised to sum 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ClassifierLoss
from .pairwise import (
    DISTANCE_EPS,
    active_pairs,
    gram_matrix,
    l2_normalize,
    masked_sum,
    negative_mask,
    pair_weight_matrix,
    positive_mask,
    weighted_mean,
)
from .weighting import (
    class_aware_attention,
    gaussian_confidence_weights,
    osm_negative_weights,
    osm_positive_weights,
    pairwise_min,
    true_class_probability,
)

NORMALIZATIONS = ("weights", "pairs")


def weighted_contrastive(sq_dist: Tensor, dist: Tensor, pos: Tensor, neg: Tensor, pos_weights: Tensor,
                         neg_weights: Tensor, margin: float) -> Tensor:
    """``1/2 sum_pos w+ d^2/2 + 1/2 sum_neg w- [margin - d]_+^2 / 2`` with weights normalised per set
    (sum + 1e-12, as in the official layer). All inputs [N, N]; the weights are constants.
    Summing over ordered pairs with weights normalised over ordered pairs equals the same sum over unordered
    pairs (each pair counted once, as the official layer does)."""
    wp = torch.where(pos, pos_weights, torch.zeros_like(pos_weights))
    wn = torch.where(neg, neg_weights, torch.zeros_like(neg_weights))
    wp = wp / (wp.sum() + 1e-12)
    wn = wn / (wn.sum() + 1e-12)
    pos_term = masked_sum(wp * sq_dist, pos, dim=1).sum()
    neg_term = masked_sum(wn * torch.relu(margin - dist) ** 2, neg, dim=1).sum()
    return 0.25 * (pos_term + neg_term)


class OSMCAALoss(ClassifierLoss):
    """OSM + CAA weighted contrastive loss with its own classifier ``Linear(embedding_dim, num_classes)``.

    Args:
        margin: negative margin alpha on normalised distances (1.2).
        sigma_osm: width of the positive soft-mining Gaussian (0.8; code uses 1.0 on MARS, 0.6 on LPW).
        sigma_caa: width of the class-aware attention Gaussian (0.68).
        id_weight: weight of the classifier's cross entropy in the returned loss (1.0). The official
            prototxts give each ID loss loss_weight 1 against the pair-normalised metric term, so the official
            balance is ``normalization="pairs"`` with 1. This term is what trains the classifier; with 0
            the attention stays uniform unless the classifier's weights are trained or set elsewhere.
        confidence_weighted_id: weight the ID loss by a Gaussian of p (mean 0.5, std 0.18) as the
            official prototxts do; off by default.
        soft_mining / class_attention: switch either weighting off (uniform weights) for ablations.
        normalization: ``"weights"`` (default): the weighted contrastive loss as above, weights normalised per
            set; ``"pairs"``: that value divided by the number of unordered pairs N(N-1)/2, the official
            objective's scale (the official layer's backward equals this gradient, up to its ``d + 1e-4``
            in the negative pairs' denominator).
    ``last_sample_weights``: the attention a_i (reliability; low = the classifier doubts the label).
    """

    needs_positives = True  # a weighted contrastive loss on top of its classifier
    weights_meaning = "reliability"

    def __init__(self, num_classes: int, embedding_dim: int, margin: float = 1.2, sigma_osm: float = 0.8,
                 sigma_caa: float = 0.68, id_weight: float = 1.0, confidence_weighted_id: bool = False,
                 soft_mining: bool = True, class_attention: bool = True, normalization: str = "weights") -> None:
        super().__init__(num_classes, embedding_dim)
        if margin <= 0 or sigma_osm <= 0 or sigma_caa <= 0:
            raise ValueError(f"OSMCAALoss: margin, sigma_osm and sigma_caa must be > 0, "
                             f"got {margin}, {sigma_osm}, {sigma_caa}")
        if id_weight < 0:
            raise ValueError(f"OSMCAALoss: id_weight must be >= 0, got {id_weight}")
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"OSMCAALoss: normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
        self.normalization = normalization
        self.margin, self.sigma_osm, self.sigma_caa = float(margin), float(sigma_osm), float(sigma_caa)
        self.id_weight = float(id_weight)
        self.confidence_weighted_id = bool(confidence_weighted_id)
        self.soft_mining = bool(soft_mining)
        self.class_attention = bool(class_attention)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        logits = self.logits(embeddings, labels)
        p_true, _ = true_class_probability(logits, labels)
        attention = class_aware_attention(p_true, self.sigma_caa)
        self._record_weights(attention)

        sq_dist = (2.0 - 2.0 * gram_matrix(l2_normalize(embeddings))).clamp_min(0.0)  # unit vectors
        dist = sq_dist.clamp_min(DISTANCE_EPS).sqrt()
        pos, neg = active_pairs(positive_mask(labels), weights), active_pairs(negative_mask(labels), weights)
        if self.soft_mining:
            w_pos = osm_positive_weights(dist, self.sigma_osm)
            w_neg = osm_negative_weights(dist, self.margin)
        else:
            w_pos = torch.ones_like(dist)
            w_neg = (dist.detach() < self.margin).to(dist.dtype)
        if self.class_attention:
            pair_attention = pairwise_min(attention).to(dist.dtype)
            w_pos, w_neg = w_pos * pair_attention, w_neg * pair_attention
        if weights is not None:
            pair_weights = pair_weight_matrix(weights).to(dist.dtype)
            w_pos, w_neg = w_pos * pair_weights, w_neg * pair_weights
        loss = weighted_contrastive(sq_dist, dist, pos, neg, w_pos, w_neg, self.margin)
        n = embeddings.shape[0] if weights is None else int((weights > 0).sum())
        if self.normalization == "pairs" and n > 1:
            loss = loss / (n * (n - 1) / 2)
        if self.id_weight > 0:
            loss = loss + self.id_weight * self.id_loss(logits, labels, p_true, weights)
        return loss

    def id_loss(self, logits: Tensor, labels: Tensor, p_true: Tensor, weights: Tensor | None) -> Tensor:
        """The classifier's cross entropy: a (sample-weighted) mean, or the confidence-weighted sum."""
        if not self.confidence_weighted_id:
            if weights is None:
                return F.cross_entropy(logits, labels)
            return weighted_mean(F.cross_entropy(logits, labels, reduction="none"), weights)
        w = gaussian_confidence_weights(p_true).to(logits.dtype)
        if weights is not None:
            w = w * weights.to(logits.dtype)
            w = w / w.sum().clamp_min(1e-12)
        return (w * F.cross_entropy(logits, labels, reduction="none")).sum()

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, margin={self.margin}, "
                f"sigma_osm={self.sigma_osm}, sigma_caa={self.sigma_caa}, id_weight={self.id_weight}, "
                f"normalization={self.normalization!r}")
