"""The one "checkpoint -> model -> features" path: :class:`Embedder` and :func:`embed_records`.

    embedder = Embedder.from_checkpoint("runs/market/checkpoints/best.pth", device="auto")
    features = embedder.embed("my_images/")            # a folder (recursive), a glob, a list of paths,
    save_features("my_images.npz", features)           # PIL images or an image tensor batch [N, 3, H, W]

The checkpoint's own test transform (``cfg.data.transforms`` at ``train=False``) is applied; images are
embedded in batches with flip averaging on request, progress, and fp16 autocast on a GPU
(:func:`reid_robust.engine.inference.extract_outputs`). Evaluation in training, the tools (eval, embed,
export), the label audit and the confusable identities of pattern noise all embed through this module.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, cast

import numpy as np
import torch
from torch import nn

from reid_robust.config import Config, TransformConfig
from reid_robust.data.image_list import ImageList, Source, image_list
from reid_robust.data.records import UNKNOWN_CAMID, ImageRecord
from reid_robust.engine.distributed import DistInfo, gather_rows, rank_rows
from reid_robust.engine.inference import extract_outputs
from reid_robust.evaluation.report import FeatureSet


@dataclass
class ExtractOptions:
    """How images are embedded: batch size, flip averaging, DataLoader workers, progress, fp16 on a GPU."""

    batch_size: int = 64
    flip: bool = False
    num_workers: int = 0
    progress: bool | None = None
    amp: bool = True


def embed_records(model: nn.Module, records: Sequence[ImageRecord], transform: Callable,
                  device: str | torch.device, options: ExtractOptions, source: str = "features") -> FeatureSet:
    """``bn_feat`` of ``records`` with the records' pids, cameras and paths (a dataset split)."""
    return _with_records(_bn_feat(model, records, transform, device, options), records, source)


def embed_records_on_ranks(model: nn.Module, records: Sequence[ImageRecord], transform: Callable,
                           device: str | torch.device, options: ExtractOptions, info: DistInfo,
                           source: str = "features") -> FeatureSet | None:
    """:func:`embed_records` under torchrun: each rank embeds its share; rank 0 gets the whole FeatureSet in
    input order, the other ranks None (see :func:`bn_feat_on_ranks`)."""
    feats = bn_feat_on_ranks(model, records, transform, device, options, info)
    return None if feats is None else _with_records(feats, records, source)


def _with_records(feats: np.ndarray, records: Sequence[ImageRecord], source: str) -> FeatureSet:
    return FeatureSet(feats, np.array([r.pid for r in records], dtype=np.int64), _camids(records, source),
                      [r.path for r in records], None, source)


def _camids(records: Sequence[ImageRecord], source: str) -> np.ndarray | None:
    """The records' cameras [N], or None when the layout gives none (every camid ``UNKNOWN_CAMID``)."""
    camids = np.array([r.camid for r in records], dtype=np.int64)
    unknown = camids == UNKNOWN_CAMID
    if unknown.all():
        return None
    if unknown.any():
        raise ValueError(f"{source}: {int(unknown.sum())} of {len(camids)} images have no camera (camid "
                         f"{UNKNOWN_CAMID}) while the others have one; give every image a camera or none")
    return camids


def bn_feat_on_ranks(model: nn.Module, images: Sequence, transform: Callable, device: str | torch.device,
                     options: ExtractOptions, info: DistInfo) -> np.ndarray | None:
    """``bn_feat`` [N, D] of ``images`` embedded by all ranks of a torchrun group: each rank embeds one
    consecutive share of whole batches (:func:`rank_rows`, the batches one process would form, so the
    features equal the single-process ones) and sends it to rank 0, which returns all N rows in input
    order; the other ranks return None and never hold more than their share. Progress shows on rank 0."""
    start, end = rank_rows(len(images), info, options.batch_size)
    shown = replace(options, progress=options.progress if info.is_main else False)
    local = _bn_feat(model, images[start:end], transform, device, shown) if end > start else None
    gathered = gather_rows(None if local is None else torch.from_numpy(local), info)
    return None if gathered is None else gathered.numpy()


def _bn_feat(model: nn.Module, images: Any, transform: Callable, device: str | torch.device,
             options: ExtractOptions) -> np.ndarray:
    out = extract_outputs(model, images, transform, batch_size=options.batch_size, device=device,
                          flip=options.flip, outputs=("bn_feat",), num_workers=options.num_workers,
                          progress=options.progress, amp=options.amp)
    return out["bn_feat"].numpy()


def transform_of(cfg: Config, transforms: TransformConfig | None = None) -> Callable:
    """The test transform of a checkpoint's config (or of ``transforms`` when given)."""
    from reid_robust.data.transforms import build_transforms

    return build_transforms(transforms if transforms is not None else cfg.data.transforms, train=False)


