"""ProSelfLC: progressive self label correction for the classification head.

Wang, Hua, Kodirov, Clifton, Robertson, "ProSelfLC: Progressive Self Label Correction for Training Robust
Deep Neural Networks", CVPR 2021. Target ``q~ = (1 - eps) q + eps p`` with ``eps = g(t) l(p)``: global trust
``g(t) = sigmoid(B (t / Gamma - tau))`` from the training progress and local trust ``l(p) = 1 - H(p)/log C``;
``q~`` is detached (the later official release's default); loss ``-mean_i sum_c q~_ic log p_ic``.
Sample weights multiply each example's term on top of the correction (which stays per example):
``sum_i w_i l_i / sum_i w_i``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import ClassifierLoss
from .pairwise import weighted_mean
from .weighting import proselflc_corrected_target, proselflc_global_trust, proselflc_local_trust


class ProSelfLCLoss(ClassifierLoss):
    """Cross entropy against the progressively self-corrected target.

    Args:
        exp_base: B, steepness of the global trust (12).
        transit_time_ratio: tau, the progress at which g(t) = 0.5 (0.5, the CVPR version).
    Call ``set_progress(step, total_steps)`` every step; before any call the progress is 0.
    ``last_sample_weights``: the weight the corrected target keeps on the annotated label,
    ``(1 - eps) + eps p_y`` (reliability: low when a confident prediction contradicts the label).
    """

    weights_meaning = "reliability"

    def __init__(self, num_classes: int, embedding_dim: int, exp_base: float = 12.0,
                 transit_time_ratio: float = 0.5) -> None:
        super().__init__(num_classes, embedding_dim)
        if exp_base <= 0:
            raise ValueError(f"ProSelfLCLoss: exp_base must be > 0, got {exp_base}")
        if not 0.0 <= transit_time_ratio <= 1.0:
            raise ValueError(f"ProSelfLCLoss: transit_time_ratio must be in [0, 1], got {transit_time_ratio}")
        self.exp_base = float(exp_base)
        self.transit_time_ratio = float(transit_time_ratio)

    def trust(self, probs: Tensor) -> Tensor:
        """Per-example correction weight ``eps = g(t) l(p)`` [N] (constant)."""
        g = proselflc_global_trust(self.progress, self.exp_base, self.transit_time_ratio)
        return g * proselflc_local_trust(probs)

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        logits = self.logits(embeddings, labels)
        log_probs = torch.log_softmax(logits, dim=1)
        probs = log_probs.detach().exp()
        target = proselflc_corrected_target(probs, labels, self.trust(probs))
        self._record_weights(target.gather(1, labels.view(-1, 1)).squeeze(1))
        return weighted_mean(-(target * log_probs).sum(dim=1), weights)

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, "
                f"exp_base={self.exp_base}, transit_time_ratio={self.transit_time_ratio}")
