"""ReID models: registered backbones (torchvision ResNets, ResNet-50-IBN-a, ``timm:<model>``), pooling,
BNNeck head, ``build_model``, ImageNet and local weights, and export helpers."""

from .backbones import ResNetBackbone
from .heads import BNNeck, EmbeddingHead, init_classifier_, init_kaiming_
from .ibn import IBN
from .imagenet import IMAGENET
from .pooling import GeM, GlobalAvgPool, build_pooling
from .pretrained import load_pretrained_backbone, read_state_dict
from .registry import (
    BACKBONES,
    BackboneSpec,
    backbone_names,
    backbone_problem,
    get_backbone_spec,
    is_known_backbone,
    list_backbones,
    register_backbone,
)
from .reid_model import ReIDModel, build_model

__all__ = [
    "BACKBONES",
    "BNNeck",
    "BackboneSpec",
    "EmbeddingHead",
    "GeM",
    "GlobalAvgPool",
    "IBN",
    "IMAGENET",
    "ReIDModel",
    "ResNetBackbone",
    "backbone_names",
    "backbone_problem",
    "build_model",
    "build_pooling",
    "get_backbone_spec",
    "init_classifier_",
    "init_kaiming_",
    "is_known_backbone",
    "list_backbones",
    "load_pretrained_backbone",
    "read_state_dict",
    "register_backbone",
]
