"""Backbone registry: one decorator is the only place a new backbone has to be named.

A registered factory takes ``last_stride`` (1 or 2) and returns an ``nn.Module`` whose
``forward(images[N, 3, H, W])`` returns a feature map ``[N, feat_dim, h, w]``.  To support
``freeze_stages`` the module also provides ``stages() -> list[list[nn.Module]]``: the stem first, then
each residual stage in input-to-output order.  ``imagenet_url`` names the file ``pretrained="imagenet"``
loads (see ``reid_robust.models.imagenet``); ``download=False`` when it must be fetched by hand.

Names ``timm:<model>`` are not registered: they resolve through the optional timm package
(``reid_robust.models.timm_backbones``).

Example (a user's own backbone)::

    @register_backbone("my_net", feat_dim=256)
    def my_net(last_stride: int = 2) -> nn.Module:
        return MyNet(last_stride=last_stride)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from reid_robust.registry import Registry

BackboneFactory = Callable[..., nn.Module]
TIMM_PREFIX = "timm:"
TIMM_FORM = f", or {TIMM_PREFIX}<model> (any timm model with a spatial feature map)"


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone: its factory, the channel count of its feature map and, when known, how to build it with
    ImageNet weights (``imagenet(last_stride) -> nn.Module``; None: only local files can be loaded)."""

    name: str
    factory: BackboneFactory
    feat_dim: int
    imagenet: BackboneFactory | None = None


BACKBONES: Registry[BackboneSpec] = Registry("backbone")


def register_backbone(
    name: str, feat_dim: int, imagenet_url: str | None = None, download: bool = True
) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator registering ``factory(last_stride=2) -> nn.Module`` under ``name``.

    ``imagenet_url``: the official ImageNet weights (a state dict in the module's key layout) that
    ``pretrained="imagenet"`` finds in, or downloads to (``download=True``), torch.hub's cache.
    Raises ValueError if ``name`` is already registered or ``feat_dim`` is not a positive int.
    """
    if not isinstance(name, str) or not name or name.startswith(TIMM_PREFIX):
        raise ValueError(f"backbone name must be a non-empty string not starting with {TIMM_PREFIX!r}, got {name!r}")
    if not isinstance(feat_dim, int) or isinstance(feat_dim, bool) or feat_dim <= 0:
        raise ValueError(f"feat_dim of backbone {name!r} must be a positive int, got {feat_dim!r}")

    def decorator(factory: BackboneFactory) -> BackboneFactory:
        imagenet = None
        if imagenet_url is not None:
            from .imagenet import with_imagenet_weights

            imagenet = with_imagenet_weights(name, factory, imagenet_url, download)
        BACKBONES.register(name, BackboneSpec(name=name, factory=factory, feat_dim=feat_dim, imagenet=imagenet))
        return factory

    return decorator


def list_backbones() -> list[str]:
    """Names of all registered backbones, sorted (``timm:<model>`` names are not listed)."""
    return BACKBONES.names()


def backbone_names() -> str:
    """The registered names and the ``timm:<model>`` form, for messages."""
    return ", ".join(list_backbones()) + TIMM_FORM


def backbone_problem(name: object) -> str | None:
    """None for a registered name or ``timm:<model>`` naming a model of the installed timm (nothing is built);
    otherwise one line saying why the name is unknown (with the closest registered name)."""
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        from .timm_backbones import timm_name_problem

        problem = timm_name_problem(name[len(TIMM_PREFIX):])
        return None if problem is None else f"unknown backbone {name!r}: {problem}"
    try:
        BACKBONES.lookup(name)
    except ValueError as exc:
        return f"{exc}{TIMM_FORM}"
    return None


def is_known_backbone(name: object) -> bool:
    """True for a registered name or ``timm:<model>`` naming a model of the installed timm (without building it)."""
    return backbone_problem(name) is None


def get_backbone_spec(name: str) -> BackboneSpec:
    """Look a backbone up by name (``timm:<model>`` through timm); unknown names raise ValueError listing
    the valid ones."""
    if isinstance(name, str) and name.startswith(TIMM_PREFIX):
        from .timm_backbones import timm_backbone_spec

        return timm_backbone_spec(name[len(TIMM_PREFIX):])
    try:
        return BACKBONES.lookup(name)
    except ValueError as exc:
        raise ValueError(f"{exc}{TIMM_FORM}") from None
