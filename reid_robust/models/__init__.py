"""ReID models: registered backbones, pooling, BNNeck head, ``build_model`` and export helpers."""

from .backbones import ResNetBackbone
from .heads import BNNeck, EmbeddingHead, init_classifier_, init_kaiming_
from .pooling import GeM, GlobalAvgPool, build_pooling
from .pretrained import load_pretrained_backbone, read_state_dict
from .registry import BACKBONES, BackboneSpec, get_backbone_spec, list_backbones, register_backbone
from .reid_model import ReIDModel, build_model

__all__ = [
    "BACKBONES",
    "BNNeck",
    "BackboneSpec",
    "EmbeddingHead",
    "GeM",
    "GlobalAvgPool",
    "ReIDModel",
    "ResNetBackbone",
    "build_model",
    "build_pooling",
    "get_backbone_spec",
    "init_classifier_",
    "init_kaiming_",
    "list_backbones",
    "load_pretrained_backbone",
    "read_state_dict",
    "register_backbone",
]
