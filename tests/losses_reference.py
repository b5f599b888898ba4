"""Plain loop implementations of loss formulas, used as references by tests/test_losses_*.py.

Written for clarity, not speed: explicit Python loops over anchors, pairs and triplets on tiny inputs.
"""

from __future__ import annotations

import math

import torch


def dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.sqrt(max(float(((a - b) ** 2).sum()), 1e-12))


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12)))


def pairs(labels):
    """Lists of positive pairs (i, j), i != j, and negative pairs."""
    n = len(labels)
    pos = [(i, j) for i in range(n) for j in range(n) if i != j and labels[i] == labels[j]]
    neg = [(i, j) for i in range(n) for j in range(n) if labels[i] != labels[j]]
    return pos, neg


def triplet_batch_hard(x, labels, margin, soft=False):
    n = len(labels)
    losses = []
    for a in range(n):
        dp = [dist(x[a], x[p]) for p in range(n) if p != a and labels[p] == labels[a]]
        dn = [dist(x[a], x[k]) for k in range(n) if labels[k] != labels[a]]
        if not dp or not dn:
            continue
        v = max(dp) - min(dn)
        losses.append(math.log1p(math.exp(v)) if soft else max(v + margin, 0.0))
    return sum(losses) / len(losses) if losses else 0.0


def triplet_batch_all(x, labels, margin, soft=False):
    n = len(labels)
    losses = []
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            for k in range(n):
                if labels[k] == labels[a]:
                    continue
                v = dist(x[a], x[p]) - dist(x[a], x[k])
                losses.append(math.log1p(math.exp(v)) if soft else max(v + margin, 0.0))
    if soft:
        return sum(losses) / len(losses) if losses else 0.0
    nz = [v for v in losses if v > 0]
    return sum(nz) / len(nz) if nz else 0.0


def triplet_semi_hard(x, labels, margin, soft=False):
    n = len(labels)
    losses = []
    for a in range(n):
        dn = [dist(x[a], x[k]) for k in range(n) if labels[k] != labels[a]]
        if not dn:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a]:
                continue
            dap = dist(x[a], x[p])
            farther = [d for d in dn if d > dap]
            dan = min(farther) if farther else max(dn)
            losses.append(math.log1p(math.exp(dap - dan)) if soft else max(dap - dan + margin, 0.0))
    return sum(losses) / len(losses) if losses else 0.0


def smoothed_ce(logits, labels, eps):
    n, k = logits.shape
    total = 0.0
    for i in range(n):
        logp = torch.log_softmax(logits[i].double(), dim=0)
        for c in range(k):
            q = (1 - eps) * (1.0 if c == int(labels[i]) else 0.0) + eps / k
            total -= q * float(logp[c])
    return total / n
