"""Plain loop implementations of loss formulas, used as references by tests/test_losses_*.py.

Written for clarity, not speed: explicit Python loops over anchors, pairs and triplets on tiny inputs.
``weights`` (optional per-image sample weights) follow docs/losses.md: scaled to maximum 1, images of weight 0
skipped everywhere, a pair weighs the minimum of its two images' weights, a triplet the minimum of its three.
"""

from __future__ import annotations

import math

import torch


def dist(a: torch.Tensor, b: torch.Tensor) -> float:
    return math.sqrt(max(float(((a - b) ** 2).sum()), 1e-12))


def cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a @ b) / (a.norm().clamp_min(1e-12) * b.norm().clamp_min(1e-12)))


def scaled(weights, n):
    """Per-image weights divided by their maximum (all ones when None)."""
    if weights is None:
        return [1.0] * n
    top = max(float(v) for v in weights)
    return [float(v) / top for v in weights]


def _wmean(values, weights):
    total = sum(weights)
    return sum(w * v for w, v in zip(weights, values)) / total if total > 0 else 0.0


def _first_arg(values, better):
    """Index of the first best entry of ``values`` [(index, value)] under ``better(a, b)`` (strict)."""
    best = values[0]
    for item in values[1:]:
        if better(item[1], best[1]):
            best = item
    return best


def pairs(labels):
    """Lists of positive pairs (i, j), i != j, and negative pairs."""
    n = len(labels)
    pos = [(i, j) for i in range(n) for j in range(n) if i != j and labels[i] == labels[j]]
    neg = [(i, j) for i in range(n) for j in range(n) if labels[i] != labels[j]]
    return pos, neg


def triplet_batch_hard(x, labels, margin, soft=False, weights=None):
    n = len(labels)
    w = scaled(weights, n)
    losses, tw = [], []
    for a in range(n):
        if w[a] == 0:
            continue
        dp = [(p, dist(x[a], x[p])) for p in range(n) if p != a and labels[p] == labels[a] and w[p] > 0]
        dn = [(k, dist(x[a], x[k])) for k in range(n) if labels[k] != labels[a] and w[k] > 0]
        if not dp or not dn:
            continue
        (p, d_ap), (k, d_an) = _first_arg(dp, lambda u, v: u > v), _first_arg(dn, lambda u, v: u < v)
        v = d_ap - d_an
        losses.append(math.log1p(math.exp(v)) if soft else max(v + margin, 0.0))
        tw.append(min(w[a], w[p], w[k]))
    return _wmean(losses, tw)


def triplet_batch_all(x, labels, margin, soft=False, weights=None):
    n = len(labels)
    w = scaled(weights, n)
    losses = []
    for a in range(n):
        for p in range(n):
            if p == a or labels[p] != labels[a] or min(w[a], w[p]) == 0:
                continue
            for k in range(n):
                if labels[k] == labels[a] or w[k] == 0:
                    continue
                v = dist(x[a], x[p]) - dist(x[a], x[k])
                losses.append((math.log1p(math.exp(v)) if soft else max(v + margin, 0.0), min(w[a], w[p], w[k])))
    kept = losses if soft else [(v, t) for v, t in losses if v > 0]
    return _wmean([v for v, _ in kept], [t for _, t in kept])


def triplet_semi_hard(x, labels, margin, soft=False, weights=None):
    n = len(labels)
    w = scaled(weights, n)
    losses, tw = [], []
    for a in range(n):
        dn = [(k, dist(x[a], x[k])) for k in range(n) if labels[k] != labels[a] and w[k] > 0]
        if not dn or w[a] == 0:
            continue
        for p in range(n):
            if p == a or labels[p] != labels[a] or w[p] == 0:
                continue
            dap = dist(x[a], x[p])
            farther = [(k, d) for k, d in dn if d > dap]
            k, dan = _first_arg(farther, lambda u, v: u < v) if farther else _first_arg(dn, lambda u, v: u > v)
            losses.append(math.log1p(math.exp(dap - dan)) if soft else max(dap - dan + margin, 0.0))
            tw.append(min(w[a], w[p], w[k]))
    return _wmean(losses, tw)


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


def multi_similarity(x, labels, alpha, beta, base, epsilon=None, weights=None):
    """MS loss; with ``weights`` each pair term exp(z) is m exp(z) and anchors weigh w_a."""
    n = len(labels)
    w = scaled(weights, n)
    per_anchor = []
    for a in range(n):
        if w[a] == 0:
            per_anchor.append(0.0)
            continue
        sp = {j: cos(x[a], x[j]) for j in range(n) if j != a and labels[j] == labels[a] and w[j] > 0}
        sn = {j: cos(x[a], x[j]) for j in range(n) if labels[j] != labels[a] and w[j] > 0}
        if epsilon is not None:
            min_p = min(sp.values()) if sp else float("inf")
            max_n = max(sn.values()) if sn else float("-inf")
            sp = {j: s for j, s in sp.items() if s - epsilon < max_n}
            sn = {j: s for j, s in sn.items() if s + epsilon > min_p}
        lm = {j: math.log(min(w[a], w[j])) for j in range(n) if w[j] > 0}
        la = _log1p_sum_exp([-alpha * (s - base) + lm[j] for j, s in sp.items()]) / alpha
        per_anchor.append(la + _log1p_sum_exp([beta * (s - base) + lm[j] for j, s in sn.items()]) / beta)
    return _wmean(per_anchor, w)


def circle(x, labels, m, gamma, weights=None):
    """Circle loss; with ``weights`` each pair term exp(z) is m_aj exp(z) and valid anchors weigh w_a."""
    n = len(labels)
    w = scaled(weights, n)
    losses, aw = [], []
    for a in range(n):
        sp = [(j, cos(x[a], x[j])) for j in range(n) if j != a and labels[j] == labels[a] and w[j] > 0]
        sn = [(j, cos(x[a], x[j])) for j in range(n) if labels[j] != labels[a] and w[j] > 0]
        if not sp or not sn or w[a] == 0:
            continue
        aw.append(w[a])
        lp = [-gamma * max(1 + m - s, 0) * (s - 1 + m) + math.log(min(w[a], w[j])) for j, s in sp]
        ln = [gamma * max(s + m, 0) * (s - m) + math.log(min(w[a], w[j])) for j, s in sn]
        z = math.log(sum(math.exp(v - max(lp)) for v in lp)) + max(lp)
        z += math.log(sum(math.exp(v - max(ln)) for v in ln)) + max(ln)
        losses.append(z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z)))
    return _wmean(losses, aw)


def contrastive(x, labels, pos_margin, neg_margin, normalize=True, weights=None):
    """Contrastive loss; with ``weights`` each part is the min-weighted mean of its non-zero terms."""
    w = scaled(weights, len(labels))
    pos, neg = pairs(labels)
    xs = torch.nn.functional.normalize(x, dim=1) if normalize else x
    lp = [(max(dist(xs[i], xs[j]) - pos_margin, 0.0), min(w[i], w[j])) for i, j in pos]
    ln = [(max(neg_margin - dist(xs[i], xs[j]), 0.0), min(w[i], w[j])) for i, j in neg]
    lp = [(v, m) for v, m in lp if v > 0 and m > 0]
    ln = [(v, m) for v, m in ln if v > 0 and m > 0]
    return (_wmean(*zip(*lp)) if lp else 0.0) + (_wmean(*zip(*ln)) if ln else 0.0)


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
