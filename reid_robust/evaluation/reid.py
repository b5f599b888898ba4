"""Market-1501 query/gallery protocol (Zheng et al., ICCV 2015): mAP, CMC and mINP.

For a query with identity q seen by camera c:
- true matches: gallery items with identity q and a camera other than c;
- junk, deleted from the rank list: identity -1 items and items with identity q seen by camera c;
- distractors (identity 0) and all other identities are negatives and stay in the list.
Queries with identity -1 or 0, or whose identity has no true match left, are skipped and counted.
With ``camera_filter=False`` (features without cameras) the same-camera rule is off: every gallery item
with identity q is a true match (identity -1 items stay junk).

Ties are broken by gallery index: of two gallery items with equal scores, the one earlier in the gallery
ranks first (as a stable sort would order them).

AP modes (methods.md §12.1):
- ``"standard"`` (torchreid, fast-reid, BoT): ``AP = (1/G) Σ_j j / r_j`` over the ranks ``r_1 < ... < r_G``
  of the G true matches;
- ``"official"``: the trapezoid rule of the MATLAB ``compute_AP.m``,
  ``AP = (1/G) Σ_j (p(r_j - 1) + p(r_j)) / 2`` with precision ``p(r) = #matches in the top r / r`` and
  ``p(0) = 1``. Skipped queries are skipped in both modes.
mINP (Ye et al., TPAMI 2021): ``INP = G / r_G``, averaged over the evaluated queries.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator

import numpy as np
import torch

from reid_robust.progress import progress as show_progress

from .blocks import run_score_blocks
from .ranking import group_members, match_ranks
from .rerank import iter_rerank_blocks
from .search import (
    ApproximateSearch,
    as_label_vector,
    build_index,
    check_block_size,
    check_metric,
    check_positive_int,
    check_same_dim,
    checked_features,
    default_block_size,
    iter_matrix_blocks,
    prepare,
    scalable_norms,
    search_topk,
)

AP_MODES = ("standard", "official")
Blocks = Iterable[tuple[int, int, np.ndarray]]


def shown_blocks(blocks: Blocks, num_queries: int, num_gallery: int, block_size: int | None,
                 progress: bool | None, desc: str) -> Iterator[tuple[int, int, np.ndarray]]:
    """``blocks`` of queries (as from ``iter_score_blocks``) with progress: ``None`` shows it (a bar on a
    terminal or in a notebook, else a log line about every 30 s: :mod:`reid_robust.progress`), ``False`` not."""
    block = block_size or default_block_size(num_gallery)
    return show_progress(blocks, total=-(-num_queries // block), desc=desc, unit="block", enabled=progress)


def average_precision(ranks: np.ndarray, num_matches: np.ndarray, ap_mode: str = "standard") -> np.ndarray:
    """AP per query from the ascending 1-based ranks of its true matches [B, P] (0 = padding or missed).

    Matches not retrieved (rank 0 inside the first ``num_matches`` slots, approximate mode) add nothing.
    Returns [B] float64; queries without matches get 0.
    """
    if ap_mode not in AP_MODES:
        raise ValueError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}")
    r = np.asarray(ranks, dtype=np.float64)
    found = r > 0
    hits = found.cumsum(axis=1).astype(np.float64)
    precision_at = np.where(found, hits / np.maximum(r, 1), 0.0)
    if ap_mode == "standard":
        terms = precision_at
    else:
        precision_before = np.where(r > 1, (hits - 1) / np.maximum(r - 1, 1), 1.0)
        terms = np.where(found, (precision_before + precision_at) / 2, 0.0)
    return terms.sum(axis=1) / np.maximum(num_matches, 1)


def inverse_negative_penalty(ranks: np.ndarray, num_matches: np.ndarray) -> np.ndarray:
    """INP = G / rank of the last true match [B] float64 (0 when that match was not retrieved)."""
    ranks, num_matches = np.asarray(ranks), np.asarray(num_matches)
    if ranks.shape[1] == 0:
        return np.zeros(len(ranks))
    last = np.take_along_axis(ranks, np.maximum(num_matches - 1, 0)[:, None], axis=1)[:, 0].astype(np.float64)
    return np.where(last > 0, num_matches / np.maximum(last, 1), 0.0)


def _check_options(ap_mode: str, max_rank: int, block_size: int | None, camera_filter: bool) -> None:
    if ap_mode not in AP_MODES:
        raise ValueError(f"ap_mode must be one of {AP_MODES}, got {ap_mode!r}")
    check_positive_int(max_rank, "max_rank")
    check_block_size(block_size)
    if not isinstance(camera_filter, (bool, np.bool_)):
        raise ValueError(f"camera_filter must be True or False, got {camera_filter!r}")


def protocol_cameras(query_camids, gallery_camids, num_query: int, num_gallery: int,
                     camera_filter: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Camera vectors [Q], [G] (int64) for the protocol.

    With ``camera_filter`` both must be given (the same-camera rule needs them). Without it, given cameras
    are checked but not used: query and gallery get different cameras, so no same-identity item is junk.
    """
    cameras = []
    for name, camids, length, stand_in in (("query_camids", query_camids, num_query, 0),
                                           ("gallery_camids", gallery_camids, num_gallery, 1)):
        if camids is None and camera_filter:
            raise ValueError(f"{name} is None: the Market-1501 protocol drops same-camera matches; pass "
                             "camera_filter=False to evaluate without that rule")
        if camids is not None:
            camids = as_label_vector(camids, name, length)
        cameras.append(camids if camera_filter else np.full(length, stand_in, dtype=np.int64))
    return cameras[0], cameras[1]


