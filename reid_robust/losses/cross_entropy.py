"""Identity classification loss with label smoothing over a bias-free linear classifier.

Szegedy et al., "Rethinking the Inception Architecture", CVPR 2016 (label smoothing), in the form of
Luo et al., "Bag of Tricks and a Strong Baseline for Deep Person Re-identification", CVPRW 2019:
target ``q_c = (1 - eps) [c = y] + eps / K`` over all K classes (the true class gets ``1 - eps + eps/K``).
This is not fast-reid's form (``1 - eps`` on the true class, ``eps / (K - 1)`` elsewhere).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from .base import ClassifierLoss
from .pairwise import weighted_mean


def label_smoothing_cross_entropy(logits: Tensor, labels: Tensor, epsilon: float,
                                  weights: Tensor | None = None) -> Tensor:
    """Mean over the batch of ``-sum_c q_c log softmax(z)_c`` with ``q_c = (1-eps)[c=y] + eps/K``.

    ``logits`` [N, K], ``labels`` [N] in [0, K). ``epsilon = 0`` is plain cross entropy. This is torch's
    ``F.cross_entropy(label_smoothing=eps)``, which uses the same eps/K form. With per-sample ``weights`` [N]
    the weighted mean ``sum w_i l_i / sum w_i``.
    """
    if weights is None:
        return F.cross_entropy(logits, labels, label_smoothing=epsilon)
    return weighted_mean(F.cross_entropy(logits, labels, reduction="none", label_smoothing=epsilon), weights)


class CrossEntropyLoss(ClassifierLoss):
    """Label-smoothed cross entropy over ``Linear(embedding_dim, num_classes, bias=False)`` (BoT ID loss).

    Args:
        num_classes: number of training identities K.
        embedding_dim: input dimension D.
        epsilon: smoothing mass spread as ``epsilon / K`` over all K classes (BoT: 0.1).
    Sample weights: the weighted mean ``sum w_i l_i / sum w_i`` of the per-sample losses.
    """

    def __init__(self, num_classes: int, embedding_dim: int, epsilon: float = 0.1) -> None:
        super().__init__(num_classes, embedding_dim)
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"CrossEntropyLoss: epsilon must be in [0, 1), got {epsilon}")
        self.epsilon = float(epsilon)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        return label_smoothing_cross_entropy(self.logits(embeddings, labels), labels, self.epsilon, weights)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, epsilon={self.epsilon}"
