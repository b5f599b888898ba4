"""The pairwise core shared by every loss: similarities, distances, label masks, masked reductions.

Conventions (docs/losses.md, methods reference section 0): rows of ``x`` are embeddings ``[N, D]``;
``S_ij`` is the cosine similarity, ``d_ij`` the Euclidean distance computed as ``sqrt(clamp(d2, 1e-12))``
so that the gradient at zero distance is zero instead of infinite; the positive set of anchor ``i`` is
``{j != i : y_j == y_i}`` (self-pairs are never positives) and the negative set ``{j : y_j != y_i}``.
Reductions over a mask treat an empty set explicitly instead of producing NaN or +-inf.

Per-image weights (``sample_weight``, docs/losses.md): ``w`` [N] are constants scaled to maximum 1 by
``MetricLoss.forward``; a pair weighs ``pair_weight_matrix(w)`` = ``min(w_i, w_j)``, a triplet the minimum
of its three; ``active_pairs`` removes the pairs of images of weight 0 (they are neither anchors nor mining
candidates); ``weighted_mean`` is ``sum(w l) / sum(w)`` (0 when every weight is 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

DISTANCE_EPS = 1e-12
NORM_EPS = 1e-12


def l2_normalize(x: Tensor, eps: float = NORM_EPS) -> Tensor:
    """Rows of ``x`` [N, D] divided by ``max(||x_i||, eps)``; a zero row stays zero (no NaN)."""
    return x / x.norm(dim=1, keepdim=True).clamp_min(eps)


class _Gram(torch.autograd.Function):
    """``x @ x.T`` whose backward is one product, ``(G + G^T) @ x``, instead of autograd's two."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return x @ x.t()

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return (grad + grad.t()).to(x.dtype) @ x  # grad may be half precision under autocast


def gram_matrix(x: Tensor) -> Tensor:
    """Inner products ``x @ x.T`` [N, N] of the rows of ``x`` [N, D]."""
    return _Gram.apply(x)