def _validate(query_feats, gallery_feats, query_pids, gallery_pids, query_camids, gallery_camids, metric,
              camera_filter):
    qf, q_sq = checked_features(query_feats, "query_feats", metric)
    gf, g_sq = checked_features(gallery_feats, "gallery_feats", metric)
    check_same_dim(qf, gf)
    q_pids = as_label_vector(query_pids, "query_pids", qf.shape[0])
    g_pids = as_label_vector(gallery_pids, "gallery_pids", gf.shape[0])
    q_cams, g_cams = protocol_cameras(query_camids, gallery_camids, qf.shape[0], gf.shape[0], camera_filter)
    return (qf, q_sq), (gf, g_sq), q_pids, g_pids, q_cams, g_cams


def _check_queries(q_pids, num_matches, g_pids) -> np.ndarray:
    """Warn about queries without a true match; raise if none has one. Returns the evaluated-query mask."""
    has_match = num_matches > 0
    if not has_match.any():
        raise ValueError(f"no query has a true match in the gallery ({len(q_pids)} queries; identities "
                         f"absent from the gallery, or seen only by the query's own camera)")
    skipped = int((~has_match).sum())
    if skipped:
        absent = int((~np.isin(q_pids, g_pids[g_pids > 0]) | (q_pids <= 0)).sum())
        warnings.warn(f"{skipped} of {len(q_pids)} queries have no true match and are skipped: "
                      f"{absent} with an identity absent from the gallery (or junk/distractor id -1/0), "
                      f"{skipped - absent} whose identity appears only under the query's own camera",
                      stacklevel=3)
    return has_match


def _summarize(ap, inp, first_rank, has_match, max_rank: int, num_queries: int, per_query: bool) -> dict:
    extra = {"per_query": {"ap": ap, "inp": inp, "first_rank": first_rank, "valid": has_match}} if per_query else {}
    ap, inp, first = ap[has_match], inp[has_match], first_rank[has_match]
    # first == 0 only in approximate mode (no match retrieved): never within any cutoff
    first = np.where(first > 0, first, np.iinfo(np.int64).max)
    cmc = [float(np.mean(first <= k)) for k in range(1, max_rank + 1)]
    return {
        "mAP": float(np.mean(ap)),
        "rank1": float(np.mean(first <= 1)),
        "rank5": float(np.mean(first <= 5)),
        "rank10": float(np.mean(first <= 10)),
        "mINP": float(np.mean(inp)),
        "cmc": cmc,
        "num_valid_queries": int(has_match.sum()),
        "num_skipped_queries": int(num_queries - has_match.sum()),
        **extra,
    }


def _reid_members(q_pids, q_cams, g_pids, g_cams):
    groups = group_members(q_pids, g_pids, eligible=q_pids > 0)

    def members_of(start: int, end: int):
        members = groups.block(start, end)
        same_cam = g_cams[np.maximum(members, 0)] == q_cams[start:end, None]
        return members, same_cam & (members >= 0)

    return groups, members_of


def _evaluate_blocks(blocks: Blocks, q_pids, q_cams, g_pids, g_cams, ap_mode, max_rank, per_query=False):
    """Run the protocol over ``(start, end, scores)`` blocks whose columns are the junk-free gallery."""
    work, finish = _protocol(q_pids, q_cams, g_pids, g_cams, ap_mode, max_rank, per_query)
    for start, end, scores in blocks:
        work(start, end, scores)
    return finish()


