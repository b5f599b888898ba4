"""Example weighting by gradient rescaling: IMAE and Derivative Manipulation (DM).

Wang, Hua, Kodirov, Robertson, "IMAE for Noise-Robust Learning", arXiv:1903.12141, 2019; Wang, Kodirov,
Hua, Robertson, "Derivative Manipulation for General Example Weighting", arXiv:1905.11233, 2019.
For softmax cross entropy the logit gradient of example i is ``p_i - e_{y_i}`` with L1 norm ``2(1 - p_y)``;
these methods replace that magnitude by a chosen weight ``w^_i = w_i / sum_j w_j``: the loss returned is
the surrogate ``sum_i c_i CE_i`` with constants ``c_i = w^_i / (2 (1 - p_y,i))``, whose value is not
meaningful (``last_cross_entropy`` holds the plain mean cross entropy for logging).

Sample weights combine multiplicatively with the method's own: the example weight is ``w_i x DM_i`` before the
normalisation over the batch, so example i's logit-gradient L1 norm is ``w_i DM_i / sum_j w_j DM_j``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ClassifierLoss
from .weighting import emphasis_density_weights, gradient_rescaling_coefficients, true_class_probability


def gradient_rescaled_cross_entropy(logits: Tensor, labels: Tensor, example_weights: Tensor,
                                    eps: float = 1e-8) -> Tensor:
    """Surrogate ``sum_i c_i CE_i`` [scalar] whose gradient w.r.t. ``logits`` [N, K] has, for each row,
    L1 norm ``w_i / sum_j w_j`` (``example_weights`` [N] are constants)."""
    _, one_minus_p = true_class_probability(logits, labels)
    coeff = gradient_rescaling_coefficients(example_weights, one_minus_p, eps).to(logits.dtype)
    ce = F.cross_entropy(logits, labels, reduction="none")
    return (coeff * ce).sum()


class DerivativeManipulationLoss(ClassifierLoss):
    """DM: cross entropy whose per-example logit-gradient magnitude is ``exp(beta p^lam (1 - p))``,
    normalised over the batch.

    Args:
        lam: emphasis mode parameter (mode lam / (lam + 1)); 0 emphasises hard examples (clean data),
            larger values move the emphasis to easier examples (more noise; the paper's CIFAR-10 ablation
            prefers 0.5 at 20 % and 1-2 at 40-80 % symmetric noise). Default 1 (mode p = 0.5).
        beta: spread of the weights (default 2, the paper's Clothing1M setting with lam = 1; official
            grids use 6-15).
    ``last_sample_weights``: the normalised weights. With lam > 0 they are an *emphasis*
    (``weights_meaning == "emphasis"``): highest at the mode p = lam / (lam + 1) and low at both ends, so a
    confidently right example (p ~ 1) weighs as little as a mislabeled one (p ~ 0). They are not a
    reliability and consumers that need one (the label audit) must not read them as such; the classifier's
    p_y is the reliability signal. With lam = 0 the weight grows as p falls, so the instance says
    ``weights_meaning == "hardness"``.
    """

    weights_meaning = "emphasis"

    def __init__(self, num_classes: int, embedding_dim: int, lam: float = 1.0, beta: float = 2.0) -> None:
        super().__init__(num_classes, embedding_dim)
        if lam < 0 or beta < 0:
            raise ValueError(f"{type(self).__name__}: lam and beta must be >= 0, got lam={lam}, beta={beta}")
        self.lam, self.beta = float(lam), float(beta)
        if self.lam == 0.0:
            self.weights_meaning = "hardness"  # w = exp(beta (1 - p)): the harder, the heavier
        self.last_cross_entropy: float | None = None

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        logits = self.logits(embeddings, labels)
        p_true, _ = true_class_probability(logits, labels)
        emphasis = emphasis_density_weights(p_true, self.lam, self.beta)
        self._record_weights(emphasis)
        with torch.no_grad():
            self.last_cross_entropy = float(F.cross_entropy(logits, labels))
        if weights is not None:
            emphasis = emphasis * weights.to(emphasis.dtype)
        return gradient_rescaled_cross_entropy(logits, labels, emphasis)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, lam={self.lam}, beta={self.beta}"


class IMAELoss(DerivativeManipulationLoss):
    """IMAE: MAE's example weighting ``p (1 - p)`` with its variance enlarged, ``w = exp(T p (1 - p))``.

    Args:
        temperature: T (8, the authors' slides). Equivalent to DM with lam = 1, beta = T.
    """

    def __init__(self, num_classes: int, embedding_dim: int, temperature: float = 8.0) -> None:
        super().__init__(num_classes, embedding_dim, lam=1.0, beta=temperature)
        self.temperature = float(temperature)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, temperature={self.temperature}"
