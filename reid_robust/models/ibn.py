"""ResNet-50-IBN-a (Pan, Luo, Shi, Tang, "Two at Once: Enhancing Learning and Generalization Capacities via
IBN-Net", ECCV 2018), fast-reid's default ReID backbone.

IBN-a replaces the first BatchNorm of every bottleneck in layer1..layer3 by an ``IBN`` layer: instance
normalisation on the first half of the channels, batch normalisation on the rest (Sec. 3.2, Fig. 3a);
layer4 is unchanged.  The module is torchvision's ResNet-50 with those layers swapped, so its state-dict
keys are the authors' (``layer1.0.bn1.IN.weight``, ``layer1.0.bn1.BN.running_mean``, ...,
``layer4.0.bn1.weight``; their ``fc.*`` is dropped) and the stride sits in ``conv2`` as in their code.
ImageNet weights: the authors' release file ``resnet50_ibn_a-d9d0bb7b.pth``
(github.com/XingangPan/IBN-Net/releases/download/v1.0), never downloaded here: put it in torch.hub's cache
folder (``pretrained="imagenet"``) or pass its path.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn

from .backbones import ResNetBackbone
from .registry import register_backbone

RESNET50_IBN_A_URL = "https://github.com/XingangPan/IBN-Net/releases/download/v1.0/resnet50_ibn_a-d9d0bb7b.pth"


class IBN(nn.Module):
    """Instance-batch normalisation, [N, C, H, W] -> [N, C, H, W]: affine InstanceNorm on the first
    ``int(C * ratio)`` channels (``IN``), BatchNorm on the others (``BN``)."""

    def __init__(self, channels: int, ratio: float = 0.5):
        super().__init__()
        self.instance_channels = int(channels * ratio)
        self.IN = nn.InstanceNorm2d(self.instance_channels, affine=True)
        self.BN = nn.BatchNorm2d(channels - self.instance_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, rest = torch.split(x, [self.instance_channels, x.shape[1] - self.instance_channels], dim=1)
        return torch.cat((self.IN(first.contiguous()), self.BN(rest.contiguous())), dim=1)


@register_backbone("resnet50_ibn_a", feat_dim=2048, imagenet_url=RESNET50_IBN_A_URL, download=False)
def resnet50_ibn_a(last_stride: int = 2) -> ResNetBackbone:
    """ResNet-50-IBN-a: [N, 3, H, W] -> [N, 2048, H/s, W/s] (s = 32, or 16 with ``last_stride=1``)."""
    net = torchvision.models.resnet50(weights=None)
    for stage in (net.layer1, net.layer2, net.layer3):
        for block in stage:
            block.bn1 = IBN(block.bn1.num_features)
    return ResNetBackbone(net, 2048, last_stride=last_stride)
