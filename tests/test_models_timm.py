"""timm backbones (``model.backbone=timm:<model>``): resolution by prefix, refusals, freezing, export.

The forward / backward / last-stride checks of ``timm:resnet18`` run with every registered backbone in
tests/test_models.py; ImageNet weights through timm's cache are in tests/test_models_pretrained.py.
"""

import sys

import pytest
import torch

from reid_robust.models import build_model, get_backbone_spec, is_known_backbone
from reid_robust.models.export import check_export, export_onnx, export_torchscript
from reid_robust.models.timm_backbones import timm_backbone_spec

timm = pytest.importorskip("timm")


def _images(n=2):
    return torch.randn(n, 3, 64, 32, generator=torch.Generator().manual_seed(0))


def test_timm_names_resolve_by_prefix_and_unknown_ones_are_refused():
    assert is_known_backbone("timm:resnet18") and is_known_backbone("timm:resnet50.tv_in1k")
    assert not is_known_backbone("timm:resnet19") and not is_known_backbone("timm:resnet50.no_such_tag")
    assert not is_known_backbone("resnet19") and is_known_backbone("resnet50_ibn_a")
    assert get_backbone_spec("timm:resnet18").feat_dim == 512
    assert get_backbone_spec("timm:convnext_tiny").feat_dim == 768
    with pytest.raises(ValueError, match=r"unknown backbone 'timm:resnet19': timm .* has no model 'resnet19'"):
        build_model("timm:resnet19")


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "swin_tiny_patch4_window7_224"])
def test_families_without_a_spatial_feature_map_are_refused_in_one_line(name):
    with pytest.raises(ValueError) as info:
        build_model(f"timm:{name}")
    message = str(info.value)
    assert f"'timm:{name}' gives no spatial feature map [N, C, h, w]" in message and "\n" not in message


def test_last_stride_1_is_refused_for_families_without_output_stride():
    with pytest.raises(ValueError, match=r"'timm:mobilenetv3_small_050' has no output_stride option.*last_stride=2"):
        build_model("timm:mobilenetv3_small_050", last_stride=1)
    model = build_model("timm:mobilenetv3_small_050", last_stride=2)
    assert model(_images())["feat"].shape == (2, get_backbone_spec("timm:mobilenetv3_small_050").feat_dim)


def test_timm_backbone_has_no_stages_so_freezing_is_refused():
    with pytest.raises(ValueError, match="defines no stages"):
        build_model("timm:resnet18", freeze_stages=1)


def test_timm_head_replaces_timm_pooling_and_classifier():
    model = build_model("timm:resnet18", embedding_dim=16, pooling="gem").eval()
    assert not any(name.startswith("model.fc") and p.numel() for name, p in model.backbone.named_parameters())
    with torch.no_grad():
        fmap = model.backbone(_images())
        assert fmap.shape == (2, 512, 2, 1)
        assert torch.allclose(model(_images())["feat"], model.head.reduction(model.head.pool(fmap)), atol=1e-6)


def test_missing_timm_package_is_named_in_one_line(monkeypatch):
    timm_backbone_spec.cache_clear()
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm now raises ImportError
    with pytest.raises(ValueError, match=r"timm backbones need the timm package: pip install -e '\.\[timm\]'"):
        build_model("timm:resnet18")
    assert not is_known_backbone("timm:resnet18")
    timm_backbone_spec.cache_clear()


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_timm_resnet18_exports(tmp_path, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    model = build_model("timm:resnet18", embedding_dim=16, last_stride=1)
    path = tmp_path / ("model.onnx" if fmt == "onnx" else "model.pt")
    (export_onnx if fmt == "onnx" else export_torchscript)(model, path, _images())
    check = check_export(model, path, _images(3))
    assert check.ok, str(check)