def _protocol(q_pids, q_cams, g_pids, g_cams, ap_mode, max_rank, per_query=False):
    """``(work, finish)``: ``work(start, end, scores)`` counts a block of queries against the junk-free
    gallery (rows ``start:end`` of its outputs only: blocks may come on several threads, in any order);
    ``finish()`` returns the metrics once every block is done."""
    _, members_of = _reid_members(q_pids, q_cams, g_pids, g_cams)
    num_q = len(q_pids)
    ap = np.zeros(num_q)
    inp = np.zeros(num_q)
    first = np.zeros(num_q, dtype=np.int64)
    num_matches = np.zeros(num_q, dtype=np.int64)

    def work(start: int, end: int, scores: np.ndarray) -> None:
        members, excluded = members_of(start, end)
        ranks, n = match_ranks(scores, members, excluded)
        num_matches[start:end] = n
        if ranks.shape[1] == 0:
            return
        ap[start:end] = average_precision(ranks, n, ap_mode)
        inp[start:end] = inverse_negative_penalty(ranks, n)
        first[start:end] = ranks[:, 0]

    def finish() -> dict:
        has_match = _check_queries(q_pids, num_matches, g_pids)
        return _summarize(ap, inp, first, has_match, max_rank, num_q, per_query)
    return work, finish


def evaluate_reid(query_feats, gallery_feats, query_pids, gallery_pids, query_camids=None, gallery_camids=None,
                  metric: str = "cosine", max_rank: int = 50, ap_mode: str = "standard",
                  block_size: int | None = None, approximate: ApproximateSearch | None = None,
                  rerank: bool = False, rerank_params: dict | None = None, per_query: bool = False,
                  camera_filter: bool = True, progress: bool | None = False) -> dict:
    """Market-1501 protocol metrics of query features [Q, D] against gallery features [G, D].

    numpy arrays or torch tensors; ids and cameras are integer vectors of matching lengths. Cameras may be
    None only with ``camera_filter=False``, which turns the same-camera rule off (every same-identity gallery
    item is a true match, a copy of the query image in the gallery too).
    Features must be finite, not too large for float32 scores, and (cosine) of non-zero norm.
    Returns ``mAP``, ``rank1``, ``rank5``, ``rank10``, ``mINP`` (fractions in [0, 1]), ``cmc`` (list of
    ``max_rank`` fractions, ``cmc[k-1]`` = rank-k rate), ``num_valid_queries`` and ``num_skipped_queries``.
    Exact by default (scores in blocks of ``block_size`` queries, one block per worker thread at a time, no
    gallery sort: :mod:`reid_robust.evaluation.blocks`). With ``approximate``
    a FAISS IVF/HNSW index retrieves ``approximate.topk`` items per query and matches ranked beyond them
    count as missed (negatives the index misses move matches up, so the result is no bound either way).
    ``rerank=True`` evaluates k-reciprocal re-ranked distances instead, block by block
    (:func:`reid_robust.evaluation.rerank.iter_rerank_blocks` on the features as searched: normalised for
    cosine; ``rerank_params`` = k1, k2, lambda_value). ``per_query=True`` adds ``per_query``: arrays
    ``ap``, ``inp``, ``first_rank`` (0 = no match retrieved) and ``valid`` over all queries.
    ``progress=None`` shows the progress of the query blocks (a bar on a terminal, else a log line about every
    30 s; :mod:`reid_robust.progress`); ``False`` (the default) is silent.
    """
    check_metric(metric)
    _check_options(ap_mode, max_rank, block_size, camera_filter)
    (qf, q_sq), (gf, g_sq), q_pids, g_pids, q_cams, g_cams = _validate(
        query_feats, gallery_feats, query_pids, gallery_pids, query_camids, gallery_camids, metric, camera_filter)
    keep = g_pids != -1  # junk for every query: drop once (order, hence the tie rule, is preserved)
    if not keep.any():
        raise ValueError("the gallery holds only junk items (identity -1)")
    dropped = not keep.all()
    if dropped:
        gf, g_sq, g_pids, g_cams = gf[keep], g_sq[keep], g_pids[keep], g_cams[keep]
    if not rerank and approximate is None:
        work, finish = _protocol(q_pids, q_cams, g_pids, g_cams, ap_mode, max_rank, per_query)
        desc = f"evaluating {len(qf)} queries"
        if metric == "cosine" and scalable_norms(q_sq) and scalable_norms(g_sq):  # no normalised copies
            run_score_blocks(qf, gf, metric, work, block_size, progress, desc, np.sqrt(g_sq))
        else:
            run_score_blocks(prepare(qf, metric, q_sq), prepare(gf, metric, g_sq, in_place=dropped), metric, work,
                             block_size, progress, desc)
        return finish()
    qf, gf = prepare(qf, metric, q_sq), prepare(gf, metric, g_sq, in_place=dropped)  # gf[keep] is our copy
    if rerank:
        if approximate is not None:
            raise ValueError("rerank and approximate cannot be combined")
        reranked = iter_rerank_blocks(qf, gf, block_size=block_size, progress=progress, **(rerank_params or {}))
        blocks: Iterator[tuple[int, int, np.ndarray]] = ((start, end, np.negative(d, out=d))
                                                         for start, end, d in reranked)
        return _evaluate_blocks(blocks, q_pids, q_cams, g_pids, g_cams, ap_mode, max_rank, per_query)
    return _evaluate_approximate(qf, gf, q_pids, g_pids, q_cams, g_cams, metric, ap_mode, max_rank,
                                 approximate, per_query, progress)


