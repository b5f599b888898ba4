"""Embedding head: pooling, optional linear reduction, and the BNNeck of Luo et al. (BoT, CVPRW 2019)."""

from __future__ import annotations

import torch
from torch import nn

from .pooling import build_pooling

NECKS = ("bnneck", "none")


def init_kaiming_(module: nn.Module) -> None:
    """BoT's ``weights_init_kaiming``: Linear weights Kaiming-normal (fan_out), biases 0, BN weight 1."""
    if isinstance(module, nn.Linear):
        nn.init.kaiming_normal_(module.weight, a=0, mode="fan_out")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.modules.batchnorm._BatchNorm) and module.affine:
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


def init_classifier_(module: nn.Module) -> None:
    """BoT's ``weights_init_classifier`` for an identity classifier on ``bn_feat``: N(0, 0.001^2), bias 0."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, std=0.001)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class BNNeck(nn.Module):
    """BatchNorm1d whose shift is frozen at zero: ``bn_feat = gamma * (feat - mu) / sigma``, [N, D] -> [N, D].

    BoT (Luo et al. 2019, Sec. 3.6) freezes the bias so that the triplet loss on ``feat`` and the
    classifier on ``bn_feat`` do not fight over an offset.  The bias stays an (all-zero) parameter so the
    state dict matches BoT's, but ``requires_grad`` is False and no optimiser moves it.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim)
        init_kaiming_(self.bn)
        self.bn.bias.requires_grad_(False)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.bn(feat)


class EmbeddingHead(nn.Module):
    """Feature map [N, C, h, w] -> ``{"feat": [N, D], "bn_feat": [N, D]}``.

    ``feat`` is the pooled vector, reduced by a bias-free Linear(C, D) when ``embedding_dim > 0`` (else
    D = C); ``bn_feat`` is ``feat`` after the BNNeck, or ``feat`` itself with ``neck="none"``.
    """

    def __init__(self, in_dim: int, embedding_dim: int = 0, pooling: str = "avg", neck: str = "bnneck"):
        super().__init__()
        if not isinstance(embedding_dim, int) or isinstance(embedding_dim, bool) or embedding_dim < 0:
            raise ValueError(f"embedding_dim must be an int >= 0 (0 keeps the backbone's), got {embedding_dim!r}")
        if neck not in NECKS:
            raise ValueError(f"unknown neck {neck!r}; expected one of {', '.join(NECKS)}")
        self.pool = build_pooling(pooling)
        self.out_dim = embedding_dim or in_dim
        self.reduction = nn.Linear(in_dim, embedding_dim, bias=False) if embedding_dim else nn.Identity()
        self.reduction.apply(init_kaiming_)
        self.neck = BNNeck(self.out_dim) if neck == "bnneck" else nn.Identity()

    def forward(self, fmap: torch.Tensor) -> dict[str, torch.Tensor]:
        feat = self.reduction(self.pool(fmap))
        return {"feat": feat, "bn_feat": self.neck(feat)}
