"""PRISM: probabilistic ranking-based instance selection with memory, around a pair loss.

Liu et al., "Noise-resistant Deep Metric Learning with Ranking-based Instance Selection", CVPR 2021
(official code alibaba-edu/Ranking-based-Instance-Selection, built on XBM). Each step:
1. class centres ``c_k`` = mean of the memory embeddings labelled k (zero for a class with no row);
2. clean probability ``P_i = softmax_k(c_k^T f_i)[y_i]`` over all K classes (a class without a centre adds
   ``e^0 = 1`` to the denominator, as the official zero-initialised centres do); 1 if y_i has no centre;
3. the value at the boundary of the lowest ``floor(r N)`` probabilities (r = assumed noise rate) joins a
   sliding window (unless it is 1); samples with ``P_i > mean(window)`` are kept; when the window is empty,
   or nobody is above its mean, exactly the lowest ``floor(r N)`` are dropped (in the second case the window
   restarts from its last value);
4. the pair loss runs on kept samples, within the batch (divided by the number kept) and against the memory
   (divided by the batch size N, kept or not, as the official memory loss does); kept samples are enqueued.

Sample weights combine multiplicatively with the selection: images of weight 0 are removed before it (the
quantile runs over the others and they never enter the memory); a kept pair (i, j) weighs ``min(w_i, w_j)``,
a batch-to-memory pair ``w_i`` (memory rows weigh 1); the batch term is divided by the kept images' weight sum
and the memory term by all images' weight sum (the weighted N); the multi-similarity form weighs each pair
term inside its sums and each anchor by ``w_i``, as ``MultiSimilarityLoss`` does.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import MetricLoss
from .contrastive import xbm_contrastive
from .multi_similarity import multi_similarity_mining, multi_similarity_per_anchor
from .pairwise import (
    l2_normalize,
    negative_mask,
    pair_weight_matrix,
    positive_mask,
    safe_divide,
    same_label_matrix,
    zero_loss,
)

PAIR_LOSSES = ("contrastive", "multi_similarity")


def centre_probabilities(x: Tensor, labels: Tensor, memory: Tensor, memory_labels: Tensor,
                         num_classes: int) -> Tensor:
    """Clean probability [N] of each embedding x [N, D] for its label, from memory class centres.

    Centres are plain (un-normalised) means of memory rows [M, D] per label, zero for a class with no row;
    the softmax runs over all ``num_classes`` classes (as the official code's zero-initialised centres do,
    each centreless class adds ``e^0 = 1`` to the denominator); a sample whose class has no centre gets 1.
    """
    sums = torch.zeros(num_classes, x.shape[1], dtype=x.dtype, device=x.device)
    sums.index_add_(0, memory_labels, memory.to(x.dtype))
    counts = torch.bincount(memory_labels, minlength=num_classes)
    has = counts > 0
    centres = sums / counts.clamp_min(1).to(x.dtype).unsqueeze(1)
    prob = torch.softmax(x @ centres.t(), dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
    return torch.where(has[labels], prob, torch.ones_like(prob))


class SlidingWindowThreshold:
    """PRISM's threshold: the mean of the last ``window_size`` boundary values of the lowest r-quantile."""

    def __init__(self, noise_rate: float, window_size: int) -> None:
        self.noise_rate = noise_rate
        self.window_size = window_size
        self.values: list[float] = []

    def select(self, clean_prob: Tensor) -> Tensor:
        """Boolean keep mask [N] for the clean probabilities [N]; updates the window."""
        n = clean_prob.numel()
        n_drop = math.floor(self.noise_rate * n)
        keep = torch.ones(n, dtype=torch.bool, device=clean_prob.device)
        if n_drop == 0:
            return keep
        order = torch.argsort(clean_prob, stable=True)
        boundary = float(clean_prob[order[n_drop - 1]])
        if math.isfinite(boundary) and boundary != 1.0:
            self.values = (self.values + [boundary])[-self.window_size:]
        if self.values:
            keep = clean_prob > sum(self.values) / len(self.values)
            if bool(keep.any()):
                return keep
            self.values = self.values[-1:]
        keep = torch.ones(n, dtype=torch.bool, device=clean_prob.device)
        keep[order[:n_drop]] = False  # empty window or nobody above its mean: drop the lowest floor(r N)
        return keep


