"""``pretrained="imagenet"``: official ImageNet weights found in, or downloaded to, the library's own cache.

torchvision backbones take their file from torchvision's weight API (``ResNet50_Weights.IMAGENET1K_V1``:
``resnet50-0676ba61.pth``, the V1 weights BoT uses) and keep it where ``torch.hub`` does:
``$TORCH_HOME/hub/checkpoints/`` (default ``~/.cache/torch/hub/checkpoints/``).  The cache is looked at
first, so an offline machine works once the file is there; a missing file is downloaded only when the
file's host answers, and otherwise (or when the download fails, or the backbone's weights are never
downloaded, as IBN-Net's) one line names the file, its URL and the cache folder.  Files are read with
``torch.load(weights_only=True)`` (``reid_robust.models.pretrained``).
"""

from __future__ import annotations

import os
import socket
import urllib.parse
from typing import Callable

import torch
from torch import nn

from .pretrained import load_pretrained_backbone

IMAGENET = "imagenet"
_CONNECT_TIMEOUT_S = 3.0


def torch_hub_checkpoints() -> str:
    """torch.hub's weight cache, ``$TORCH_HOME/hub/checkpoints`` (read from the environment at each call)."""
    return os.path.join(torch.hub.get_dir(), "checkpoints")


def file_name(url: str) -> str:
    """The name torch.hub caches ``url`` under (the last path component)."""
    return os.path.basename(urllib.parse.urlparse(url).path)


def host_answers(url: str, timeout: float = _CONNECT_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``url``'s host opens within ``timeout`` seconds: a download is plausible.

    Without network the name lookup fails at once, so an offline machine never waits on a download.
    """
    parts = urllib.parse.urlparse(url)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def missing_weights(what: str, name: str, url: str, folder: str, why: str) -> FileNotFoundError:
    """The one-line error for ImageNet weights that are neither cached nor downloadable."""
    return FileNotFoundError(
        f"model.pretrained=imagenet: {what} weights {name} are not in {folder} and {why}; download {url} "
        f"into that folder, or set model.pretrained to the file's path"
    )


def cached_or_downloaded(what: str, url: str, download: bool = True) -> str:
    """Path of ``url``'s file in torch.hub's cache, downloading it first when allowed and the host answers.

    Raises FileNotFoundError (one line: file name, URL, cache folder) when the file cannot be had.
    """
    folder, name = torch_hub_checkpoints(), file_name(url)
    path = os.path.join(folder, name)
    if os.path.isfile(path):
        return path
    if not download:
        raise missing_weights(what, name, url, folder, "are never downloaded (the authors' release)")
    if not host_answers(url):
        raise missing_weights(what, name, url, folder, f"cannot be downloaded ({urllib.parse.urlparse(url).hostname} "
                              "does not answer: offline?)")
    os.makedirs(folder, exist_ok=True)
    found = torch.hub.HASH_REGEX.search(name)
    try:
        torch.hub.download_url_to_file(url, path, hash_prefix=found.group(1) if found else None, progress=True)
    except Exception as err:  # network, disk or hash failure: the same one line
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise missing_weights(what, name, url, folder, f"the download failed ({reason})") from None
    return path


def with_imagenet_weights(
    name: str, factory: Callable[..., nn.Module], url: str, download: bool
) -> Callable[..., nn.Module]:
    """``imagenet(last_stride)``: ``factory``'s backbone with the weights of ``url`` loaded (``fc.*`` dropped)."""

    def imagenet(last_stride: int = 2) -> nn.Module:
        path = cached_or_downloaded(name, url, download)
        body = factory(last_stride=last_stride)
        load_pretrained_backbone(body, path)
        return body

    return imagenet
