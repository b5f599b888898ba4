"""``pretrained="imagenet"``: the real loading path through torch.hub's and timm's caches, with generated
state dicts saved under the official file names in temporary cache folders (no network: the host check is
replaced, so nothing waits on a download)."""

import pytest
import torch
import torchvision

from reid_robust.models import build_model, imagenet
from reid_robust.models.ibn import RESNET50_IBN_A_URL

R18_URL = "https://download.pytorch.org/models/resnet18-f37072fd.pth"


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; its checkpoints folder is where torch.hub caches weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "torch" / "hub" / "checkpoints"


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(imagenet, "host_answers", lambda url, timeout=3.0: False)


def _resnet18_state(seed=1):
    torch.manual_seed(seed)
    return torchvision.models.resnet18(weights=None).state_dict()


def test_imagenet_names_torchvisions_v1_files():
    urls = {name: torchvision.models.get_model_weights(name)["IMAGENET1K_V1"].url
            for name in ("resnet18", "resnet34", "resnet50", "resnet101")}
    assert urls["resnet50"] == "https://download.pytorch.org/models/resnet50-0676ba61.pth"  # BoT's file
    assert urls["resnet18"] == R18_URL


def test_imagenet_loads_the_cached_torchvision_file(torch_home, offline):
    state = _resnet18_state()
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / "resnet18-f37072fd.pth")
    torch.manual_seed(0)
    loaded = build_model("resnet18", pretrained="imagenet").backbone.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in loaded)


@pytest.mark.parametrize("name, file", [("resnet18", "resnet18-f37072fd.pth"), ("resnet50", "resnet50-0676ba61.pth")])
def test_missing_imagenet_file_offline_names_file_url_and_folder_in_one_line(torch_home, offline, name, file):
    with pytest.raises(FileNotFoundError) as info:
        build_model(name, pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert f"{file} are not in {torch_home}" in message
    assert f"https://download.pytorch.org/models/{file}" in message and "offline" in message


def test_failed_download_becomes_the_one_line(torch_home, monkeypatch):
    monkeypatch.setattr(imagenet, "host_answers", lambda url, timeout=3.0: True)

    def refuse(url, dst, hash_prefix=None, progress=True):
        raise OSError("connection reset by peer")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    with pytest.raises(FileNotFoundError, match=r"resnet18-f37072fd\.pth .*download failed \(connection reset"):
        build_model("resnet18", pretrained="imagenet")


def test_download_goes_to_the_cache_with_torchvisions_hash_prefix(torch_home, monkeypatch):
    monkeypatch.setattr(imagenet, "host_answers", lambda url, timeout=3.0: True)
    state, calls = _resnet18_state(seed=2), []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        torch.save(state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    model = build_model("resnet18", pretrained="imagenet")
    assert calls == [(R18_URL, str(torch_home / "resnet18-f37072fd.pth"), "f37072fd")]
    assert torch.equal(model.backbone.conv1.weight, state["conv1.weight"])


def test_host_answers_is_false_for_a_name_that_cannot_resolve():
    assert imagenet.host_answers("https://no-such-host.invalid/x.pth", timeout=1.0) is False


def test_resnet50_ibn_a_imagenet_is_never_downloaded_and_loads_the_authors_file(torch_home, monkeypatch):
    monkeypatch.setattr(imagenet, "host_answers", lambda *a, **k: pytest.fail("IBN weights must not be downloaded"))
    with pytest.raises(FileNotFoundError) as info:
        build_model("resnet50_ibn_a", pretrained="imagenet")
    message = str(info.value)
    assert f"resnet50_ibn_a-d9d0bb7b.pth are not in {torch_home} and are never downloaded" in message
    assert RESNET50_IBN_A_URL in message and "\n" not in message
    torch.manual_seed(3)
    state = build_model("resnet50_ibn_a").backbone.state_dict()
    state.update({"fc.weight": torch.zeros(1000, 2048), "fc.bias": torch.zeros(1000)})  # as in the release
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / "resnet50_ibn_a-d9d0bb7b.pth")
    torch.manual_seed(0)
    model = build_model("resnet50_ibn_a", pretrained="imagenet")
    assert torch.equal(model.backbone.layer1[0].bn1.IN.weight, state["layer1.0.bn1.IN.weight"])
    assert torch.equal(model.backbone.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])


