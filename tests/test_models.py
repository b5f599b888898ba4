"""Tests of reid_robust.models: registry, backbones, pooling, BNNeck head, freezing, local weights."""

import pytest
import torch
import torchvision
from torch import nn

from reid_robust.models import (
    BNNeck,
    GeM,
    ResNetBackbone,
    build_model,
    get_backbone_spec,
    list_backbones,
    register_backbone,
)
from reid_robust.models import registry as registry_module
from reid_robust.models.backbones import set_last_stride

H, W = 64, 32


def _images(n=2, seed=0):
    return torch.randn(n, 3, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry, so that test registrations do not leak into other tests."""
    monkeypatch.setattr(registry_module, "BACKBONES", registry_module.BACKBONES.copy())
    return registry_module.BACKBONES


# ---------------------------------------------------------------- registry and backbones


def test_torchvision_resnets_are_registered_with_their_feature_dims():
    dims = {name: get_backbone_spec(name).feat_dim for name in ("resnet18", "resnet34", "resnet50", "resnet101")}
    assert dims == {"resnet18": 512, "resnet34": 512, "resnet50": 2048, "resnet101": 2048}


def _has_timm():
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


# every registered backbone, and one timm model (its family is resolved by the "timm:" prefix, not registered)
ALL_BACKBONES = list_backbones() + [
    pytest.param("timm:resnet18", marks=pytest.mark.skipif(not _has_timm(), reason="needs the timm extra"))
]


@pytest.mark.parametrize("name", ALL_BACKBONES)
def test_every_backbone_outputs_named_embeddings_trains_and_last_stride_1_doubles_the_map(name):
    torch.manual_seed(0)
    spec = get_backbone_spec(name)
    model = build_model(name, last_stride=1)
    out = model(_images(2))
    assert set(out) == {"feat", "bn_feat"}
    assert model.out_dim == spec.feat_dim
    assert out["feat"].shape == out["bn_feat"].shape == (2, spec.feat_dim)
    assert torch.isfinite(out["bn_feat"]).all()
    (out["feat"].sum() + out["bn_feat"].pow(2).sum()).backward()
    first = next(model.backbone.parameters())
    assert first.grad is not None and torch.isfinite(first.grad).all() and first.grad.abs().sum() > 0
    with torch.no_grad():
        fmap1 = model.eval().backbone(_images(2))
        if isinstance(model.backbone, ResNetBackbone):  # cheaper than building the network again
            set_last_stride(model.backbone.layer4, 2)
            fmap2 = model.backbone(_images(2))
        else:
            fmap2 = build_model(name, last_stride=2).eval().backbone(_images(2))
    assert fmap1.shape == (2, spec.feat_dim, H // 16, W // 16)
    assert fmap2.shape == (2, spec.feat_dim, H // 32, W // 32)


def test_register_backbone_rejects_duplicates_and_unknown_names_list_the_valid_ones(scratch_registry):
    with pytest.raises(ValueError, match="already registered"):
        register_backbone("resnet18", feat_dim=512)(lambda last_stride=2: nn.Identity())
    with pytest.raises(ValueError, match="feat_dim"):
        register_backbone("bad_dim", feat_dim=0)
    with pytest.raises(ValueError) as info:
        build_model("resnet19")
    assert "resnet19" in str(info.value)
    for name in ("resnet18", "resnet34", "resnet50", "resnet101"):
        assert name in str(info.value)


def test_a_user_backbone_registered_in_one_place_builds_and_trains(scratch_registry):
    @register_backbone("tiny_conv", feat_dim=8)
    def tiny_conv(last_stride=2):
        return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2 * last_stride, padding=1), nn.ReLU())

    assert "tiny_conv" in list_backbones()
    model = build_model("tiny_conv", embedding_dim=4, pooling="gem")
    out = model(_images(3))
    assert out["feat"].shape == (3, 4) and model.out_dim == 4
    (out["feat"].sum() + out["bn_feat"].pow(2).sum()).backward()
    assert model.backbone[0].weight.grad is not None
    with pytest.raises(ValueError, match="stages"):
        build_model("tiny_conv", freeze_stages=1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pooling": "max"}, "pooling"),
        ({"neck": "bn"}, "neck"),
        ({"embedding_dim": -1}, "embedding_dim"),
        ({"embedding_dim": 1.5}, "embedding_dim"),
        ({"last_stride": 3}, "last_stride"),
        ({"freeze_stages": -1}, "freeze_stages"),
        ({"freeze_stages": 6}, "freeze_stages=6 exceeds the 5 stages"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model("resnet18", **kwargs)


# ---------------------------------------------------------------- pooling


def test_gem_matches_hand_computed_values():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    gem = GeM(p=2.0)
    assert torch.allclose(gem(x), torch.tensor([[(30.0 / 4) ** 0.5]]))
    gem_one = GeM(p=1.0)
    assert torch.allclose(gem_one(x), torch.tensor([[2.5]]))
    big = GeM(p=50.0)(x)
    assert 3.7 < big.item() < 4.0  # approaches the maximum
    # negative activations are clamped to eps: no NaN from a fractional power
    assert torch.isfinite(GeM(p=3.0)(torch.full((1, 2, 3, 3), -1.0))).all()


def test_gem_exponent_is_learned_inside_the_model():
    torch.manual_seed(0)
    model = build_model("resnet18", pooling="gem")
    assert isinstance(model.head.pool, GeM)
    assert "head.pool.p" in dict(model.named_parameters())
    model(_images(2))["feat"].sum().backward()
    assert model.head.pool.p.grad is not None and model.head.pool.p.grad.abs() > 0


def test_avg_pooling_is_the_spatial_mean_of_the_backbone_map():
    torch.manual_seed(0)
    model = build_model("resnet18", neck="none").eval()
    with torch.no_grad():
        x = _images(2)
        expected = model.backbone(x).mean(dim=(2, 3))
        out = model(x)
    assert torch.allclose(out["feat"], expected, atol=1e-6)
    assert torch.equal(out["bn_feat"], out["feat"])


# ---------------------------------------------------------------- head: embedding_dim and BNNeck


def test_embedding_dim_reduces_both_outputs():
    torch.manual_seed(0)
    model = build_model("resnet18", embedding_dim=128)
    out = model(_images(3))
    assert model.out_dim == 128
    assert out["feat"].shape == out["bn_feat"].shape == (3, 128)
    assert build_model("resnet18", embedding_dim=0).out_dim == 512


def test_bnneck_bias_is_zero_frozen_and_normalises_the_batch():
    torch.manual_seed(0)
    model = build_model("resnet18", embedding_dim=16)
    neck = model.head.neck
    assert isinstance(neck, BNNeck)
    assert not neck.bn.bias.requires_grad and torch.count_nonzero(neck.bn.bias) == 0
    assert torch.equal(neck.bn.weight.detach(), torch.ones(16))
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.01)
    out = model(_images(4))
    (out["bn_feat"] * torch.arange(16.0)).sum().backward()
    optimiser.step()
    assert torch.count_nonzero(neck.bn.bias) == 0
    # train mode: per-dimension batch statistics with gamma = 1, beta = 0
    feat = out["feat"].detach()
    expected = (feat - feat.mean(0)) / torch.sqrt(feat.var(0, unbiased=False) + neck.bn.eps)
    assert torch.allclose(out["bn_feat"].detach(), expected, atol=1e-4)
    # eval mode: running statistics, still no shift
    model.eval()
    with torch.no_grad():
        out = model(_images(2, seed=1))
    bn = neck.bn
    expected = (out["feat"] - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight
    assert torch.allclose(out["bn_feat"], expected, atol=1e-5)


# ---------------------------------------------------------------- freezing


def _bn_layers(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def test_freeze_stages_2_freezes_stem_and_layer1_and_keeps_their_bn_in_eval():
    torch.manual_seed(0)
    model = build_model("resnet18", freeze_stages=2)
    body = model.backbone
    frozen, trained = [body.conv1, body.bn1, body.layer1], [body.layer2, body.layer3, body.layer4, model.head]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for m in trained for p in m.parameters() if p is not model.head.neck.bn.bias)
    model.eval().train()
    assert not body.bn1.training and all(not bn.training for bn in _bn_layers(body.layer1))
    assert all(bn.training for bn in _bn_layers(body.layer2))
    before_frozen = body.layer1[0].bn1.running_mean.clone()
    before_trained = body.layer2[0].bn1.running_mean.clone()
    out = model(_images(2))
    assert torch.equal(body.layer1[0].bn1.running_mean, before_frozen)
    assert not torch.equal(body.layer2[0].bn1.running_mean, before_trained)
    out["feat"].sum().backward()
    assert body.conv1.weight.grad is None and body.layer1[0].conv1.weight.grad is None
    assert body.layer2[0].conv1.weight.grad is not None


def test_freeze_stages_1_is_the_stem_only_and_5_the_whole_backbone():
    model = build_model("resnet18", freeze_stages=1)
    assert not model.backbone.conv1.weight.requires_grad and not model.backbone.bn1.weight.requires_grad
    assert model.backbone.layer1[0].conv1.weight.requires_grad
    model = build_model("resnet18", freeze_stages=5)
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(not bn.training for bn in _bn_layers(model.backbone))
    assert model.head.neck.bn.weight.requires_grad


# ---------------------------------------------------------------- local pretrained weights


@pytest.fixture(scope="module")
def resnet18_state():
    """A torchvision resnet18 state dict (fc included) with weights different from build_model's seed."""
    torch.manual_seed(1)
    return torchvision.models.resnet18(weights=None).state_dict()


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model", "ddp"])
def test_pretrained_weights_round_trip(tmp_path, resnet18_state, wrap):
    path = tmp_path / "resnet18.pth"
    payload = {
        "raw": resnet18_state,
        "state_dict": {"state_dict": resnet18_state, "epoch": 3},
        "model": {"model": resnet18_state},
        "ddp": {f"module.{k}": v for k, v in resnet18_state.items()},
    }[wrap]
    torch.save(payload, path)
    torch.manual_seed(0)
    model = build_model("resnet18", pretrained=str(path))
    loaded = model.backbone.state_dict()
    expected = {k: v for k, v in resnet18_state.items() if not k.startswith("fc.")}
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[k], expected[k]) for k in expected)