def evaluate_reid_distances(distances, query_pids, gallery_pids, query_camids=None, gallery_camids=None,
                            max_rank: int = 50, ap_mode: str = "standard", block_size: int | None = None,
                            per_query: bool = False, camera_filter: bool = True,
                            progress: bool | None = False) -> dict:
    """The same protocol from a precomputed distance matrix [Q, G] (lower = closer), e.g. after re-ranking
    (``progress``: as for :func:`evaluate_reid`)."""
    _check_options(ap_mode, max_rank, block_size, camera_filter)
    if isinstance(distances, torch.Tensor):
        distances = distances.detach().cpu().numpy()
    distances = np.asarray(distances)
    if distances.ndim != 2 or 0 in distances.shape:
        raise ValueError(f"distances must be a non-empty [Q, G] matrix, got shape {distances.shape}")
    if not np.isfinite(distances).all():
        raise ValueError("distances hold NaN or infinite values")
    if np.abs(distances).max() > np.finfo(np.float32).max:
        raise ValueError("distances hold values too large for float32 scores")
    q_pids = as_label_vector(query_pids, "query_pids", distances.shape[0])
    g_pids = as_label_vector(gallery_pids, "gallery_pids", distances.shape[1])
    q_cams, g_cams = protocol_cameras(query_camids, gallery_camids, distances.shape[0], distances.shape[1],
                                      camera_filter)
    keep = g_pids != -1
    if not keep.any():
        raise ValueError("the gallery holds only junk items (identity -1)")
    scores = -distances[:, keep].astype(np.float32)
    blocks = shown_blocks(iter_matrix_blocks(scores, block_size), len(scores), scores.shape[1], block_size,
                          progress, f"evaluating {len(scores)} queries")
    return _evaluate_blocks(blocks, q_pids, q_cams, g_pids[keep], g_cams[keep], ap_mode, max_rank,
                            per_query)


def _evaluate_approximate(qf, gf, q_pids, g_pids, q_cams, g_cams, metric, ap_mode, max_rank, approximate,
                          per_query, progress=False):
    """Metrics from top-k lists of an approximate index (ranks past the list = missed)."""
    index = build_index(gf, metric, approximate)
    _, topk = search_topk(index, qf, approximate.topk, metric)
    groups, _ = _reid_members(q_pids, q_cams, g_pids, g_cams)
    num_matches = groups.count.copy()
    ranks_all = []
    for i in show_progress(range(len(q_pids)), desc="matching top-k lists", unit="query", enabled=progress):
        ids = topk[i][topk[i] >= 0]
        same = g_pids[ids] == q_pids[i]
        junk = same & (g_cams[ids] == q_cams[i])
        kept_same = same[~junk]
        r = np.flatnonzero(kept_same) + 1
        ranks_all.append(r)
        if q_pids[i] > 0:
            members = groups.order[groups.start[i]:groups.start[i] + groups.count[i]]
            num_matches[i] = int((g_cams[members] != q_cams[i]).sum())
    width = max([len(r) for r in ranks_all] + [1])
    ranks = np.zeros((len(q_pids), width), dtype=np.int64)
    for i, r in enumerate(ranks_all):
        ranks[i, :len(r)] = r
    ap = average_precision(ranks, num_matches, ap_mode)
    # INP needs the last match; it is known only when every match was retrieved
    all_found = np.array([len(r) for r in ranks_all]) == num_matches
    last = np.array([r[-1] if len(r) else 0 for r in ranks_all])
    inp = np.where(all_found & (last > 0), num_matches / np.maximum(last, 1), 0.0)
    has_match = _check_queries(q_pids, num_matches, g_pids)
    return _summarize(ap, inp, ranks[:, 0], has_match, max_rank, len(q_pids), per_query)