def test_imagenet_for_a_backbone_without_known_weights_is_refused(monkeypatch):
    from torch import nn

    from reid_robust.models import register_backbone
    from reid_robust.models import registry as registry_module

    monkeypatch.setattr(registry_module, "BACKBONES", registry_module.BACKBONES.copy())
    register_backbone("tiny_conv", feat_dim=8)(lambda last_stride=2: nn.Conv2d(3, 8, 3))
    with pytest.raises(ValueError, match="'tiny_conv' has no known ImageNet weights"):
        build_model("tiny_conv", pretrained="imagenet")


# ---------------------------------------------------------------- timm: the Hugging Face hub cache


def _hub_snapshot(cache, repo, filename, revision="0" * 40):
    """The hub cache layout huggingface_hub reads: refs/main -> snapshots/<revision>/<filename>."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    (root / "snapshots" / revision).mkdir(parents=True)
    return root / "snapshots" / revision / filename


def test_timm_imagenet_loads_from_the_hub_cache(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    from reid_robust.models import timm_backbones

    monkeypatch.setattr(timm_backbones, "host_answers", lambda url, timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    torch.manual_seed(4)
    state = timm.create_model("resnet18").state_dict()  # fc included, as published
    save_file(state, str(_hub_snapshot(tmp_path / "hub", "timm/resnet18.a1_in1k", "model.safetensors")))
    torch.manual_seed(0)
    model = build_model("timm:resnet18", pretrained="imagenet")
    assert torch.equal(model.backbone.model.conv1.weight, state["conv1.weight"])
    assert torch.equal(model.backbone.model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])


def test_timm_imagenet_missing_offline_names_file_url_and_folder(tmp_path, monkeypatch):
    pytest.importorskip("timm")
    from reid_robust.models import timm_backbones

    monkeypatch.setattr(timm_backbones, "host_answers", lambda url, timeout=3.0: False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as info:
        build_model("timm:resnet18", pretrained="imagenet")
    message = str(info.value)
    assert "\n" not in message
    assert "model.safetensors are not in " + str(tmp_path / "hub") in message
    assert "https://huggingface.co/timm/resnet18.a1_in1k/resolve/main/model.safetensors" in message


def test_timm_failed_download_becomes_the_one_line(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    from reid_robust.models import timm_backbones

    monkeypatch.setattr(timm_backbones, "host_answers", lambda url, timeout=3.0: True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    real_create = timm.create_model
    seen = []

    def create(name, **kwargs):
        seen.append(kwargs.get("pretrained", False))
        if kwargs.get("pretrained"):
            raise RuntimeError("Cannot reach https://huggingface.co: offline mode is enabled")
        return real_create(name, **kwargs)

    monkeypatch.setattr(timm, "create_model", create)
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors .*the download failed \(Cannot reach"):
        build_model("timm:resnet18", pretrained="imagenet")
    assert seen[-1] is True


# ---------------------------------------------------------------- config: `imagenet` is a name, timm:<model> a backbone


@pytest.mark.parametrize("which", ["typed", "engine"])
def test_config_accepts_imagenet_as_a_name_and_timm_and_ibn_backbones(tmp_path, monkeypatch, which):
    if which == "typed":
        from reid_robust.config import ConfigError, load_config, with_absolute_paths

        def pretrained_of(cfg):
            return cfg.model.pretrained
    else:
        from reid_robust.engine.config import ConfigError, load_config, with_absolute_paths

        def pretrained_of(cfg):
            return cfg.model.pretrained

    monkeypatch.chdir(tmp_path)  # no file called "imagenet" here
    for backbone in ["resnet50", "resnet50_ibn_a"] + (["timm:resnet18"] if _has_timm() else []):
        cfg = load_config(None, [f"model.backbone={backbone}", "model.pretrained=imagenet"])
        assert pretrained_of(with_absolute_paths(cfg)) == "imagenet"
    with pytest.raises(ConfigError, match="model.pretrained: file not found: imagenet.pth"):
        load_config(None, ["model.pretrained=imagenet.pth"])
    with pytest.raises(ConfigError, match=r"model.backbone: unknown backbone 'resnet50_ibn'.*did you mean 'resnet50_ibn_a'"):
        load_config(None, ["model.backbone=resnet50_ibn"])
    if _has_timm():
        with pytest.raises(ConfigError, match=r"model.backbone: unknown backbone 'timm:resnet19': timm .* no model"):
            load_config(None, ["model.backbone=timm:resnet19"])


def _has_timm():
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True
