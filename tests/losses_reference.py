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


def _log1p_sum_exp(values):
    """log(1 + sum exp(v)) computed stably."""
    if not values:
        return 0.0
    m = max(max(values), 0.0)
    return m + math.log(math.exp(-m) + sum(math.exp(v - m) for v in values))


def multi_similarity(x, labels, alpha, beta, base, epsilon=None):
    n = len(labels)
    total = 0.0
    for a in range(n):
        sp = {j: cos(x[a], x[j]) for j in range(n) if j != a and labels[j] == labels[a]}
        sn = {j: cos(x[a], x[j]) for j in range(n) if labels[j] != labels[a]}
        if epsilon is not None:
            min_p = min(sp.values()) if sp else float("inf")
            max_n = max(sn.values()) if sn else float("-inf")
            sp = {j: s for j, s in sp.items() if s - epsilon < max_n}
            sn = {j: s for j, s in sn.items() if s + epsilon > min_p}
        total += _log1p_sum_exp([-alpha * (s - base) for s in sp.values()]) / alpha
        total += _log1p_sum_exp([beta * (s - base) for s in sn.values()]) / beta
    return total / n


def circle(x, labels, m, gamma):
    n = len(labels)
    losses = []
    for a in range(n):
        sp = [cos(x[a], x[j]) for j in range(n) if j != a and labels[j] == labels[a]]
        sn = [cos(x[a], x[j]) for j in range(n) if labels[j] != labels[a]]
        if not sp or not sn:
            continue
        lp = [-gamma * max(1 + m - s, 0) * (s - 1 + m) for s in sp]
        ln = [gamma * max(s + m, 0) * (s - m) for s in sn]
        z = math.log(sum(math.exp(v - max(lp)) for v in lp)) + max(lp)
        z += math.log(sum(math.exp(v - max(ln)) for v in ln)) + max(ln)
        losses.append(z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z)))
    return sum(losses) / len(losses) if losses else 0.0


def contrastive(x, labels, pos_margin, neg_margin, normalize=True):
    pos, neg = pairs(labels)
    xs = torch.nn.functional.normalize(x, dim=1) if normalize else x
    lp = [max(dist(xs[i], xs[j]) - pos_margin, 0.0) for i, j in pos]
    ln = [max(neg_margin - dist(xs[i], xs[j]), 0.0) for i, j in neg]
    lp = [v for v in lp if v > 0]
    ln = [v for v in ln if v > 0]
    return (sum(lp) / len(lp) if lp else 0.0) + (sum(ln) / len(ln) if ln else 0.0)


# ---- differentiable loop references (torch scalars); weights are Python floats, i.e. constants ----

def _tdist(a, b):
    return ((a - b) ** 2).sum().clamp_min(1e-12).sqrt()


def osm_caa_wcl(x, labels, p_true, margin, sigma_osm, sigma_caa):
    """Weighted contrastive loss of OSM+CAA (without the ID term), loops over ordered pairs."""
    xn = torch.nn.functional.normalize(x, dim=1)
    n = len(labels)
    att = [math.exp(-(1 - p) ** 2 / (2 * sigma_caa ** 2)) for p in p_true]
    pos_terms, neg_terms = [], []
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            d = _tdist(xn[i], xn[j])
            a = min(att[i], att[j])
            if labels[i] == labels[j]:
                pos_terms.append((math.exp(-d.item() ** 2 / (2 * sigma_osm ** 2)) * a, d ** 2))
            else:
                neg_terms.append((max(margin - d.item(), 0.0) * a, torch.relu(margin - d) ** 2))
    wp = sum(w for w, _ in pos_terms) + 1e-12
    wn = sum(w for w, _ in neg_terms) + 1e-12
    total = x.sum() * 0
    for w, v in pos_terms:
        total = total + w / wp * v
    for w, v in neg_terms:
        total = total + w / wn * v
    return 0.25 * total


def ranked_list(x, labels, margin, boundary, t_neg, t_pos, neg_weight):
    xn = torch.nn.functional.normalize(x, dim=1)
    n = len(labels)
    total = x.sum() * 0
    for a in range(n):
        pos = [(j, _tdist(xn[a], xn[j])) for j in range(n) if j != a and labels[j] == labels[a]]
        neg = [(j, _tdist(xn[a], xn[j])) for j in range(n) if labels[j] != labels[a]]
        pos = [(j, d) for j, d in pos if d.item() > boundary - margin]
        neg = [(j, d) for j, d in neg if d.item() < boundary]
        if pos:
            e = [math.exp(t_pos * (d.item() - boundary + margin)) for _, d in pos]
            for (_, d), w in zip(pos, e):
                total = total + w / sum(e) * (d - (boundary - margin))
        if neg:
            e = [math.exp(t_neg * (boundary - d.item())) for _, d in neg]
            for (_, d), w in zip(neg, e):
                total = total + neg_weight * w / sum(e) * (boundary - d)
    return total / n


def ice(x, labels, scale):
    xn = torch.nn.functional.normalize(x, dim=1)
    n = len(labels)
    losses = []
    for a in range(n):
        pos = [j for j in range(n) if j != a and labels[j] == labels[a]]
        neg = [j for j in range(n) if labels[j] != labels[a]]
        if not pos or not neg:
            continue
        zn = torch.stack([scale * (xn[a] @ xn[j]) for j in neg])
        la = x.sum() * 0
        for i in pos:
            zi = scale * (xn[a] @ xn[i])
            la = la - (zi - torch.logsumexp(torch.cat([zi.view(1), zn]), dim=0))
        losses.append(la / len(pos))
    return sum(losses) / len(losses)


def proselflc(logits, labels, progress, exp_base, tau):
    n, c = logits.shape
    g = 1 / (1 + math.exp(-exp_base * (progress - tau)))
    total = logits.sum() * 0
    for i in range(n):
        p = torch.softmax(logits[i].detach(), dim=0).tolist()
        h = -sum(v * math.log(v) for v in p if v > 0)
        eps = g * (1 - h / math.log(c))
        logp = torch.log_softmax(logits[i], dim=0)
        for k in range(c):
            q = (1 - eps) * (1.0 if k == int(labels[i]) else 0.0) + eps * p[k]
            total = total - q * logp[k]
    return total / n
