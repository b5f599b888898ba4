"""Sample and pair weighting functions of the robust losses, as plain functions of detached scores.

Every function here returns constants (computed under ``no_grad`` or from detached inputs): in the papers
the weights are stop-gradient factors, not part of the objective's derivative.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .pairwise import masked_softmax, pair_weight_matrix


@torch.no_grad()
def osm_positive_weights(dist: Tensor, sigma: float) -> Tensor:
    """Online soft mining weight of positive pairs: ``exp(-d^2 / (2 sigma^2))`` (Wang et al., AAAI 2019).

    Close positives get the largest weight; sigma 0.8 gives 0.46 at d = 1.0.
    """
    return torch.exp(-dist.detach() ** 2 / (2.0 * sigma ** 2))


@torch.no_grad()
def osm_negative_weights(dist: Tensor, margin: float) -> Tensor:
    """Online soft mining weight of negative pairs: the margin violation ``[margin - d]_+``."""
    return torch.relu(margin - dist.detach())


@torch.no_grad()
def class_aware_attention(true_class_prob: Tensor, sigma: float) -> Tensor:
    """Class-aware attention ``exp(-(1 - p)^2 / (2 sigma^2))`` of each sample [N] (Wang et al., AAAI 2019).

    ``true_class_prob`` [N] is the classifier's probability of the annotated label; sigma 0.68 gives
    1.00 at p = 1, 0.76 at p = 0.5 and 0.34 at p = 0.
    """
    return torch.exp(-(1.0 - true_class_prob.detach()) ** 2 / (2.0 * sigma ** 2))


@torch.no_grad()
def pairwise_min(weights: Tensor) -> Tensor:
    """Pair attention ``A_ij = min(a_i, a_j)`` [N, N] from sample weights [N] (OSM+CAA official code)."""
    return pair_weight_matrix(weights)


@torch.no_grad()
def gaussian_confidence_weights(true_class_prob: Tensor, mean: float = 0.5, sigma: float = 0.18) -> Tensor:
    """Gaussian weight of the confidence, ``exp(-(p - mean)^2 / (2 sigma^2))``, normalised to sum 1.

    The confidence-weighted ID loss of the OSM+CAA prototxts: discounts both p ~ 0 and p ~ 1.
    """
    w = torch.exp(-(true_class_prob.detach() - mean) ** 2 / (2.0 * sigma ** 2))
    return w / w.sum().clamp_min(1e-12)


@torch.no_grad()
def true_class_probability(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """``(p_y, 1 - p_y)`` [N] each, from logits [N, K]; ``1 - p_y`` is computed as
    ``exp(LSE_{c != y} z - LSE z)``, free of float32 cancellation when p_y is close to 1."""
    z = logits.detach()
    lse = torch.logsumexp(z, dim=1)
    z_y = z.gather(1, labels.view(-1, 1)).squeeze(1)
    others = z.scatter(1, labels.view(-1, 1), float("-inf"))
    if z.shape[1] == 1:
        one_minus = torch.zeros_like(z_y)
    else:
        one_minus = torch.exp(torch.logsumexp(others, dim=1) - lse)
    return torch.exp(z_y - lse), one_minus


@torch.no_grad()
def emphasis_density_weights(true_class_prob: Tensor, lam: float, beta: float) -> Tensor:
    """Derivative-manipulation example weight ``exp(beta p^lam (1 - p))`` [N] (Wang et al. 2019).

    ``lam`` sets the emphasis mode ``lam / (lam + 1)`` (0: hardest examples, 1: p = 0.5, larger: easier);
    ``beta`` the spread. ``lam = 1`` with ``beta = T`` is IMAE. ``p + 1e-8`` keeps fractional powers finite.
    """
    p = true_class_prob.detach()
    base = p + 1e-8 if lam != 0 else torch.ones_like(p)
    return torch.exp(beta * base.pow(lam) * (1.0 - p))


@torch.no_grad()
def gradient_rescaling_coefficients(example_weights: Tensor, one_minus_p: Tensor, eps: float = 1e-8) -> Tensor:
    """Per-example factors ``c_i`` [N] so that ``sum_i c_i CE_i`` has logit gradients of L1 norm
    ``w_i / sum_j w_j``: the L1 norm of ``p - e_y`` is ``2 (1 - p_y)``, hence ``c_i = w^_i / (2 (1 - p_y))``."""
    w = example_weights.detach()
    normalised = w / w.sum().clamp_min(1e-12)
    return normalised / (2.0 * one_minus_p.detach()).clamp_min(eps)


def proselflc_global_trust(progress: float, exp_base: float, transit_time_ratio: float) -> float:
    """ProSelfLC global trust ``g(t) = 1 / (1 + exp(-B (t / Gamma - tau)))`` (Wang et al., CVPR 2021)."""
    return 1.0 / (1.0 + math.exp(-exp_base * (progress - transit_time_ratio)))


@torch.no_grad()
def proselflc_local_trust(probs: Tensor) -> Tensor:
    """ProSelfLC local trust ``l(p) = 1 - H(p) / log C`` [N] from probabilities [N, C] (0 for C = 1)."""
    p = probs.detach()
    num_classes = p.shape[1]
    if num_classes < 2:
        return torch.zeros(p.shape[0], dtype=p.dtype, device=p.device)
    entropy = -(p * torch.log(p.clamp_min(1e-30))).sum(dim=1)
    return (1.0 - entropy / math.log(num_classes)).clamp(0.0, 1.0)


@torch.no_grad()
def proselflc_corrected_target(probs: Tensor, labels: Tensor, trust: Tensor) -> Tensor:
    """ProSelfLC's corrected target ``(1 - eps) y + eps p`` [N, C] from probabilities [N, C] and the per-example
    trust ``eps = g(t) l(p)`` [N] (constant)."""
    p = probs.detach()
    eps = trust.detach().unsqueeze(1)
    onehot = torch.nn.functional.one_hot(labels, p.shape[1]).to(p.dtype)
    return (1.0 - eps) * onehot + eps * p


@torch.no_grad()
def temperature_softmax_weights(values: Tensor, mask: Tensor, temperature: float,
                                log_weights: Tensor | float = 0.0) -> Tensor:
    """Ranked-list pair weights: ``softmax_{mask}(T * values)`` along rows [N, M] (uniform when T = 0); with
    ``log_weights`` (``log m_ij``) each entry is ``m_ij exp(T v_ij)`` normalised over the row's set."""
    logits = temperature * values.detach()
    if isinstance(log_weights, Tensor):
        logits = logits + log_weights
    return masked_softmax(logits, mask, dim=1)
