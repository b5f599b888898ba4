"""The ReID embedder: backbone feature map -> pooled ``feat`` -> BNNeck ``bn_feat``."""

from __future__ import annotations

import os

import torch
from torch import nn

from . import backbones as _backbones  # noqa: F401 - registers the torchvision ResNets
from .heads import EmbeddingHead
from .pretrained import load_pretrained_backbone
from .registry import get_backbone_spec


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
    """Build a ReID embedder from a registered backbone (see ``reid_robust.models.registry``).

    - ``pretrained``: path of a local torchvision state dict for the backbone (``fc.*`` keys ignored);
      None keeps the random initialisation. Nothing is downloaded.
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
    body = spec.factory(last_stride=last_stride)
    if pretrained:
        load_pretrained_backbone(body, pretrained)
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
