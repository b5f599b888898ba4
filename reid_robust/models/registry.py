"""Backbone registry: one decorator is the only place a new backbone has to be named.

A registered factory takes ``last_stride`` (1 or 2) and returns an ``nn.Module`` whose
``forward(images[N, 3, H, W])`` returns a feature map ``[N, feat_dim, h, w]``.  To support
``freeze_stages`` the module also provides ``stages() -> list[list[nn.Module]]``: the stem first, then
each residual stage in input-to-output order.

Example (a user's own backbone)::

    @register_backbone("my_net", feat_dim=256)
    def my_net(last_stride: int = 2) -> nn.Module:
        return MyNet(last_stride=last_stride)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

BackboneFactory = Callable[..., nn.Module]


@dataclass(frozen=True)
class BackboneSpec:
    """A registered backbone: its factory and the channel count of the feature map it returns."""

    name: str
    factory: BackboneFactory
    feat_dim: int


BACKBONES: dict[str, BackboneSpec] = {}


def register_backbone(name: str, feat_dim: int) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering ``factory(last_stride=2) -> nn.Module`` under ``name``.

    Raises ValueError if ``name`` is already registered or ``feat_dim`` is not a positive int.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"backbone name must be a non-empty string, got {name!r}")
    if not isinstance(feat_dim, int) or isinstance(feat_dim, bool) or feat_dim <= 0:
        raise ValueError(f"feat_dim of backbone {name!r} must be a positive int, got {feat_dim!r}")

    def decorator(factory: BackboneFactory) -> BackboneFactory:
        if name in BACKBONES:
            raise ValueError(f"backbone {name!r} is already registered (by {BACKBONES[name].factory!r})")
        BACKBONES[name] = BackboneSpec(name=name, factory=factory, feat_dim=feat_dim)
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted."""
    return sorted(BACKBONES)


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name; unknown names raise ValueError listing the valid ones."""
    try:
        return BACKBONES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown backbone {name!r}; registered backbones: {', '.join(list_backbones())}"
        ) from None