@dataclass
class Embedder:
    """A trained model with its test transform, turning images into a :class:`FeatureSet`."""

    model: nn.Module
    transform: Callable
    device: torch.device
    options: ExtractOptions = field(default_factory=ExtractOptions)
    config: Config | None = None

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, device: str | torch.device = "auto",
                        transforms: TransformConfig | None = None, **options: Any) -> Embedder:
        """The model of a checkpoint on ``device`` (``auto``: CUDA when available) with the checkpoint's own
        test transform (or ``transforms``); ``options``: fields of :class:`ExtractOptions` (the batch size
        defaults to the checkpoint's ``data.test_batch_size``)."""
        from reid_robust.engine.checkpoint import load_model_from_checkpoint
        from reid_robust.engine.distributed import requested_device

        where = requested_device(device)
        model, cfg = load_model_from_checkpoint(path, where)
        options.setdefault("batch_size", cfg.data.test_batch_size)
        return cls(model, transform_of(cfg, transforms), where, ExtractOptions(**options), cfg)

    def embed(self, inputs: Source | torch.Tensor | Any, labels: str | os.PathLike | None = None,
              camera_pattern: str | None = None, source: str = "features") -> FeatureSet:
        """Embed ``inputs``: a folder (recursive), a glob, a list file or labels CSV, a list of paths, PIL
        images or an image tensor [N, 3, H, W] (uint8, or float in [0, 1]). Paths come back with the features,
        and pids/cameras where the layout gives them (:mod:`reid_robust.data.image_list`; ``labels``: a labels
        CSV, ``camera_pattern``: cameras of identity folders)."""
        arrays = as_image_arrays(inputs)
        if arrays is not None:
            if labels is not None or camera_pattern is not None:
                raise ValueError("labels and camera_pattern apply to image files, not to in-memory images")
            return FeatureSet(_bn_feat(self.model, arrays, self.transform, self.device, self.options), source=source)
        return self.embed_list(image_list(cast(Source, inputs), labels, camera_pattern), source)

    def embed_list(self, images: ImageList, source: str = "features") -> FeatureSet:
        """Embed resolved image files, keeping their paths and labels."""
        feats = _bn_feat(self.model, images.records(), self.transform, self.device, self.options)
        return FeatureSet(feats, images.pids, images.camids, images.paths, images.identities, source)

    def embed_list_on_ranks(self, images: ImageList, info: DistInfo, source: str = "features") -> FeatureSet | None:
        """:meth:`embed_list` by every rank of a torchrun group (``info`` from
        :func:`reid_robust.engine.distributed.init_distributed`): each embeds its share, rank 0 returns the
        whole FeatureSet in input order, the other ranks None."""
        feats = bn_feat_on_ranks(self.model, images.records(), self.transform, self.device, self.options, info)
        return None if feats is None else FeatureSet(feats, images.pids, images.camids, images.paths,
                                                     images.identities, source)

    def embed_records(self, records: Sequence[ImageRecord], source: str = "features") -> FeatureSet:
        """Embed a dataset split (records with pids and cameras)."""
        return embed_records(self.model, records, self.transform, self.device, self.options, source)


def as_image_arrays(inputs: Any) -> list[np.ndarray] | None:
    """RGB uint8 arrays [H, W, 3] of in-memory images (PIL images or a tensor [N, 3, H, W]); None for files."""
    if isinstance(inputs, torch.Tensor):
        return _tensor_images(inputs)
    from PIL import Image

    if isinstance(inputs, Image.Image):
        inputs = [inputs]
    if isinstance(inputs, (list, tuple)) and inputs and all(isinstance(i, Image.Image) for i in inputs):
        return [np.asarray(i.convert("RGB")) for i in inputs]
    if isinstance(inputs, (list, tuple)) and any(isinstance(i, Image.Image) for i in inputs):
        raise ValueError("a list of images must hold only PIL images or only paths, not both")
    if isinstance(inputs, (list, tuple)) and not all(isinstance(i, (str, os.PathLike)) for i in inputs):
        kinds = sorted({type(i).__name__ for i in inputs})
        raise ValueError(f"cannot embed a list of {', '.join(kinds)}: give paths, PIL images or a tensor")
    return None


def _tensor_images(batch: torch.Tensor) -> list[np.ndarray]:
    """[N, 3, H, W] uint8 (0..255) or float (0..1) -> uint8 arrays [H, W, 3] for the test transform."""
    if batch.dim() != 4 or batch.shape[1] != 3:
        raise ValueError(f"an image tensor must be a batch [N, 3, H, W], got shape {tuple(batch.shape)}")
    if len(batch) == 0:
        raise ValueError("the image tensor holds no images (N = 0)")
    batch = batch.detach().cpu()
    if batch.is_floating_point():
        if not torch.isfinite(batch).all() or batch.min() < 0 or batch.max() > 1:
            raise ValueError("a float image tensor must hold finite values in [0, 1] (as from ToTensor); "
                             f"got range [{batch.min().item():.3g}, {batch.max().item():.3g}]")
        batch = (batch * 255).round().to(torch.uint8)
    elif batch.dtype != torch.uint8:
        raise ValueError(f"an image tensor must be uint8 (0..255) or float (0..1), got {batch.dtype}")
    return list(batch.permute(0, 2, 3, 1).contiguous().numpy())
