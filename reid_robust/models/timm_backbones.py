"""``timm:<model>`` backbones from the timm model zoo (optional: ``pip install -e .[timm]``).

The model is built with ``num_classes=0, global_pool=""`` and used through ``forward_features``: the
family's last feature map [N, C, h, w] goes to our pooling and BNNeck, timm's own pooling and classifier are
dropped.  ``last_stride=1`` is timm's ``output_stride=16`` (the last stage dilated instead of strided:
the same 16x map as BoT's last stride 1); families without that option refuse it.  Families that give no
[N, C, h, w] map at any input size (ViT, Swin, MLP-Mixer: tokens, channels-last or a fixed input size) are
refused in one line.  ``pretrained="imagenet"`` uses timm's default pretrained tag (``timm:resnet50`` is
``resnet50.a1_in1k``; ``timm:resnet50.tv_in1k`` is torchvision's V1 file) from timm's cache: the Hugging
Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``) or, for URL weights, torch.hub's.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import urllib.parse

import torch
from torch import nn

from .imagenet import file_name, host_answers, missing_weights, torch_hub_checkpoints
from .registry import TIMM_PREFIX, BackboneSpec

_PROBE_SIZE = (256, 128)  # the ReID input size; fixed-size (224) token models fail on it


def _timm():
    try:
        import timm
    except ImportError:
        raise ValueError("timm backbones need the timm package: pip install -e '.[timm]' (or pip install timm)") from None
    return timm


def timm_name_problem(name: str) -> str | None:
    """None if the installed timm knows ``name`` (with or without a ``.tag``), else one line saying why not."""
    try:
        import timm
    except ImportError:
        return "timm backbones need the timm package: pip install -e '.[timm]' (or pip install timm)"
    if not name or not timm.is_model(name):
        return f"timm {timm.__version__} has no model {name!r}"
    try:
        timm.models.get_pretrained_cfg(name)  # a ".tag" must be one of the model's
    except RuntimeError:
        return f"timm {timm.__version__} has no pretrained tag {name!r}"
    return None


class TimmBackbone(nn.Module):
    """A timm model's ``forward_features``: images [N, 3, H, W] -> [N, feat_dim, h, w]."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(images)  # type: ignore[operator]  # timm's method, typed as Module


def _create(name: str, last_stride: int, **kwargs) -> nn.Module:
    """``timm.create_model`` without head or pooling; one-line errors for unknown names and output strides."""
    timm = _timm()
    problem = timm_name_problem(name)
    if problem is not None:
        raise ValueError(f"unknown backbone '{TIMM_PREFIX}{name}': {problem}")
    extra = {"output_stride": 16} if last_stride == 1 else {}
    try:
        return timm.create_model(name, num_classes=0, global_pool="", **extra, **kwargs)
    except TypeError as err:
        if "output_stride" in str(err):
            raise ValueError(f"backbone '{TIMM_PREFIX}{name}' has no output_stride option, so last_stride=1 cannot "
                             "be applied; set model.last_stride=2") from None
        raise


@functools.cache
def timm_backbone_spec(name: str) -> BackboneSpec:
    """The spec of ``timm:<name>``; its feature-map width is read from a forward pass on the meta device.

    Raises ValueError (one line) for an unknown name or a family without a spatial feature map.
    """
    with torch.device("meta"):
        model = _create(name, last_stride=2)
        try:
            probe = torch.empty(1, 3, *_PROBE_SIZE)
            shape = tuple(model.forward_features(probe).shape)  # type: ignore[operator]
            reason = "" if len(shape) == 4 and shape[1] == model.num_features else f"it gives shape {shape}"
        except Exception as err:  # fixed input size (assertions), token reshapes
            reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
    if reason:
        raise ValueError(f"backbone '{TIMM_PREFIX}{name}' gives no spatial feature map [N, C, h, w] at a "
                         f"{_PROBE_SIZE[0]}x{_PROBE_SIZE[1]} input ({reason}); use a convolutional family "
                         "(resnet*, convnext*, efficientnet*, regnet*, ...)")
    factory = functools.partial(_build, name)
    return BackboneSpec(name=TIMM_PREFIX + name, factory=factory, feat_dim=int(shape[1]),
                        imagenet=functools.partial(_build, name, imagenet=True))


def _build(name: str, last_stride: int = 2, imagenet: bool = False) -> TimmBackbone:
    if not imagenet:
        return TimmBackbone(_create(name, last_stride))
    found = _timm().models.get_pretrained_cfg(name)
    cfg = dataclasses.asdict(found) if found is not None else {"architecture": name}
    cache_dir = hf_hub_cache()
    cached = _cached_file(cfg, cache_dir)
    if cached is not None:
        overlay = {"file": cached, "hf_hub_id": None, "source": ""}
        return TimmBackbone(_create(name, last_stride, pretrained=True, pretrained_cfg_overlay=overlay))
    url, folder = _download_source(cfg, cache_dir)
    if not host_answers(url):
        raise missing_weights(f"{TIMM_PREFIX}{name}", file_name(url), url, folder,
                              f"cannot be downloaded ({urllib.parse.urlparse(url).hostname} does not answer: offline?)")
    try:
        return TimmBackbone(_create(name, last_stride, pretrained=True, cache_dir=cache_dir))
    except Exception as err:  # network or hub failure: the same one line
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise missing_weights(f"{TIMM_PREFIX}{name}", file_name(url), url, folder,
                              f"the download failed ({reason})") from None


def hf_hub_cache() -> str:
    """The Hugging Face hub cache timm downloads to: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the default
    (read from the environment at each call)."""
    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _hf_source(cfg) -> tuple[str, str | None, str] | None:
    """``(repo_id, revision, file)`` of a hub-hosted pretrained tag, else None."""
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        return None
    repo, _, revision = hub_id.partition("@")
    return repo, revision or None, cfg.get("hf_hub_filename") or "model.safetensors"


def _cached_file(cfg, cache_dir: str) -> str | None:
    """The weights file of ``cfg`` already in timm's caches (hub first, then a URL's torch.hub file)."""
    hub = _hf_source(cfg)
    if hub is not None:
        from huggingface_hub import try_to_load_from_cache

        repo, revision, first = hub
        for filename in dict.fromkeys((first, "model.safetensors", "pytorch_model.bin")):
            found = try_to_load_from_cache(repo, filename, cache_dir=cache_dir, revision=revision)
            if isinstance(found, str):
                return found
    if cfg.get("url"):
        path = os.path.join(torch_hub_checkpoints(), file_name(cfg["url"]))
        return path if os.path.isfile(path) else None
    return None


def _download_source(cfg, cache_dir: str) -> tuple[str, str]:
    """``(url, cache folder)`` timm downloads ``cfg``'s weights from and to."""
    hub = _hf_source(cfg)
    if hub is not None:
        from huggingface_hub import hf_hub_url

        repo, revision, filename = hub
        return hf_hub_url(repo, filename, revision=revision), cache_dir
    if cfg.get("url"):
        return cfg["url"], torch_hub_checkpoints()
    raise ValueError(f"timm has no pretrained weights for {cfg.get('architecture')!r}; "
                     "set model.pretrained to a local file or null")
