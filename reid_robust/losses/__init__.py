"""Metric and classification losses, standard and noise-robust, behind one interface.

``build_loss(name, **params)`` returns an ``nn.Module``; ``loss(embeddings [N, D], labels [N])`` returns a
scalar. See docs/losses.md for the table of losses, formulas and defaults.
"""

from .base import ClassifierLoss, MetricLoss, check_embeddings_and_labels, check_finite_parameters
from .circle import CircleLoss
from .contrastive import ContrastiveLoss, contrastive_from_distances, xbm_contrastive
from .cross_entropy import CrossEntropyLoss, label_smoothing_cross_entropy
from .example_weighting import DerivativeManipulationLoss, IMAELoss, gradient_rescaled_cross_entropy
from .ice import InstanceCrossEntropyLoss, ice_pair_weights
from .multi_similarity import (
    MultiSimilarityLoss,
    multi_similarity_mining,
    multi_similarity_pair_weights,
    multi_similarity_per_anchor,
)
from .osm_caa import OSMCAALoss, weighted_contrastive
from .pairwise import (
    cosine_similarity_matrix,
    euclidean_distance_matrix,
    gram_matrix,
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
    unit_euclidean_distance_matrix,
    zero_loss,
)
from .prism import PRISMLoss, SlidingWindowThreshold, centre_probabilities
from .proselflc import ProSelfLCLoss
from .ranked_list import RankedListLoss
from .registry import LOSSES, build_loss, check_loss_parameters, loss_parameters, register_loss
from .robust_classification import (
    GCELoss,
    MAELoss,
    SCELoss,
    generalized_cross_entropy,
    mean_absolute_error,
    symmetric_cross_entropy,
)
from .triplet import TripletLoss, batch_all_triplet, batch_hard_triplet, semi_hard_triplet
from .weighting import (
    class_aware_attention,
    emphasis_density_weights,
    gaussian_confidence_weights,
    gradient_rescaling_coefficients,
    osm_negative_weights,
    osm_positive_weights,
    pairwise_min,
    proselflc_global_trust,
    proselflc_local_trust,
    temperature_softmax_weights,
    true_class_probability,
)

__all__ = [
    "LOSSES",
    "CircleLoss",
    "ClassifierLoss",
    "ContrastiveLoss",
    "CrossEntropyLoss",
    "DerivativeManipulationLoss",
    "GCELoss",
    "IMAELoss",
    "InstanceCrossEntropyLoss",
    "MAELoss",
    "MetricLoss",
    "MultiSimilarityLoss",
    "OSMCAALoss",
    "PRISMLoss",
    "ProSelfLCLoss",
    "RankedListLoss",
    "SCELoss",
    "SlidingWindowThreshold",
    "TripletLoss",
    "batch_all_triplet",
    "batch_hard_triplet",
    "build_loss",
    "centre_probabilities",
    "check_embeddings_and_labels",
    "check_finite_parameters",
    "check_loss_parameters",
    "class_aware_attention",
    "contrastive_from_distances",
    "cosine_similarity_matrix",
    "emphasis_density_weights",
    "euclidean_distance_matrix",
    "gaussian_confidence_weights",
    "generalized_cross_entropy",
    "gradient_rescaled_cross_entropy",
    "gradient_rescaling_coefficients",
    "gram_matrix",
    "ice_pair_weights",
    "l2_normalize",
    "label_smoothing_cross_entropy",
    "loss_parameters",
    "masked_logsumexp",
    "masked_max",
    "masked_mean",
    "masked_min",
    "masked_softmax",
    "masked_sum",
    "mean_absolute_error",
    "multi_similarity_mining",
    "multi_similarity_pair_weights",
    "multi_similarity_per_anchor",
    "negative_mask",
    "normalize_to_mean_one",
    "osm_negative_weights",
    "osm_positive_weights",
    "pair_weights_to_sample_weights",
    "pairwise_min",
    "positive_mask",
    "proselflc_global_trust",
    "proselflc_local_trust",
    "register_loss",
    "same_label_matrix",
    "semi_hard_triplet",
    "squared_euclidean_distance_matrix",
    "symmetric_cross_entropy",
    "temperature_softmax_weights",
    "true_class_probability",
    "unit_euclidean_distance_matrix",
    "weighted_contrastive",
    "xbm_contrastive",
    "zero_loss",
]