class PRISMLoss(MetricLoss):
    """PRISM instance selection with an embedding memory, wrapped around a pair loss.

    Args:
        num_classes, embedding_dim: size the memory [memory_size, D] and the class centres.
        noise_rate: r, the assumed fraction of wrong labels (0.2 here; the CARS-98N config uses 0.5).
        memory_size: rows in the FIFO memory (8192). window_size: sliding-window length (30).
        pair_loss: ``"contrastive"`` (the XBM/PRISM cosine contrastive, negatives above ``neg_threshold``)
            or ``"multi_similarity"`` (alpha 2, beta 50, base 0.5, epsilon 0.1).
        neg_threshold: similarity above which negatives count in the contrastive form (0.5).
        memory_weight: weight of the batch-to-memory term (1).
        warmup_steps: training forwards (or ``set_progress`` step) before selection starts (0).
    Memory and window update, and samples are dropped, only in training mode; in eval mode the clean
    probabilities are still computed from the memory (for diagnostics and the label audit) and every sample
    is kept. ``last_sample_weights``: the clean probabilities (reliability); ``last_kept_mask``: the samples
    the loss used.
    """

    needs_num_classes = True
    weights_meaning = "reliability"
    memory: Tensor  # buffers (register_buffer in __init__)
    memory_labels: Tensor
    memory_ptr: Tensor

    def __init__(self, num_classes: int, embedding_dim: int, noise_rate: float = 0.2, memory_size: int = 8192,
                 window_size: int = 30, pair_loss: str = "contrastive", neg_threshold: float = 0.5,
                 memory_weight: float = 1.0, warmup_steps: int = 0) -> None:
        super().__init__()
        if not 0.0 <= noise_rate < 1.0:
            raise ValueError(f"PRISMLoss: noise_rate must be in [0, 1), got {noise_rate}")
        if pair_loss not in PAIR_LOSSES:
            raise ValueError(f"PRISMLoss: pair_loss must be one of {PAIR_LOSSES}, got {pair_loss!r}")
        if memory_size < 1 or window_size < 1 or num_classes < 1 or embedding_dim < 1:
            raise ValueError("PRISMLoss: memory_size, window_size, num_classes and embedding_dim must be >= 1, "
                             f"got {memory_size}, {window_size}, {num_classes}, {embedding_dim}")
        self.num_classes, self.embedding_dim = int(num_classes), int(embedding_dim)
        self.noise_rate, self.memory_size = float(noise_rate), int(memory_size)
        self.pair_loss, self.neg_threshold = pair_loss, float(neg_threshold)
        self.memory_weight, self.warmup_steps = float(memory_weight), int(warmup_steps)
        self.threshold = SlidingWindowThreshold(self.noise_rate, int(window_size))
        self.register_buffer("memory", torch.zeros(self.memory_size, self.embedding_dim))
        self.register_buffer("memory_labels", torch.full((self.memory_size,), -1, dtype=torch.long))
        self.register_buffer("memory_ptr", torch.zeros((), dtype=torch.long))
        self.iteration = 0
        self.last_kept_mask: Tensor | None = None

    def set_progress(self, step: int, total_steps: int) -> None:
        super().set_progress(step, total_steps)
        self.iteration = int(step)

    def _pair_term(self, sim: Tensor, pos: Tensor, neg: Tensor, num_anchors: int | Tensor,
                   anchor_weights: Tensor | None = None, pair_weights: Tensor | None = None) -> Tensor:
        """Pair loss of the rows of ``sim`` [n, M], summed over anchors and divided by ``num_anchors`` (with
        sample weights: the anchors' weight total); ``anchor_weights`` [n] and ``pair_weights`` [n, M] or None."""
        if self.pair_loss == "contrastive":
            return xbm_contrastive(sim, pos, neg, self.neg_threshold, num_anchors, pair_weights)
        pos, neg = multi_similarity_mining(sim, pos, neg, 0.1)
        if anchor_weights is None or pair_weights is None:
            return multi_similarity_per_anchor(sim, pos, neg, 2.0, 50.0, 0.5).sum() / num_anchors
        per_anchor = multi_similarity_per_anchor(sim, pos, neg, 2.0, 50.0, 0.5, pair_weights.log())
        return safe_divide((anchor_weights * per_anchor).sum(), torch.as_tensor(num_anchors, dtype=sim.dtype))

    def compute(self, embeddings: Tensor, labels: Tensor, weights: Tensor | None = None) -> Tensor:
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"PRISMLoss: embeddings have dimension {embeddings.shape[1]}, "
                             f"expected embedding_dim={self.embedding_dim}")
        if int(labels.min()) < 0 or int(labels.max()) >= self.num_classes:
            raise ValueError(f"PRISMLoss: labels must lie in [0, {self.num_classes}), got range "
                             f"[{int(labels.min())}, {int(labels.max())}]")
        x = l2_normalize(embeddings)
        filled = self.memory_labels >= 0
        clean_prob = torch.ones(x.shape[0], dtype=torch.float32, device=x.device)
        keep = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        if bool(filled.any()) and (self.iteration >= self.warmup_steps or not self.training):
            with torch.no_grad():
                clean_prob = centre_probabilities(x.detach().float(), labels, self.memory[filled],
                                                  self.memory_labels[filled], self.num_classes)
            if self.training:  # selection (and its window) only while training; eval just reports
                keep = self.threshold.select(clean_prob) if weights is None else self._select_active(clean_prob, weights)
        if weights is not None:
            keep = keep & (weights > 0)
        self._record_weights(clean_prob)
        self.last_kept_mask = keep

        xk, yk = x[keep], labels[keep]
        loss = zero_loss(embeddings)
        loss = loss + self._batch_term(xk, yk, None if weights is None else weights[keep])
        if bool(filled.any()) and self.memory_weight > 0:
            mem, mem_labels = self.memory[filled].to(xk.dtype), self.memory_labels[filled]
            same = same_label_matrix(yk, mem_labels)
            sim = xk @ mem.t()
            if weights is None:
                memory_term = self._pair_term(sim, same, ~same, x.shape[0])
            else:
                wk = weights[keep].unsqueeze(1).expand_as(sim)
                memory_term = self._pair_term(sim, same, ~same, weights.sum(), weights[keep], wk)
            loss = loss + self.memory_weight * memory_term
        if self.training:
            self._enqueue(xk.detach(), yk)
            self.iteration += 1
        return loss

    def _select_active(self, clean_prob: Tensor, weights: Tensor) -> Tensor:
        """The threshold's keep mask [N] computed over the images of positive weight only (others False)."""
        active = weights > 0
        keep = torch.zeros_like(active)
        keep[active] = self.threshold.select(clean_prob[active])
        return keep

    def _batch_term(self, xk: Tensor, yk: Tensor, wk: Tensor | None) -> Tensor:
        """The within-batch pair term of the kept rows ``xk`` [n, D] (weights ``wk`` [n] or None)."""
        if xk.shape[0] < 2:
            return torch.zeros((), dtype=xk.dtype, device=xk.device)
        sim, pos, neg = xk @ xk.t(), positive_mask(yk), negative_mask(yk)
        if wk is None:
            return self._pair_term(sim, pos, neg, xk.shape[0])
        return self._pair_term(sim, pos, neg, wk.sum(), wk, pair_weight_matrix(wk))

    @torch.no_grad()
    def _enqueue(self, feats: Tensor, labels: Tensor) -> None:
        n = feats.shape[0]
        if n >= self.memory_size:
            feats, labels, n = feats[-self.memory_size:], labels[-self.memory_size:], self.memory_size
        idx = (int(self.memory_ptr) + torch.arange(n, device=feats.device)) % self.memory_size
        self.memory[idx] = feats.to(self.memory.dtype)
        self.memory_labels[idx] = labels
        self.memory_ptr.fill_((int(self.memory_ptr) + n) % self.memory_size)

    def get_extra_state(self) -> dict:
        """The sliding window travels with ``state_dict()`` so that a resumed run selects as before."""
        return {"window": list(self.threshold.values), "iteration": self.iteration}

    def set_extra_state(self, state: dict) -> None:
        self.threshold.values = [float(v) for v in state.get("window", [])][-self.threshold.window_size:]
        self.iteration = int(state.get("iteration", 0))

    def extra_repr(self) -> str:
        return (f"num_classes={self.num_classes}, embedding_dim={self.embedding_dim}, noise_rate={self.noise_rate}, "
                f"memory_size={self.memory_size}, pair_loss={self.pair_loss!r}")