def test_pretrained_tolerates_files_without_bn_counters(tmp_path, resnet18_state):
    path = tmp_path / "old.pth"
    torch.save({k: v for k, v in resnet18_state.items() if "num_batches_tracked" not in k}, path)
    model = build_model("resnet18", pretrained=path)
    assert torch.equal(model.backbone.conv1.weight, resnet18_state["conv1.weight"])


def test_missing_pretrained_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "r50.pth"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        build_model("resnet18", pretrained=str(missing))


def test_pretrained_mismatch_names_file_and_keys(tmp_path, resnet18_state):
    wrong_shape = dict(resnet18_state, **{"conv1.weight": torch.zeros(32, 3, 7, 7)})
    del wrong_shape["layer4.1.bn2.running_var"]
    path = tmp_path / "wrong.pth"
    torch.save(wrong_shape, path)
    with pytest.raises(ValueError) as info:
        build_model("resnet18", pretrained=path)
    message = str(info.value)
    assert "wrong.pth" in message
    assert "conv1.weight: file (32, 3, 7, 7) vs model (64, 3, 7, 7)" in message
    assert "missing keys: layer4.1.bn2.running_var" in message
    extra = dict(resnet18_state, **{"layer1.0.conv3.weight": torch.zeros(256, 64, 1, 1)})  # a resnet50 key
    path_extra = tmp_path / "r50.pth"
    torch.save(extra, path_extra)
    with pytest.raises(ValueError, match=r"r50\.pth.*unexpected keys: layer1\.0\.conv3\.weight"):
        build_model("resnet18", pretrained=path_extra)


