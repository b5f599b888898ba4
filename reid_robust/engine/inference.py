"""Feature extraction: the test-time embedding (``bn_feat``) of a list of image records."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from reid_robust.data.dataset import ImageDataset
from reid_robust.data.records import ImageRecord


@torch.no_grad()
def extract_features(model: nn.Module, records: Sequence[ImageRecord], transform, batch_size: int = 64,
                     flip: bool = False, device: str | torch.device = "cpu", num_workers: int = 0,
                     progress: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Embed ``records``; returns ``(feats float32 [N, D], pids int64 [N], camids int64 [N])``.

    With ``flip`` each embedding is the mean of the image's and its mirror image's ``bn_feat``.
    """
    if len(records) == 0:
        raise ValueError("extract_features: the list of images is empty")
    loader = DataLoader(ImageDataset(records, transform), batch_size=batch_size, shuffle=False,
                        num_workers=num_workers)
    was_training = model.training
    model.eval()
    feats = []
    iterator = loader
    if progress:
        from tqdm import tqdm
        iterator = tqdm(loader, desc="extract", leave=False, unit="batch")
    for batch in iterator:
        images = batch["image"].to(device, non_blocking=True)
        emb = model(images)["bn_feat"].float()
        if flip:
            emb = (emb + model(torch.flip(images, dims=[3]))["bn_feat"].float()) / 2
        feats.append(emb.cpu())
    model.train(was_training)
    pids = np.array([r.pid for r in records], dtype=np.int64)
    camids = np.array([r.camid for r in records], dtype=np.int64)
    return torch.cat(feats).numpy().astype(np.float32), pids, camids
