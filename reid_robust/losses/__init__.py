"""Metric and classification losses, standard and noise-robust, behind one interface.

``build_loss(name, **params)`` returns an ``nn.Module``; ``loss(embeddings [N, D], labels [N])`` returns a
scalar. See docs/losses.md for the table of losses, formulas and defaults.
"""

from .base import ClassifierLoss, MetricLoss, check_embeddings_and_labels
from .circle import CircleLoss
from .contrastive import ContrastiveLoss, contrastive_from_distances, xbm_contrastive
from .cross_entropy import CrossEntropyLoss, label_smoothing_cross_entropy
from .multi_similarity import (
    MultiSimilarityLoss,
    multi_similarity_mining,
    multi_similarity_pair_weights,
    multi_similarity_per_anchor,
)
from .pairwise import (
    cosine_similarity_matrix,
    euclidean_distance_matrix,
    l2_normalize,
    masked_logsumexp,
    masked_max,
    masked_mean,
    masked_min,
    masked_softmax,
    masked_sum,
    negative_mask,
    normalize_to_mean_one,
    pair_weights_to_sample_weights,
    positive_mask,
    same_label_matrix,
    squared_euclidean_distance_matrix,
    zero_loss,
)
from .registry import LOSSES, build_loss, loss_parameters, register_loss
from .triplet import TripletLoss

__all__ = [
    "LOSSES",
    "CircleLoss",
    "ClassifierLoss",
    "ContrastiveLoss",
    "CrossEntropyLoss",
    "MetricLoss",
    "MultiSimilarityLoss",
    "TripletLoss",
    "build_loss",
    "check_embeddings_and_labels",
    "contrastive_from_distances",
    "cosine_similarity_matrix",
    "euclidean_distance_matrix",
    "l2_normalize",
    "label_smoothing_cross_entropy",
    "loss_parameters",
    "masked_logsumexp",
    "masked_max",
    "masked_mean",
    "masked_min",
    "masked_softmax",
    "masked_sum",
    "multi_similarity_mining",
    "multi_similarity_pair_weights",
    "multi_similarity_per_anchor",
    "negative_mask",
    "normalize_to_mean_one",
    "pair_weights_to_sample_weights",
    "positive_mask",
    "register_loss",
    "same_label_matrix",
    "squared_euclidean_distance_matrix",
    "xbm_contrastive",
    "zero_loss",
]