def cosine_similarity_matrix(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Cosine similarities ``S`` [N, M] between rows of ``x`` [N, D] and ``y`` [M, D] (default ``x``)."""
    xn = l2_normalize(x)
    if y is None:
        return gram_matrix(xn)
    return xn @ l2_normalize(y).t()


def squared_euclidean_distance_matrix(x: Tensor, y: Tensor | None = None) -> Tensor:
    """Squared distances ``||x_i - y_j||^2`` [N, M], clamped at 0 against cancellation.

    Computed as ``|x|^2 + |y|^2 - 2 x y^T`` (one matrix product); when ``y`` is None the diagonal is set
    to exactly 0.
    """
    same = y is None
    y = x if y is None else y
    x2 = (x * x).sum(dim=1, keepdim=True)
    y2 = x2 if same else (y * y).sum(dim=1, keepdim=True)
    inner = gram_matrix(x) if same else x @ y.t()
    d2 = (x2 + y2.t() - 2.0 * inner).clamp_min(0.0)
    if same:
        d2 = d2.fill_diagonal_(0.0)
    return d2


def _power_of_two_scale(*tensors: Tensor) -> Tensor:
    """The smallest power of two >= the largest |entry| (1 for all-zero input), detached, no host sync.

    Dividing by it is exact in floating point, so distances of the scaled rows are the scaled distances
    bit for bit, while squares of huge embeddings (|x| ~ 1e20 in float32) no longer overflow."""
    peak = torch.stack([t.detach().abs().amax() for t in tensors]).amax()
    _, exponent = torch.frexp(peak)
    return torch.ldexp(torch.ones_like(peak), exponent)


def euclidean_distance_matrix(x: Tensor, y: Tensor | None = None, eps: float = DISTANCE_EPS) -> Tensor:
    """Euclidean distances [N, M] as ``sqrt(clamp(d2, eps))``: finite gradient (zero) at zero distance.

    Rows are divided by a power of two first (exact), so embeddings of any finite size give finite distances.
    """
    if x.numel() == 0 or (y is not None and y.numel() == 0):
        return squared_euclidean_distance_matrix(x, y)
    scale = _power_of_two_scale(x) if y is None else _power_of_two_scale(x, y)
    # never scale tiny rows up past 2^-30: eps / scale^2 must stay finite (all such distances sit at the floor)
    scale = scale.clamp_min(2.0**-30)
    floor = (eps / scale**2).clamp_min(torch.finfo(x.dtype).tiny)
    d2 = squared_euclidean_distance_matrix(x / scale, None if y is None else y / scale)
    return torch.maximum(d2, floor).sqrt() * scale


def unit_euclidean_distance_matrix(xn: Tensor, eps: float = DISTANCE_EPS) -> Tensor:
    """Distances [N, N] between rows of an already L2-normalised ``xn`` [N, D], from ``d^2 = 2 - 2 S``.

    Cheaper than ``euclidean_distance_matrix`` (no norms); the same ``sqrt(clamp(d2, eps))`` safety.
    """
    return (2.0 - 2.0 * gram_matrix(xn)).clamp_min(eps).sqrt()


def batch_distance_matrix(embeddings: Tensor, normalize: bool) -> Tensor:
    """[N, N] Euclidean distances of the batch, of L2-normalised embeddings when ``normalize``."""
    if normalize:
        return unit_euclidean_distance_matrix(l2_normalize(embeddings))
    return euclidean_distance_matrix(embeddings)


def same_label_matrix(labels: Tensor, ref_labels: Tensor | None = None) -> Tensor:
    """Boolean [N, M]: ``labels[i] == ref_labels[j]``."""
    ref = labels if ref_labels is None else ref_labels
    return labels.view(-1, 1) == ref.view(1, -1)


def positive_mask(labels: Tensor) -> Tensor:
    """Boolean [N, N]: same label and ``i != j`` (self-pairs excluded)."""
    same = same_label_matrix(labels)
    return same & ~torch.eye(labels.numel(), dtype=torch.bool, device=labels.device)


def negative_mask(labels: Tensor) -> Tensor:
    """Boolean [N, N]: different labels."""
    return ~same_label_matrix(labels)


def active_pairs(mask: Tensor, weights: Tensor | None) -> Tensor:
    """``mask`` [N, N] without the pairs involving an image of weight 0 (unchanged when ``weights`` is None)."""
    if weights is None:
        return mask
    active = weights > 0
    return mask & active.view(-1, 1) & active.view(1, -1)


def pair_weight_matrix(weights: Tensor) -> Tensor:
    """Pair weights ``min(w_i, w_j)`` [N, N] from per-image weights [N] (detached)."""
    w = weights.detach()
    return torch.minimum(w.view(-1, 1), w.view(1, -1))


def log_pair_weights(weights: Tensor | None) -> Tensor | float:
    """``log min(w_i, w_j)`` [N, N], added to the logits of a log-sum-exp so that each pair term
    ``exp(z_ij)`` becomes ``m_ij exp(z_ij)``; -inf for pairs of a weight-0 image (masked out by
    ``active_pairs``); 0.0 (nothing added) when ``weights`` is None."""
    if weights is None:
        return 0.0
    return pair_weight_matrix(weights).log()


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where the denominator is positive, else ``numerator`` (0 for a weighted
    sum whose weights are all 0); no NaN in the value or the gradient."""
    return numerator / torch.where(denominator > 0, denominator, torch.ones_like(denominator))


def weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    """``values.mean()`` when ``weights`` is None, else ``sum(w v) / sum(w)`` (0 when all weights are 0)."""
    if weights is None:
        return values.mean()
    w = weights.detach().to(values.dtype)
    return (safe_divide(w, w.sum()) * values).sum()


def masked_sum(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Sum of ``x`` over the entries where ``mask`` is True (0 for an empty set)."""
    return torch.where(mask, x, 0.0).sum(dim=dim)


def masked_mean(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Mean of ``x`` over masked entries; 0 (not NaN) where the set is empty."""
    count = mask.sum(dim=dim)
    return masked_sum(x, mask, dim) / count.clamp_min(1).to(x.dtype)


def masked_max(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Max of ``x`` over masked entries; 0 where the set is empty (callers drop those rows)."""
    filled = torch.where(mask, x, float("-inf"))
    out = filled.max(dim=dim).values
    return torch.where(mask.any(dim=dim), out, torch.zeros_like(out))


def masked_min(x: Tensor, mask: Tensor, dim: int) -> Tensor:
    """Min of ``x`` over masked entries; 0 where the set is empty (callers drop those rows)."""
    filled = torch.where(mask, x, float("inf"))
    out = filled.min(dim=dim).values
    return torch.where(mask.any(dim=dim), out, torch.zeros_like(out))


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int, add_zero: bool = False) -> Tensor:
    """``log sum_{mask} exp(x)`` along ``dim``, stable for large exponents.

    With ``add_zero`` a zero logit joins the set, giving ``log(1 + sum exp(x))`` (0 for an empty set).
    Without it an empty set gives ``-inf``; its gradient is 0, never NaN.
    """
    lse = _finite_logsumexp(x, mask, dim, add_zero)
    if add_zero:
        return lse
    return torch.where(mask.any(dim=dim), lse, torch.full_like(lse, float("-inf")))


def masked_softmax(x: Tensor, mask: Tensor, dim: int, add_zero: bool = False) -> Tensor:
    """Softmax of ``x`` over masked entries (0 elsewhere and on empty rows).

    With ``add_zero`` an implicit zero logit shares the normaliser: ``exp(x_j) / (1 + sum exp(x))``,
    which is the pair weight of ``log(1 + sum exp(x))`` losses (MS, circle).
    """
    lse = _finite_logsumexp(x, mask, dim, add_zero)
    shifted = torch.where(mask, x - lse.unsqueeze(dim), float("-inf"))
    return torch.exp(shifted)


def _finite_logsumexp(x: Tensor, mask: Tensor, dim: int, add_zero: bool) -> Tensor:
    """Masked logsumexp that is 0 (not -inf) on empty rows, so that nothing downstream sees inf - inf.

    An empty row's logsumexp of -inf values has a NaN local gradient, but the ``where`` that built the
    row routes gradient only to masked entries, so no NaN reaches ``x``.
    """
    filled = torch.where(mask, x, float("-inf"))
    if add_zero:
        zero = torch.zeros_like(x.narrow(dim, 0, 1))
        return torch.logsumexp(torch.cat([filled, zero], dim=dim), dim=dim)
    lse = torch.logsumexp(filled, dim=dim)
    return torch.where(lse == float("-inf"), 0.0, lse)


def pair_weights_to_sample_weights(pair_weights: Tensor) -> Tensor:
    """Per-sample share [N] of a non-negative pair-weight matrix [N, N], normalised to mean 1.

    A sample's share is half its row sum (as anchor) plus half its column sum (as partner). When all
    weights are zero the result is uniform (all ones).
    """
    w = pair_weights.detach()
    per_sample = 0.5 * (w.sum(dim=1) + w.sum(dim=0))
    return normalize_to_mean_one(per_sample)


def normalize_to_mean_one(weights: Tensor) -> Tensor:
    """Detached non-negative weights [N] rescaled to mean 1 (uniform ones when their sum is 0)."""
    w = weights.detach().to(torch.float32)
    total = w.sum()
    if not torch.isfinite(total) or total <= 0:
        return torch.ones_like(w)
    return w * (w.numel() / total)


def zero_loss(embeddings: Tensor) -> Tensor:
    """An exact 0 that is still connected to the graph of ``embeddings`` (0 even where their sum overflows)."""
    return (embeddings * 0.0).sum()
