"""Load local torchvision weights into a backbone; nothing is ever downloaded."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from torch import nn

from reid_robust.safe_load import torch_load

_MAX_LISTED = 10


def _listing(items: list[str]) -> str:
    shown = ", ".join(items[:_MAX_LISTED])
    return shown + (f", ... ({len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else "")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``path``: a raw state dict, or a dict holding one under "state_dict" or "model".

    A "module." prefix (from DataParallel / DDP) is removed.  Raises FileNotFoundError if the file is
    missing and ValueError if it cannot be read, holds pickled code or objects (it is read with
    ``torch.load(weights_only=True)``), or holds no state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"pretrained weights file {path!r} does not exist (nothing is downloaded)")
    obj = torch_load(path, "pretrained weights file")  # never runs code: tensors and plain containers only
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"pretrained weights file {path!r} holds no state dict (expected a dict of tensors, or a dict "
            f"with one under 'state_dict' or 'model'); found {type(obj).__name__}"
        )
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return dict(obj)


def load_pretrained_backbone(backbone: nn.Module, path: str | os.PathLike, ignore_prefixes=("fc.",)) -> None:
    """Copy the weights in ``path`` into ``backbone``, ignoring keys that start with ``ignore_prefixes``.

    Every backbone tensor must be present with the same shape (BN ``num_batches_tracked`` counters may be
    absent, as in older torchvision files) and the file may hold no other key; otherwise ValueError names
    the file and the missing, unexpected and mis-shaped keys.
    """
    weights = {k: v for k, v in read_state_dict(path).items() if not k.startswith(tuple(ignore_prefixes))}
    expected = backbone.state_dict()
    missing = [k for k in expected if k not in weights and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in weights if k not in expected]
    mis_shaped = [
        f"{k}: file {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
        for k, v in weights.items()
        if k in expected and v.shape != expected[k].shape
    ]
    if missing or unexpected or mis_shaped:
        problems = []
        if missing:
            problems.append(f"missing keys: {_listing(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_listing(unexpected)}")
        if mis_shaped:
            problems.append(f"shape mismatches: {_listing(mis_shaped)}")
        raise ValueError(
            f"pretrained weights file {os.fspath(path)!r} does not fit the {type(backbone).__name__} backbone "
            f"(is it the same architecture?); " + "; ".join(problems)
        )
    backbone.load_state_dict(weights, strict=False)
