"""THE feature extractor: the named outputs of a model (``bn_feat``, ``feat``) for a list of images.

Evaluation, the embedding API (:mod:`reid_robust.engine.embed`), the label audit, the sweep's confusable
identities and the exports all embed images through :func:`extract_outputs`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from reid_robust.data.dataset import ImageDataset
from reid_robust.data.records import ImageRecord
from reid_robust.progress import progress as show_progress

Images = Sequence[ImageRecord] | Sequence[np.ndarray]


class ArrayImages(Dataset):
    """In-memory RGB images (uint8 arrays [H, W, 3]) -> ``{"image": transform(image)}``."""

    def __init__(self, images: Sequence[np.ndarray], transform: Callable):
        self.images = list(images)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"image": self.transform(image=self.images[index])["image"]}


def _dataset(images: Images, transform: Callable) -> Dataset:
    if all(isinstance(item, ImageRecord) for item in images):
        return ImageDataset(images, transform)  # type: ignore[arg-type]
    if all(isinstance(item, np.ndarray) and item.ndim == 3 and item.shape[2] == 3 for item in images):
        return ArrayImages(images, transform)  # type: ignore[arg-type]
    kinds = sorted({type(item).__name__ for item in images})
    raise ValueError(f"extract_outputs: images must be ImageRecords or RGB arrays [H, W, 3], got {', '.join(kinds)}")


def _autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """fp16 autocast on a GPU (``amp``); full precision on the CPU."""
    if amp and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def _forward(model: nn.Module, images: torch.Tensor, names: Sequence[str] | None, flip: bool) -> dict[str, torch.Tensor]:
    """The requested outputs (all when ``names`` is None) of one batch, in float32 on the CPU; with ``flip``
    the mean of the image's and its mirror image's outputs."""
    out = model(images)
    wanted = list(out) if names is None else list(names)
    missing = [n for n in wanted if n not in out]
    if missing:
        raise ValueError(f"the model has no output(s) {missing}; it has {sorted(out)}")
    result = {n: out[n].float() for n in wanted}
    if flip:
        mirrored = model(torch.flip(images, dims=[3]))
        result = {n: (v + mirrored[n].float()) / 2 for n, v in result.items()}
    return {n: v.cpu() for n, v in result.items()}


@torch.no_grad()
def extract_outputs(model: nn.Module, images: Images, transform: Callable, batch_size: int = 64,
                    device: str | torch.device = "cpu", flip: bool = False,
                    outputs: Sequence[str] | None = ("bn_feat",), num_workers: int = 0,
                    progress: bool | None = None, amp: bool = True) -> dict[str, torch.Tensor]:
    """Named outputs of ``model`` for ``images``, in order: ``{name: float32 [N, D] on the CPU}``.

    images: ImageRecords (read from disk) or RGB uint8 arrays [H, W, 3]; ``transform`` is the test pipeline
    (``build_transforms(cfg.data.transforms, train=False)``). outputs: the names to keep (None: all the model
    returns). flip: each output is the mean of the image's and its mirror image's. amp: fp16 autocast on a
    GPU (outputs are returned in float32). progress: see :func:`reid_robust.progress.progress`.
    The model runs in eval mode on ``device`` (where it must already be); its mode is restored after.
    """
    if len(images) == 0:
        raise ValueError("extract_outputs: the list of images is empty")
    if batch_size < 1:
        raise ValueError(f"extract_outputs: batch_size must be >= 1, got {batch_size}")
    device = torch.device(device)
    loader = DataLoader(_dataset(images, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers, pin_memory=device.type == "cuda")
    was_training = model.training
    model.eval()
    chunks: dict[str, list[torch.Tensor]] = {}
    try:
        for batch in show_progress(loader, desc=f"embedding {len(images)} images", unit="batch", enabled=progress):
            with _autocast(device, amp):
                found = _forward(model, batch["image"].to(device, non_blocking=True), outputs, flip)
            for name, value in found.items():
                chunks.setdefault(name, []).append(value)
    finally:
        model.train(was_training)
    return {name: torch.cat(parts) for name, parts in chunks.items()}
