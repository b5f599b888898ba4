"""torchvision ResNet backbones (He et al., CVPR 2016) returning the last feature map.

The modules are built without weights (``weights=None``); ``pretrained="imagenet"`` loads the V1 ImageNet
file named by torchvision's weight API (``ResNet50_Weights.IMAGENET1K_V1``: ``resnet50-0676ba61.pth``, as
BoT) through ``reid_robust.models.imagenet``, and a local file through ``reid_robust.models.pretrained``.
The module keeps torchvision's attribute names (``conv1``, ``bn1``,
``layer1`` ... ``layer4``) so a torchvision state dict loads into it once its ``fc.*`` keys are dropped.
"""

from __future__ import annotations

from typing import Callable, cast

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from .registry import register_backbone


def set_last_stride(stage: nn.Sequential, stride: int) -> None:
    """Set the stride of the first block of a torchvision ResNet stage (its 3x3 conv and downsample conv).

    ``stride=1`` is the "last stride 1" trick of Luo et al. (BoT, CVPRW 2019): the layer4 feature map of a
    256x128 image becomes 16x8 instead of 8x4.  torchvision strides ``conv1`` of a BasicBlock and ``conv2``
    of a Bottleneck (ResNet v1.5).
    """
    if stride not in (1, 2):
        raise ValueError(f"last_stride must be 1 or 2, got {stride!r}")
    block = cast("BasicBlock | Bottleneck", stage[0])
    strided: list[nn.Conv2d] = [block.conv2 if isinstance(block, Bottleneck) else block.conv1]
    if block.downsample is not None:
        strided.append(block.downsample[0])  # type: ignore[index]  # torchvision types it as a plain Module
    for conv in strided:
        conv.stride = (stride, stride)


class ResNetBackbone(nn.Module):
    """A torchvision ResNet without its pooling and classifier: images [N, 3, H, W] -> [N, C, H/s, W/s].

    ``s`` is 32 with ``last_stride=2`` and 16 with ``last_stride=1``.
    """

    def __init__(self, net: torchvision.models.ResNet, out_channels: int, last_stride: int = 2):
        super().__init__()
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.out_channels = out_channels
        set_last_stride(self.layer4, last_stride)

    def stages(self) -> list[list[nn.Module]]:
        """The stem (conv1, bn1) then layer1..layer4, in the order ``freeze_stages`` counts them."""
        return [[self.conv1, self.bn1], [self.layer1], [self.layer2], [self.layer3], [self.layer4]]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(images))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


def _resnet_factory(constructor: Callable[..., torchvision.models.ResNet], out_channels: int):
    def factory(last_stride: int = 2) -> ResNetBackbone:
        return ResNetBackbone(constructor(weights=None), out_channels, last_stride=last_stride)

    return factory


def _register_resnet(name: str, feat_dim: int) -> Callable[..., nn.Module]:
    """Register torchvision's ``name`` with its IMAGENET1K_V1 weights as the ``imagenet`` file."""
    url = torchvision.models.get_model_weights(name)["IMAGENET1K_V1"].url
    constructor = getattr(torchvision.models, name)
    return register_backbone(name, feat_dim=feat_dim, imagenet_url=url)(_resnet_factory(constructor, feat_dim))


resnet18 = _register_resnet("resnet18", 512)
resnet34 = _register_resnet("resnet34", 512)
resnet50 = _register_resnet("resnet50", 2048)
resnet101 = _register_resnet("resnet101", 2048)
