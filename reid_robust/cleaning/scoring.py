"""Label scoring (the label audit's scorer and the self-cleaning rounds'): score every training image for
"its label is probably wrong", from the model alone. Pure functions over named outputs, labels and loss terms:
this module sits below the engine, so the trainer and ``reid_robust.analysis`` both import it.

Two kinds of evidence, each turned into a suspicion score where higher = more suspect:

- *loss reliability*: how much the checkpoint's robust loss terms (``weights_meaning == "reliability"``)
  trust each label, inverted (``1 - w``). Terms with a classifier (OSM+CAA, ProSelfLC) give the
  class-aware attention of their classifier's probability for the label (Wang et al., AAAI 2019), one value
  per image; batch-dependent terms (PRISM) give their sample weights over PK batches of the (noisy) training
  labels, averaged per image over several passes. A checkpoint with no such term falls back to the
  class-aware attention computed with its first classifier term (cross entropy, DM or IMAE: DM/IMAE weights
  are an ``"emphasis"``, low at both p -> 0 and p -> 1, never read as a reliability).
- *neighbourhood*: ``knn``, the share of the k nearest training neighbours (cosine, self excluded) that carry
  another label; ``margin``, cosine to the nearest other class centre minus cosine to the image's own class
  centre (leave-one-out: the image itself is removed from its centre).

The combined score is the mean of the components' normalised ranks (in (0, 1]). Inputs are only the images'
features (``reid_robust.engine.inference.extract_outputs(..., outputs=None)``: every named output), the
training labels and the loss modules: never file names and never clean labels.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from reid_robust.progress import progress as show_progress

COMPONENTS = ("reliability", "knn", "margin")
# Where each raw component starts to say "another label fits better": ``margin`` > 0, the image is closer to
# another identity's centre than to its own; ``knn`` > 0.5, most of its neighbours carry another label.
# ``reliability`` (1 - the loss's weight) has no such point (its scale depends on the loss): None.
WRONG_SIDE: dict[str, float | None] = {"margin": 0.0, "knn": 0.5, "reliability": None}


def _check(feats: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    feats = np.asarray(feats, dtype=np.float32)
    labels = np.asarray(labels)
    if feats.ndim != 2 or labels.ndim != 1 or len(feats) != len(labels):
        raise ValueError(f"need feats [N, D] and labels [N] with the same N, got {feats.shape} and {labels.shape}")
    if len(labels) < 2:
        raise ValueError(f"the audit needs at least 2 images, got {len(labels)}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if not np.isfinite(feats).all():
        raise ValueError("feats contain NaN or infinite values")
    return feats, labels.astype(np.int64)


def neighbourhood_scores(feats: np.ndarray, labels: np.ndarray, k: int = 10,
                         block: int = 2048, progress: bool | None = False) -> dict[str, np.ndarray]:
    """``knn`` and ``margin`` suspicion scores [N] (see the module docstring) from feats [N, D] and labels [N].

    Blocked over query rows, so memory stays O(block * N). An image alone in its class has no own centre:
    its cosine to it counts as -1 (the worst possible). ``progress``: see :func:`reid_robust.progress.progress`.
    """
    feats, labels = _check(feats, labels)
    n = len(labels)
    k = max(1, min(int(k), n - 1))
    unit = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    classes, inverse = np.unique(labels, return_inverse=True)
    sums = np.zeros((len(classes), unit.shape[1]), dtype=np.float64)
    np.add.at(sums, inverse, unit)
    counts = np.bincount(inverse, minlength=len(classes))
    centres = sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    knn = np.empty(n)
    margin = np.empty(n)
    for start in show_progress(range(0, n, block), desc=f"neighbourhood scores of {n} images", unit="block",
                               enabled=progress):
        stop = min(start + block, n)
        rows = np.arange(start, stop)
        sim = unit[rows] @ unit.T
        sim[np.arange(len(rows)), rows] = -np.inf
        nearest = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        knn[rows] = (labels[nearest] != labels[rows, None]).mean(axis=1)
        to_centres = unit[rows].astype(np.float64) @ centres.T            # [B, C]
        own = inverse[rows]
        loo = sums[own] - unit[rows]                                       # own centre without the image
        loo_norm = np.linalg.norm(loo, axis=1)
        own_sim = np.where((counts[own] > 1) & (loo_norm > 1e-12),
                           np.einsum("bd,bd->b", unit[rows], loo) / np.maximum(loo_norm, 1e-12), -1.0)
        to_centres[np.arange(len(rows)), own] = -np.inf
        other = to_centres.max(axis=1) if len(classes) > 1 else np.full(len(rows), -1.0)
        margin[rows] = other - own_sim
    return {"knn": knn, "margin": margin}


@torch.no_grad()
def reliability_weights(outputs: dict[str, torch.Tensor], labels: np.ndarray, terms: Sequence,
                        num_identities: int, num_instances: int, passes: int = 8, seed: int = 0,
                        progress: bool | None = False) -> np.ndarray | None:
    """Mean reliability [N] of each image over the reliability loss terms (or the classifier fallback, see the
    module docstring), or None when the terms have neither.

    terms: objects with ``name``, ``input`` and ``module`` (the engine's ``LossTerm``). For batch-dependent
    terms, batches are PK batches of ``labels`` (``passes`` passes of about N images each); images never
    drawn get the neutral weight 1.
    """
    from reid_robust.losses.base import ClassifierLoss
    from reid_robust.losses.weighting import class_aware_attention, true_class_probability

    labels = np.asarray(labels, dtype=np.int64)
    target = torch.as_tensor(labels)

    def attention(term) -> np.ndarray:
        """Class-aware attention of the term's own classifier: monotone in p_y, one value per image."""
        logits = term.module.logits(outputs[term.input], target)
        p_true, _ = true_class_probability(logits, target)
        return class_aware_attention(p_true, getattr(term.module, "sigma_caa", 0.68)).double().numpy()

    reliable = [t for t in terms if getattr(t.module, "weights_meaning", None) == "reliability"]
    if not reliable:  # fall back: CAA attention from a classifier term (e.g. the cross entropy)
        classifier = next((t for t in terms if isinstance(t.module, ClassifierLoss)), None)
        return None if classifier is None else attention(classifier)
    # classifier-based terms (osm_caa, proselflc) are scored by their classifier's p_y directly: it does not
    # depend on the batch (DM/IMAE say "emphasis", so they only reach here through the fallback above)
    per_term = [attention(t) for t in reliable if isinstance(t.module, ClassifierLoss)]
    batched = [t for t in reliable if not isinstance(t.module, ClassifierLoss)]
    if batched:
        per_term.append(_batched_reliability(outputs, labels, batched, num_identities, num_instances, passes, seed,
                                             progress))
    return np.mean(per_term, axis=0)


def _batched_reliability(outputs: dict[str, torch.Tensor], labels: np.ndarray, reliable: Sequence,
                         num_identities: int, num_instances: int, passes: int, seed: int,
                         progress: bool | None = False) -> np.ndarray:
    """Mean weight [N] of each image under batch-dependent reliability terms (e.g. PRISM), over PK batches."""
    from reid_robust.data.samplers import PKSampler

    n = len(labels)
    num_identities = min(num_identities, len(np.unique(labels)))
    batch = num_identities * num_instances
    # PK batches are drawn over a canonical order of the images (by label, then embedding), so the scores do
    # not depend on the order the images were listed in, i.e. on their file names
    order = canonical_order(outputs[reliable[0].input].numpy(), labels)
    sampler = PKSampler(labels[order], num_identities, num_instances, seed=seed, num_batches=math.ceil(n / batch))
    total = np.zeros(n)
    count = np.zeros(n)
    target = torch.as_tensor(labels)
    for term in reliable:
        term.module.eval()
        x = outputs[term.input]
        for p in show_progress(range(passes), desc=f"reliability of {n} images ({term.name})", unit="pass",
                               enabled=progress):
            sampler.set_epoch(p)
            for positions in sampler:
                idx = order[np.asarray(positions)]
                idx_t = torch.as_tensor(idx, dtype=torch.long)
                term.module(x[idx_t], target[idx_t])
                w = term.module.last_sample_weights
                if w is None:
                    raise ValueError(f"loss term {term.name} says its weights mean reliability but recorded none")
                np.add.at(total, idx, w.double().cpu().numpy())
                np.add.at(count, idx, 1.0)
    return np.where(count > 0, total / np.maximum(count, 1), 1.0)


def canonical_order(feats: np.ndarray, labels: np.ndarray, decimals: int = 4) -> np.ndarray:
    """Indices [N] sorting images by label, then by their (rounded) embedding: a content-only order."""
    keys = np.round(np.asarray(feats, dtype=np.float64), decimals)
    return np.lexsort(tuple(keys.T[::-1]) + (np.asarray(labels),))


def rank_normalise(values: np.ndarray) -> np.ndarray:
    """Average ranks scaled to (0, 1] (ties share a rank): comparable components of any scale."""
    from scipy.stats import rankdata
    values = np.asarray(values, dtype=np.float64)
    return rankdata(values, method="average") / len(values)


def combine(components: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> np.ndarray:
    """Weighted mean of the components' normalised ranks [N] (higher = more suspect)."""
    if not components:
        raise ValueError("combine: no score components")
    weights = weights or {}
    total: float | np.ndarray = 0.0
    norm = 0.0
    for name, values in components.items():
        w = float(weights.get(name, 1.0))
        total = total + w * rank_normalise(values)
        norm += w
    if norm <= 0:
        raise ValueError(f"combine: the component weights sum to {norm}; need a positive sum")
    return np.asarray(total / norm)


def suspicion_scores(outputs: dict[str, torch.Tensor], labels: np.ndarray, terms: Sequence = (),
                     num_identities: int = 16, num_instances: int = 4, k: int = 10, passes: int = 8,
                     seed: int = 0, embedding: str = "bn_feat", progress: bool | None = False) -> dict[str, np.ndarray]:
    """All components and the combined ``score`` [N] for the training images (see the module docstring);
    ``progress=None`` shows the batched passes (a bar on a terminal, else a log line about every 30 s)."""
    if embedding not in outputs:
        raise ValueError(f"the model has no output '{embedding}'; it has {sorted(outputs)}")
    labels = np.asarray(labels)
    comps = neighbourhood_scores(outputs[embedding].numpy(), labels, k=k, progress=progress)
    reliability = reliability_weights(outputs, labels, terms, num_identities, num_instances, passes, seed, progress)
    if reliability is not None:
        comps = {"reliability": 1.0 - reliability, **comps}
    return {**comps, "score": combine(comps)}


def audit_metrics(scores: np.ndarray, is_noisy: np.ndarray) -> dict[str, float]:
    """Detection quality against known wrong labels: precision at the number of wrong labels, AUROC, AP."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    scores = np.asarray(scores, dtype=np.float64)
    truth = np.asarray(is_noisy).astype(bool)
    if scores.shape != truth.shape:
        raise ValueError(f"scores {scores.shape} and is_noisy {truth.shape} differ in shape")
    n_noisy = int(truth.sum())
    out: dict[str, float] = {"num_images": len(truth), "num_noisy": n_noisy}
    if n_noisy == 0 or n_noisy == len(truth):
        out.update({"precision_at_num_noisy": float("nan"), "auroc": float("nan"), "average_precision": float("nan")})
        return out
    top = np.argsort(-scores, kind="stable")[:n_noisy]
    out["precision_at_num_noisy"] = float(truth[top].mean())
    out["auroc"] = float(roc_auc_score(truth, scores))
    out["average_precision"] = float(average_precision_score(truth, scores))
    return out
