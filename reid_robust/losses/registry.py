"""Registry of losses by name: ``LOSSES`` and ``build_loss(name, **params)``."""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from reid_robust.registry import Registry, did_you_mean

from .base import MetricLoss, check_finite_parameters

LOSSES: Registry[type[MetricLoss]] = Registry("loss")


def register_loss(name: str, cls: type[MetricLoss]) -> type[MetricLoss]:
    """Add ``cls`` under ``name``; a duplicate name or a class that is not a MetricLoss raises."""
    if not (isinstance(cls, type) and issubclass(cls, MetricLoss)):
        raise TypeError(f"loss {name!r}: {cls!r} is not a subclass of MetricLoss")
    return LOSSES.register(name, cls)


def loss_parameters(name: str) -> dict[str, object]:
    """Constructor parameters of loss ``name`` with their defaults (``inspect.Parameter.empty`` if none)."""
    cls = LOSSES.lookup(name)
    params = inspect.signature(cls.__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self"}


def check_loss_parameters(name: str, given: Iterable[str], supplied_later: Iterable[str] = ()) -> None:
    """ValueError for an unknown loss ``name`` or a parameter in ``given`` that it does not accept, naming the
    closest valid one. ``supplied_later``: parameters a builder fills in (``num_classes``), not accepted here."""
    accepted = set(loss_parameters(name)) - set(supplied_later)
    unknown = sorted(set(given) - accepted)
    if unknown:
        raise ValueError(f"unknown parameter(s) {', '.join(unknown)}{did_you_mean(unknown[0], accepted)}; "
                         f"accepted: {', '.join(sorted(accepted)) or '(none)'}")


def build_loss(name: str, **params: object) -> MetricLoss:
    """Build the loss registered as ``name`` with keyword ``params``.

    Raises ValueError for an unknown name (listing the valid names), an unknown parameter (naming it and
    the accepted ones), a missing required parameter (e.g. ``num_classes`` for classifier losses) or a NaN or
    infinite real-valued parameter (``"triplet: margin must be finite, got nan"``).
    """
    cls = LOSSES.lookup(name)
    try:
        check_loss_parameters(name, params)
    except ValueError as exc:
        raise ValueError(f"loss {name!r}: {exc}") from None
    accepted = loss_parameters(name)
    missing = [k for k, d in accepted.items() if d is inspect.Parameter.empty and k not in params]
    if missing:
        raise ValueError(f"loss {name!r}: missing required parameter(s) {', '.join(missing)}")
    check_finite_parameters(name, params)
    return cls(**params)


def _register_builtin() -> None:
    from .circle import CircleLoss
    from .contrastive import ContrastiveLoss
    from .cross_entropy import CrossEntropyLoss
    from .example_weighting import DerivativeManipulationLoss, IMAELoss
    from .ice import InstanceCrossEntropyLoss
    from .multi_similarity import MultiSimilarityLoss
    from .osm_caa import OSMCAALoss
    from .prism import PRISMLoss
    from .proselflc import ProSelfLCLoss
    from .ranked_list import RankedListLoss
    from .robust_classification import GCELoss, MAELoss, SCELoss
    from .triplet import TripletLoss

    for name, cls in {
        "contrastive": ContrastiveLoss,
        "triplet": TripletLoss,
        "multi_similarity": MultiSimilarityLoss,
        "circle": CircleLoss,
        "cross_entropy": CrossEntropyLoss,
        "osm_caa": OSMCAALoss,
        "ranked_list": RankedListLoss,
        "ice": InstanceCrossEntropyLoss,
        "imae": IMAELoss,
        "dm": DerivativeManipulationLoss,
        "proselflc": ProSelfLCLoss,
        "prism": PRISMLoss,
        "mae": MAELoss,
        "gce": GCELoss,
        "sce": SCELoss,
    }.items():
        register_loss(name, cls)


_register_builtin()
