"""Noise-robust classification losses, the baselines of the IMAE, DM and ProSelfLC papers: MAE, GCE, SCE.

All three act on softmax probabilities ``p = softmax(W f)`` of a bias-free classifier (as ``cross_entropy``)
and are averaged over the batch; ``p_y`` is the probability of the annotated label. With sample weights the
average is the weighted mean ``sum w_i l_i / sum w_i``.

- MAE: Ghosh, Kumar, Sastry, "Robust Loss Functions under Label Noise for Deep Neural Networks", AAAI 2017:
  ``||e_y - p||_1 = 2 - 2 p_y`` (the L1 distance itself, the form the IMAE paper analyses; some code halves it).
- GCE: Zhang, Sabuncu, "Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels",
  NeurIPS 2018, eq. (6): ``(1 - p_y^q) / q``; q -> 0 gives cross entropy, q = 1 gives ``1 - p_y`` (MAE / 2).
- SCE: Wang, Ma, Chen, Luo, Yi, Bailey, "Symmetric Cross Entropy for Robust Learning with Noisy Labels",
  ICCV 2019: ``alpha CE + beta RCE`` with the reverse cross entropy ``RCE = -sum_k p_k log q_k`` of the one-hot
  label q, ``log 0 := A``, hence ``RCE = -A (1 - p_y)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .base import ClassifierLoss
from .pairwise import weighted_mean


def _log_p_true(logits: Tensor, labels: Tensor) -> Tensor:
    """``log p_y`` [N] from logits [N, K] (log-softmax: exact for tiny p_y, no clamp)."""
    return -F.cross_entropy(logits, labels, reduction="none")


def mean_absolute_error(logits: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
    """Batch mean of ``||e_y - softmax(z)||_1 = 2 - 2 p_y`` (Ghosh et al. 2017); logits [N, K], labels [N]."""
    return weighted_mean(2.0 - 2.0 * _log_p_true(logits, labels).exp(), weights)


def generalized_cross_entropy(logits: Tensor, labels: Tensor, q: float, weights: Tensor | None = None) -> Tensor:
    """Batch mean of ``(1 - p_y^q) / q`` (Zhang & Sabuncu 2018, eq. 6), ``p_y^q`` as ``exp(q log p_y)``."""
    return weighted_mean((1.0 - torch.exp(q * _log_p_true(logits, labels))) / q, weights)


def symmetric_cross_entropy(logits: Tensor, labels: Tensor, alpha: float, beta: float, log_zero: float,
                            weights: Tensor | None = None) -> Tensor:
    """Batch mean of ``alpha CE + beta RCE``, ``RCE = -log_zero (1 - p_y)`` (Wang et al. 2019, log 0 := A)."""
    log_p = _log_p_true(logits, labels)
    return weighted_mean(alpha * -log_p + beta * -log_zero * (1.0 - log_p.exp()), weights)


class MAELoss(ClassifierLoss):
    """Mean absolute error ``2 - 2 p_y`` over ``Linear(embedding_dim, num_classes, bias=False)``.

    Bounded and symmetric (robust to symmetric noise), but its logit gradient is cross entropy's scaled by
    ``2 p_y``: examples with a low p_y, hard clean ones as well as mislabeled ones, barely train (the IMAE
    paper's point: MAE underfits).
    """

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        return mean_absolute_error(self.logits(embeddings, labels), labels, weights)


class GCELoss(ClassifierLoss):
    """Generalized cross entropy ``(1 - p_y^q) / q``.

    Args:
        q: in (0, 1]; 0.7, the paper's setting (q -> 0 is cross entropy, q = 1 is MAE / 2).
    """

    def __init__(self, num_classes: int, embedding_dim: int, q: float = 0.7) -> None:
        super().__init__(num_classes, embedding_dim)
        if not 0.0 < q <= 1.0:
            raise ValueError(f"GCELoss: q must be in (0, 1], got {q}")
        self.q = float(q)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        return generalized_cross_entropy(self.logits(embeddings, labels), labels, self.q, weights)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, q={self.q}"


class SCELoss(ClassifierLoss):
    """Symmetric cross entropy ``alpha CE + beta RCE``, ``RCE = -A (1 - p_y)``.

    Args:
        alpha: weight of the cross entropy (0.1, the paper's CIFAR-10 setting).
        beta: weight of the reverse cross entropy (1.0).
        log_zero: A, the value given to log 0 in RCE (-4, the paper; the authors' code clamps the one-hot label
            at 1e-4, i.e. A = log 1e-4 ~ -9.21).
    """

    def __init__(self, num_classes: int, embedding_dim: int, alpha: float = 0.1, beta: float = 1.0,
                 log_zero: float = -4.0) -> None:
        super().__init__(num_classes, embedding_dim)
        if alpha < 0 or beta < 0 or alpha + beta == 0:
            raise ValueError(f"SCELoss: alpha and beta must be >= 0 and not both 0, got alpha={alpha}, beta={beta}")
        if log_zero >= 0:
            raise ValueError(f"SCELoss: log_zero must be < 0 (it stands for log 0), got {log_zero}")
        self.alpha, self.beta, self.log_zero = float(alpha), float(beta), float(log_zero)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        logits = self.logits(embeddings, labels)
        return symmetric_cross_entropy(logits, labels, self.alpha, self.beta, self.log_zero, weights)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, alpha={self.alpha}, "
                f"beta={self.beta}, log_zero={self.log_zero}")
