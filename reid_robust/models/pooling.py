"""Global pooling of a feature map [N, C, h, w] into a vector [N, C]."""

from __future__ import annotations

import torch
from torch import nn


class GlobalAvgPool(nn.Module):
    """Mean over the spatial positions: [N, C, h, w] -> [N, C]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(-2, -1))


class GeM(nn.Module):
    """Generalised-mean pooling (Radenovic, Tolias, Chum, TPAMI 2018, eq. 2): [N, C, h, w] -> [N, C].

    ``f_c = (mean_{h,w} max(x_c, eps)^p)^(1/p)`` with one learnable exponent ``p`` shared by all channels;
    p = 1 is average pooling and p -> inf approaches max pooling.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True):
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM exponent p must be positive, got {p!r}")
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean(dim=(-2, -1)).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


POOLINGS = {"avg": GlobalAvgPool, "gem": GeM}


def build_pooling(name: str) -> nn.Module:
    """``"avg"`` or ``"gem"``; any other name raises ValueError listing the valid ones."""
    if name not in POOLINGS:
        raise ValueError(f"unknown pooling {name!r}; expected one of {', '.join(sorted(POOLINGS))}")
    return POOLINGS[name]()
