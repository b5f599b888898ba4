"""The ReID embedder: backbone feature map -> pooled ``feat`` -> BNNeck ``bn_feat``."""

from __future__ import annotations

import os

import torch
from torch import nn

from . import backbones as _backbones  # noqa: F401 - registers the torchvision ResNets
from . import ibn as _ibn  # noqa: F401 - registers resnet50_ibn_a
from .heads import EmbeddingHead
from .imagenet import IMAGENET
from .pretrained import load_pretrained_backbone
from .registry import BackboneSpec, get_backbone_spec


class ReIDModel(nn.Module):
    """images [N, 3, H, W] -> ``{"feat": [N, D], "bn_feat": [N, D]}``; ``out_dim`` is D.

    ``frozen`` lists backbone modules whose parameters do not train and whose BatchNorm layers stay in
    eval mode (running statistics fixed) even after ``model.train()``.
    """

    def __init__(self, backbone: nn.Module, head: EmbeddingHead, frozen: list[nn.Module] | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.out_dim = head.out_dim
        self._frozen = list(frozen or [])
        for module in self._frozen:
            module.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> ReIDModel:
        super().train(mode)
        for module in self._frozen:
            module.train(False)
        return self

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.head(self.backbone(images))


def build_model(
    backbone: str = "resnet50",
    pretrained: str | os.PathLike | None = None,
    embedding_dim: int = 0,
    last_stride: int = 2,
    pooling: str = "avg",
    neck: str = "bnneck",
    freeze_stages: int = 0,
) -> ReIDModel:
    """Build a ReID embedder from a registered backbone or ``timm:<model>`` (see ``reid_robust.models.registry``).

    - ``pretrained``: ``"imagenet"`` for the backbone's official ImageNet weights from the library's cache,
      downloaded when missing and the machine is online (``reid_robust.models.imagenet``, docs/models.md);
      or the path of a local state dict in the backbone's key layout (``fc.*`` keys ignored); None keeps
      the random initialisation.
    - ``embedding_dim``: 0 keeps the backbone's channel count, D > 0 adds a bias-free Linear(C, D).
    - ``last_stride``: 1 halves the downsampling of the last stage (BoT's "last stride 1").
    - ``pooling``: "avg" or "gem" (learnable exponent); ``neck``: "bnneck" or "none".
    - ``freeze_stages``: 0 trains everything; n >= 1 freezes the stem (conv1, bn1) and the first n - 1
      residual stages, e.g. 1 = stem, 2 = stem + layer1, 5 = the whole ResNet backbone.
    """
    spec = get_backbone_spec(backbone)
    if not isinstance(freeze_stages, int) or isinstance(freeze_stages, bool) or freeze_stages < 0:
        raise ValueError(f"freeze_stages must be an int >= 0, got {freeze_stages!r}")
    if last_stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
    head = EmbeddingHead(spec.feat_dim, embedding_dim=embedding_dim, pooling=pooling, neck=neck)
    body = _build_body(spec, pretrained, last_stride)
    frozen: list[nn.Module] = []
    if freeze_stages:
        if not hasattr(body, "stages"):
            raise ValueError(f"backbone {backbone!r} defines no stages(), so freeze_stages must be 0")
        stages: list[list[nn.Module]] = body.stages()  # type: ignore[operator]  # nn.Module.__getattr__ hides the method
        if freeze_stages > len(stages):
            raise ValueError(
                f"freeze_stages={freeze_stages} exceeds the {len(stages)} stages of {backbone!r} "
                f"(stem + {len(stages) - 1} residual stages)"
            )
        frozen = [module for stage in stages[:freeze_stages] for module in stage]
    return ReIDModel(body, head, frozen=frozen)


def _build_body(spec: BackboneSpec, pretrained: str | os.PathLike | None, last_stride: int) -> nn.Module:
    """The backbone with its weights: random, ImageNet (``"imagenet"``) or a local file."""
    if pretrained == IMAGENET:
        if spec.imagenet is None:
            raise ValueError(f"backbone {spec.name!r} has no known ImageNet weights; set model.pretrained to a local "
                             "state-dict file or null")
        return spec.imagenet(last_stride=last_stride)
    body = spec.factory(last_stride=last_stride)
    if pretrained:
        load_pretrained_backbone(body, pretrained)
    return body