def test_pretrained_file_without_state_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="holds no state dict"):
        build_model("resnet18", pretrained=path)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="garbage.pth cannot be read"):
        build_model("resnet18", pretrained=garbage)


# ---------------------------------------------------------------- ResNet-50-IBN-a (Pan et al., ECCV 2018)


def test_ibn_normalises_the_first_half_per_instance_and_the_rest_per_batch():
    from reid_robust.models import IBN

    torch.manual_seed(0)
    ibn = IBN(6).train()
    x = torch.randn(4, 6, 5, 3) * 3 + 2
    y = ibn(x)
    assert ibn.instance_channels == 3 and y.shape == x.shape
    per_instance = y[:, :3].mean(dim=(2, 3))
    assert torch.allclose(per_instance, torch.zeros(4, 3), atol=1e-5)
    per_batch = y[:, 3:].mean(dim=(0, 2, 3))
    assert torch.allclose(per_batch, torch.zeros(3), atol=1e-5)
    assert not torch.allclose(y[:, 3:].mean(dim=(2, 3)), torch.zeros(4, 3), atol=1e-2)  # not per instance


def test_resnet50_ibn_a_has_the_authors_key_layout():
    """Keys and shapes of github.com/XingangPan/IBN-Net ibnnet/resnet_ibn.py (ibn_cfg a, a, a, None)."""
    state = build_model("resnet50_ibn_a").backbone.state_dict()
    in_layers = sorted({k.rsplit(".bn1.IN.", 1)[0] for k in state if ".bn1.IN." in k})
    assert len(in_layers) == 3 + 4 + 6  # every block of layer1..layer3, none in layer4
    assert not any(k.startswith("layer4") and ".IN." in k for k in state)
    expected = {
        "conv1.weight": (64, 3, 7, 7), "bn1.running_mean": (64,),
        "layer1.0.bn1.IN.weight": (32,), "layer1.0.bn1.IN.bias": (32,), "layer1.0.bn1.BN.running_var": (32,),
        "layer3.5.bn1.IN.weight": (128,), "layer3.5.bn1.BN.weight": (128,),
        "layer4.0.bn1.weight": (512,), "layer4.2.conv3.weight": (2048, 512, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1), "layer4.0.downsample.1.running_mean": (2048,),
    }
    assert {k: tuple(state[k].shape) for k in expected} == expected
    assert not any(k.startswith("fc.") for k in state)
