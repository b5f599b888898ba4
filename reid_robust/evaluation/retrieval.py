"""Leave-one-out retrieval protocol of CUB-200-2011 / Cars196 / SOP: Recall@K, P@1, MAP@R, NMI.

Every item queries all other items (itself excluded; duplicates of it are ordinary items). Ties are broken
by item index, as in :mod:`reid_robust.evaluation.reid`.
- Recall@K (Song et al., CVPR 2016; really a hit rate): 1 if a same-label item is among the K nearest.
- P@1 = Recall@1.
- MAP@R (Musgrave, Belongie, Lim, "A Metric Learning Reality Check", ECCV 2020): with R same-label items,
  ``MAP@R = (1/R) Σ_{i ≤ R} P(i) rel(i)`` over the top R, divided by R (not by the number of hits).
- NMI: k-means (scikit-learn, k = number of classes, ``seed``) on the (normalised, for cosine) features,
  ``normalized_mutual_info_score`` with arithmetic averaging (the scikit-learn >= 0.22 default, fixed here).
Items whose label has no other item ("lone" queries) cannot score and are skipped (as in
pytorch-metric-learning), with a warning; their count is returned.
"""
from __future__ import annotations

import warnings

import numpy as np

from .blocks import run_self_score_blocks
from .ranking import group_members, match_ranks
from .search import (
    as_label_vector,
    check_block_size,
    check_metric,
    check_positive_int,
    checked_features,
    prepare,
)


def normalized_mutual_info(feats: np.ndarray, labels: np.ndarray, seed: int = 0, n_init: int = 1) -> float:
    """NMI between labels and k-means clusters of ``feats`` (k = number of distinct labels)."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import normalized_mutual_info_score

    num_classes = int(np.unique(labels).size)
    if num_classes < 2 or num_classes > feats.shape[0]:
        return float("nan")
    clusters = KMeans(n_clusters=num_classes, n_init=n_init, random_state=seed).fit_predict(feats)
    return float(normalized_mutual_info_score(labels, clusters, average_method="arithmetic"))


def _check_ks(ks) -> tuple[int, ...]:
    """The cutoffs of Recall@K: a non-empty sequence of positive integers (1.5, True, "4" are refused)."""
    if isinstance(ks, (str, bytes)) or not hasattr(ks, "__iter__"):
        raise ValueError(f"ks must be a sequence of positive integers, got {ks!r}")
    checked = tuple(check_positive_int(k, "each of ks") for k in ks)
    if not checked:
        raise ValueError("ks must hold at least one cutoff, got an empty sequence")
    return checked


def evaluate_retrieval(feats, labels, ks=(1, 2, 4, 8), metric: str = "cosine", compute_nmi: bool = True,
                       nmi_seed: int = 0, block_size: int | None = None,
                       per_query: bool = False, progress: bool | None = False) -> dict:
    """Leave-one-out retrieval metrics of features [N, D] with class labels [N].

    Returns ``recall@K`` for each K in ``ks``, ``precision_at_1``, ``map_at_r``, ``nmi`` (NaN when
    ``compute_nmi`` is False), all fractions in [0, 1], plus ``num_valid_queries`` and ``num_lone_queries``;
    ``per_query=True`` adds ``per_query``: arrays ``first_rank``, ``map_at_r`` and ``valid`` over all items.
    Scores come in blocks of ``block_size`` queries, one per worker thread at a time; up to 8,192 items the
    whole symmetric score matrix is held (:func:`~reid_robust.evaluation.blocks.run_self_score_blocks`).
    ``ks`` are positive integers; features must be finite, not too large for float32 scores, and (cosine)
    of non-zero norm. ``progress=None`` shows the progress of the query blocks (a bar on a terminal, else a
    log line about every 30 s; :mod:`reid_robust.progress`); ``False`` (the default) is silent.
    """
    check_metric(metric)
    ks = _check_ks(ks)
    check_block_size(block_size)
    x, squared = checked_features(feats, "feats", metric)
    y = as_label_vector(labels, "labels", x.shape[0])
    x = prepare(x, metric, squared)

    groups = group_members(y, y)
    self_index = np.arange(x.shape[0])

    num = x.shape[0]
    first = np.zeros(num, dtype=np.int64)
    map_r = np.zeros(num)
    num_matches = np.zeros(num, dtype=np.int64)
    ks_max = max(ks)

    def work(start: int, end: int, scores: np.ndarray) -> None:  # rows start:end only (worker threads)
        members = groups.block(start, end)
        is_self = members == self_index[start:end, None]
        # only ranks up to R (MAP@R) and max(ks) (Recall@K), and the first rank, are needed
        depth = np.maximum(groups.count[start:end] - 1, ks_max)
        ranks, n = match_ranks(scores, members, is_self, depth=depth)
        num_matches[start:end] = n
        if ranks.shape[1] == 0:
            return
        first[start:end] = ranks[:, 0]
        hits = np.arange(1, ranks.shape[1] + 1)[None, :]
        within = (ranks > 0) & (ranks <= n[:, None])
        terms = np.where(within, hits / np.maximum(ranks, 1), 0.0)
        map_r[start:end] = terms.sum(axis=1) / np.maximum(n, 1)

    run_self_score_blocks(x, metric, work, block_size, progress, f"evaluating {num} queries")

    valid = num_matches > 0
    if not valid.any():
        raise ValueError("no item has another item with the same label: retrieval metrics are undefined")
    lone = int((~valid).sum())
    if lone:
        warnings.warn(f"{lone} of {num} items have a label with no other item and are skipped", stacklevel=2)
    first_valid = first[valid]
    result: dict = {f"recall@{k}": float(np.mean(first_valid <= k)) for k in ks}
    result["precision_at_1"] = float(np.mean(first_valid <= 1))
    result["map_at_r"] = float(np.mean(map_r[valid]))
    result["nmi"] = normalized_mutual_info(x, y, seed=nmi_seed) if compute_nmi else float("nan")
    result["num_valid_queries"] = int(valid.sum())
    result["num_lone_queries"] = lone
    if per_query:
        result["per_query"] = {"first_rank": first, "map_at_r": map_r, "valid": valid}
    return result
