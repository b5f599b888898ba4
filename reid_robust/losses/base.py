"""Common base class of all losses: input checks, float32 computation, progress, sample weights."""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Mapping
from typing import Any, Callable, ClassVar

import torch
from torch import Tensor, nn

from .pairwise import normalize_to_mean_one, zero_loss


def check_embeddings_and_labels(embeddings: Tensor, labels: Tensor, where: str) -> None:
    """Raise ValueError naming ``where`` when the shapes or dtypes of a loss input are wrong."""
    if not isinstance(embeddings, Tensor) or not isinstance(labels, Tensor):
        raise TypeError(f"{where}: embeddings and labels must be tensors, got "
                        f"{type(embeddings).__name__} and {type(labels).__name__}")
    if embeddings.dim() != 2:
        raise ValueError(f"{where}: embeddings must have shape [N, D], got {tuple(embeddings.shape)}")
    if not embeddings.is_floating_point():
        raise ValueError(f"{where}: embeddings must be floating point, got {embeddings.dtype}")
    if labels.dim() != 1 or labels.numel() != embeddings.shape[0]:
        raise ValueError(f"{where}: labels must have shape [N] = [{embeddings.shape[0]}], "
                         f"got {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"{where}: labels must be an integer tensor, got {labels.dtype}")
    if embeddings.shape[0] == 0:
        raise ValueError(f"{where}: empty batch (N = 0)")


def check_sample_weight(sample_weight: object, n: int, where: str) -> Tensor:
    """The per-image weights [N] as a detached float64 tensor, or ValueError naming ``where`` when they are not
    a real tensor of shape [N] with finite, non-negative entries."""
    if not isinstance(sample_weight, Tensor):
        raise TypeError(f"{where}: sample_weight must be a tensor of shape [N] = [{n}] or None, "
                        f"got {type(sample_weight).__name__}")
    if sample_weight.dim() != 1 or sample_weight.numel() != n:
        raise ValueError(f"{where}: sample_weight must have shape [N] = [{n}], got {tuple(sample_weight.shape)}")
    if sample_weight.dtype == torch.bool or sample_weight.is_complex():
        raise ValueError(f"{where}: sample_weight must be real numbers, got {sample_weight.dtype}")
    w = sample_weight.detach().to(torch.float64)
    bad = ~torch.isfinite(w)
    if bool(bad.any()):
        i = int(bad.nonzero()[0])
        raise ValueError(f"{where}: sample_weight must be finite, got {float(w[i])} at index {i}")
    if bool((w < 0).any()):
        i = int((w < 0).nonzero()[0])
        raise ValueError(f"{where}: sample_weight must be >= 0, got {float(w[i])} at index {i}")
    return w


def check_finite_parameters(where: str, params: Mapping[str, object]) -> None:
    """ValueError naming ``where`` and the parameter when a real-valued parameter is NaN or infinite.

    A NaN margin or scale does not always give a NaN loss (a comparison with NaN is False, so masks and
    miners silently drop every pair): it is refused where it enters."""
    for key, value in params.items():
        if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
            if not math.isfinite(float(value)):
                raise ValueError(f"{where}: {key} must be finite, got {value}")


def _checked_init(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a loss constructor so that its real-valued arguments are checked first (``check_finite_parameters``)."""
    signature = inspect.signature(init)

    @functools.wraps(init)  # inspect.signature (registry.loss_parameters) still sees the real parameters
    def init_with_checks(self: Any, *args: Any, **kwargs: Any) -> None:
        bound = signature.bind(self, *args, **kwargs).arguments
        check_finite_parameters(type(self).__name__, {k: v for k, v in bound.items() if k != "self"})
        init(self, *args, **kwargs)
    return init_with_checks


def non_finite_loss(embeddings: Tensor) -> Tensor:
    """A NaN scalar still connected to the graph of ``embeddings`` (its backward gives NaN gradients)."""
    return embeddings.sum() * float("nan")


class MetricLoss(nn.Module):
    """Base of every loss in ``reid_robust.losses``.

    ``forward(embeddings [N, D], labels [N], sample_weight [N] | None) -> scalar``. Half-precision inputs are cast to float32 and
    autocast is switched off inside, so the loss arithmetic is float32 (float64 inputs stay float64).
    Subclasses implement ``compute(embeddings, labels)`` and may call ``_record_weights``.

    Non-finite input never hides: embeddings holding NaN or +-inf give a NaN loss (connected to the graph)
    without running ``compute``, so masked reductions cannot drop the bad entries, no state (PRISM's memory)
    is updated and no sample weights are recorded (``last_sample_weights`` is None). This costs one
    ``isfinite`` pass and one host sync per forward. Real-valued constructor arguments that are NaN or
    infinite are refused (``check_finite_parameters``), for every subclass, before its ``__init__`` runs.

    ``sample_weight``: optional finite, non-negative per-image weights (constants: no gradient reaches them),
    refused in one line otherwise. Only relative weights matter: they are divided by their maximum (so weights
    all equal to any c > 0 give the unweighted loss) and passed to ``compute(embeddings, labels, weights)``
    in the embeddings' dtype (relative weights below its smallest normal number count as 0); a pair weighs
    ``min(w_i, w_j)``, a triplet the minimum of its three, an image of weight 0 is removed exactly (neither
    anchor nor mining candidate), positive weights never change mining.
    Each loss's docstring states its normalisation. All weights 0 give an exact 0 (zero gradients, no state
    update, ``last_sample_weights`` None). None runs ``compute(embeddings, labels)``: today's loss bit for bit.

    Class attributes:
        needs_num_classes: True when the constructor takes ``num_classes`` and ``embedding_dim``.
        needs_positives: True when the loss needs same-label pairs in a batch (pair, triplet, ranking
            losses: PK batches with K >= 2); False for classification losses.
        weights_meaning: ``"reliability"`` (low = likely mislabeled/outlier), ``"hardness"``
            (high = harder), ``"emphasis"`` (highest at an intermediate confidence, low at both p -> 0 and
            p -> 1: DM/IMAE; neither a reliability nor a hardness) or None when the loss exposes no sample
            weights.
    """

    needs_num_classes: ClassVar[bool] = False
    needs_positives: ClassVar[bool] = True
    weights_meaning: str | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "__init__" in cls.__dict__:
            cls.__init__ = _checked_init(cls.__dict__["__init__"])  # type: ignore[method-assign]

    def __init__(self) -> None:
        super().__init__()
        self._sample_weights: Tensor | None = None
        self._raw_weight_mean: Tensor | None = None
        self._pending_weights: Callable[[], Tensor] | None = None
        self.step = 0
        self.total_steps = 0

    def set_progress(self, step: int, total_steps: int) -> None:
        """Tell the loss where training is (step in [0, total_steps]); a no-op unless a loss reads it."""
        if total_steps < 0 or step < 0:
            raise ValueError(f"{type(self).__name__}.set_progress: step and total_steps must be >= 0, "
                             f"got step={step}, total_steps={total_steps}")
        self.step = int(step)
        self.total_steps = int(total_steps)

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1] (0 until ``set_progress`` is called)."""
        if self.total_steps <= 0:
            return 0.0
        return min(max(self.step / self.total_steps, 0.0), 1.0)

    def forward(self, embeddings: Tensor, labels: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        name = type(self).__name__
        check_embeddings_and_labels(embeddings, labels, name)
        weights = None if sample_weight is None else check_sample_weight(sample_weight, embeddings.shape[0], name)
        if embeddings.dtype in (torch.float16, torch.bfloat16):
            embeddings = embeddings.float()
        labels = labels.to(device=embeddings.device, dtype=torch.long)
        if not bool(torch.isfinite(embeddings).all()):
            self._sample_weights, self._pending_weights = None, None
            return non_finite_loss(embeddings)
        if weights is not None:
            peak = weights.max()
            if not bool(peak > 0):  # every image removed: an exact 0, nothing learned, no state touched
                self._sample_weights, self._pending_weights = None, None
                return zero_loss(embeddings)
            weights = (weights / peak).to(device=embeddings.device, dtype=embeddings.dtype)
            # a relative weight below the smallest normal number (1.2e-38 in float32) counts as 0: 1/sum(w)
            # stays finite in every weighted mean, so no gradient overflows
            weights = torch.where(weights >= torch.finfo(weights.dtype).tiny, weights, 0.0)
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            if weights is None:
                return self.compute(embeddings, labels)
            return self.compute(embeddings, labels, weights)

    def compute(self, embeddings: Tensor, labels: Tensor,
                weights: Tensor | None = None) -> Tensor:  # pragma: no cover - abstract
        """The loss of a checked batch; ``weights`` [N] are the sample weights scaled to maximum 1 (or None)."""
        raise NotImplementedError

    @property
    def last_sample_weights(self) -> Tensor | None:
        """Detached per-sample weights [N] of the last forward, mean 1 (None if the loss has none)."""
        if self._pending_weights is not None:
            self._record_weights(self._pending_weights())
        return self._sample_weights

    @property
    def last_raw_weight_mean(self) -> float | None:
        """Mean of the last forward's weights before the rescaling to mean 1 (e.g. OSM+CAA's mean class-aware
        attention, which falls as the classifier doubts more labels); None if the loss has none."""
        if self.last_sample_weights is None or self._raw_weight_mean is None:
            return None
        return float(self._raw_weight_mean)

    def _record_weights(self, weights: Tensor) -> None:
        """Store detached per-sample weights [N], rescaled to mean 1 (and their raw mean)."""
        self._pending_weights = None
        raw = weights.detach().to(torch.float32)
        self._raw_weight_mean = raw.mean() if raw.numel() else None
        self._sample_weights = normalize_to_mean_one(raw)

    def _record_weights_lazily(self, compute: Callable[[], Tensor]) -> None:
        """Defer a weight computation (run under no_grad) until ``last_sample_weights`` is read."""
        def run() -> Tensor:
            with torch.no_grad():
                return compute()
        self._sample_weights = None
        self._pending_weights = run


class ClassifierLoss(MetricLoss):
    """Base of losses that own a bias-free linear classifier ``Linear(embedding_dim, num_classes)``.

    The classifier is initialised as in BoT (normal, std 0.001). Labels must lie in [0, num_classes).
    """

    needs_num_classes: ClassVar[bool] = True
    needs_positives: ClassVar[bool] = False

    def __init__(self, num_classes: int, embedding_dim: int) -> None:
        super().__init__()
        name = type(self).__name__
        if int(num_classes) < 1:
            raise ValueError(f"{name}: num_classes must be >= 1, got {num_classes}")
        if int(embedding_dim) < 1:
            raise ValueError(f"{name}: embedding_dim must be >= 1, got {embedding_dim}")
        self.num_classes = int(num_classes)
        self.embedding_dim = int(embedding_dim)
        self.classifier = nn.Linear(self.embedding_dim, self.num_classes, bias=False)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def logits(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Classifier logits [N, num_classes] in the classifier's dtype promoted with the input's."""
        name = type(self).__name__
        if embeddings.shape[1] != self.embedding_dim:
            raise ValueError(f"{name}: embeddings have dimension {embeddings.shape[1]}, "
                             f"the classifier expects embedding_dim={self.embedding_dim}")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= self.num_classes:
            raise ValueError(f"{name}: labels must lie in [0, {self.num_classes}), got range [{lo}, {hi}]")
        weight = self.classifier.weight
        dtype = torch.promote_types(weight.dtype, embeddings.dtype)
        return embeddings.to(dtype) @ weight.to(dtype).t()
