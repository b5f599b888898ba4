"""Top-k search over a gallery split into shards: each shard searched on its own (another process or
machine, possibly from a shard file), the per-shard lists merged.

Every shard returns ``(scores[Q, k], global indices[Q, k])`` (higher score = closer, as in
:mod:`reid_robust.evaluation.search`); :func:`merge_topk` keeps the k best by (score, then smaller global
index). Guarantees, each tested:
- exact (``approximate=None``): the merged lists are the unsharded exact top-k, ties by global index
  (each shard's list is its exact top-k under the same total order, so the global top-k lies in the union);
- IVF: with one coarse quantiser trained once (:func:`train_quantizer`) and shared by all shards, a query
  visits the same ``nprobe`` lists in every shard, so the union of scanned items, hence the merged top-k, is
  the unsharded IVF's;
- HNSW: one graph per shard; recall differs from one graph over the whole gallery (per-shard graphs are
  smaller, usually a little better at equal ``ef_search``).

Scores: exact search uses ``q̂ᵀĝ`` (cosine) or ``2 qᵀg − ||g||²`` (euclidean), FAISS indexes ``q̂ᵀĝ`` or
``−||q − g||²``; within one search every shard uses the same formula, so merging is consistent.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import faiss
import numpy as np
import torch

from ..safe_load import numpy_load
from .search import ApproximateSearch, as_feature_matrix, check_metric, check_positive_int, iter_score_blocks

ShardResult = tuple[np.ndarray, np.ndarray]


def split_rows(num: int, num_shards: int) -> list[tuple[int, int]]:
    """``num_shards`` consecutive row ranges ``(start, end)`` covering ``range(num)``, sizes differing by <= 1."""
    check_positive_int(num_shards, "num_shards")
    bounds = np.linspace(0, num, min(num_shards, num) + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])]


def default_nlist(num: int, approximate: ApproximateSearch) -> int:
    """IVF lists for ``num`` gallery rows: ``approximate.nlist`` or about 4 sqrt(num), as build_index."""
    return max(1, min(approximate.nlist or int(4 * np.sqrt(num)), num))


def _select_topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Column positions [B, k] of each row's k largest scores, ties by position, best first.

    One partial selection per row; only rows where the k-th score is tied beyond the selection are
    selected again exactly (by score, then position).
    """
    n = scores.shape[1]
    if k >= n:
        return np.lexsort((np.broadcast_to(np.arange(n), scores.shape), -scores), axis=1)
    top = torch.topk(torch.from_numpy(scores), k, dim=1)
    cols, picked = top.indices.numpy(), top.values.numpy()
    kth = picked[:, -1:]
    tied = np.flatnonzero((scores == kth).sum(axis=1) > (picked == kth).sum(axis=1))
    for row in tied:  # rare: ties straddle the k-th place; keep the smallest positions among them
        better = np.flatnonzero(scores[row] > kth[row])
        equal = np.flatnonzero(scores[row] == kth[row])[: k - len(better)]
        cols[row] = np.concatenate([better, equal])
    picked = np.take_along_axis(scores, cols, axis=1)
    order = np.lexsort((cols, -picked), axis=1)
    return np.take_along_axis(cols, order, axis=1)


def exact_topk(query: np.ndarray, gallery: np.ndarray, k: int, metric: str, offset: int = 0,
               block_size: int | None = None) -> ShardResult:
    """Exact top-k of prepared query rows [Q, D] against one (shard of the) prepared gallery [n, D] whose
    first row has global index ``offset``; ties by index. Returns float32 scores and int64 global indices."""
    k = min(check_positive_int(k, "k"), gallery.shape[0])
    scores = np.empty((query.shape[0], k), dtype=np.float32)
    indices = np.empty((query.shape[0], k), dtype=np.int64)
    for start, end, block in iter_score_blocks(query, gallery, metric, block_size):
        cols = _select_topk(block, k)
        scores[start:end] = np.take_along_axis(block, cols, axis=1)
        indices[start:end] = cols + offset
    return scores, indices


def merge_topk(results: Sequence[ShardResult], k: int) -> ShardResult:
    """The k best of several shards' ``(scores, global indices)`` lists per query: higher score first, equal
    scores by smaller global index; index -1 (an empty slot of an approximate index) is dropped."""
    scores = np.concatenate([np.asarray(s, dtype=np.float32) for s, _ in results], axis=1)
    indices = np.concatenate([np.asarray(i, dtype=np.int64) for _, i in results], axis=1)
    scores = np.where(indices >= 0, scores, -np.inf)
    order = np.lexsort((np.where(indices >= 0, indices, np.iinfo(np.int64).max), -scores), axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), np.take_along_axis(indices, order, axis=1)


def train_quantizer(sample: np.ndarray, metric: str, nlist: int, seed: int = 0) -> np.ndarray:
    """Coarse-quantiser centroids [nlist, D] of prepared rows, trained once and shared by every shard's IVF
    index: the k-means of :func:`reid_robust.evaluation.search.build_index` (same FAISS training, same
    seed), so a sharded IVF search equals the unsharded one."""
    check_metric(metric)
    nlist = min(check_positive_int(nlist, "nlist"), sample.shape[0])
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    index = faiss.index_factory(sample.shape[1], f"IVF{nlist},Flat", faiss_metric)
    faiss.extract_index_ivf(index).cp.seed = seed
    index.train(np.ascontiguousarray(sample, dtype=np.float32))
    return faiss.extract_index_ivf(index).quantizer.reconstruct_n(0, nlist)


def build_shard_index(shard: np.ndarray, offset: int, metric: str, approximate: ApproximateSearch,
                      centroids: np.ndarray | None = None):
    """A FAISS IVF-Flat (over the shared ``centroids``, required for IVF) or HNSW-Flat index over one shard
    of prepared rows, answering global indices ``offset..offset + n``."""
    check_metric(metric)
    dim = shard.shape[1]
    faiss_metric = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    ids = np.arange(offset, offset + shard.shape[0], dtype=np.int64)
    index: Any  # FAISS's SWIG classes take the attributes set below
    if approximate.kind == "hnsw":
        hnsw = faiss.IndexHNSWFlat(dim, approximate.hnsw_m, faiss_metric)
        hnsw.hnsw.efConstruction = approximate.ef_construction
        hnsw.hnsw.efSearch = approximate.ef_search
        index = faiss.IndexIDMap(hnsw)
        index.referenced_objects = [hnsw]  # keep the inner index alive with the wrapper
    else:
        if centroids is None or centroids.ndim != 2 or centroids.shape[1] != dim:
            raise ValueError(f"IVF shards need shared centroids [nlist, {dim}] from train_quantizer, got "
                             f"{None if centroids is None else centroids.shape}")
        quantizer = faiss.IndexFlatIP(dim) if metric == "cosine" else faiss.IndexFlatL2(dim)
        quantizer.add(np.ascontiguousarray(centroids, dtype=np.float32))
        index = faiss.IndexIVFFlat(quantizer, dim, len(centroids), faiss_metric)
        index.referenced_objects = [quantizer]
        index.is_trained = True
        index.nprobe = min(approximate.nprobe, len(centroids))
    index.add_with_ids(np.ascontiguousarray(shard, dtype=np.float32), ids)
    return index


def search_shard(query: np.ndarray, shard: np.ndarray, offset: int, k: int, metric: str,
                 approximate: ApproximateSearch | None = None, centroids: np.ndarray | None = None) -> ShardResult:
    """Top-k ``(scores[Q, k], global indices[Q, k])`` of prepared queries in one shard of prepared rows
    (exact, or through an IVF/HNSW index built over the shard); slots beyond the shard's size hold -1."""
    if approximate is None:
        return exact_topk(query, shard, k, metric, offset)
    index = build_shard_index(shard, offset, metric, approximate, centroids)
    scores, indices = index.search(np.ascontiguousarray(query, dtype=np.float32), check_positive_int(k, "k"))
    return (scores if metric == "cosine" else -scores).astype(np.float32), indices.astype(np.int64)


def sharded_search(query, gallery, k: int, metric: str, num_shards: int,
                   approximate: ApproximateSearch | None = None, block_size: int | None = None) -> ShardResult:
    """Top-k of query features [Q, D] in gallery features [G, D] split into ``num_shards`` row ranges,
    searched one by one and merged (in one process; the multi-process form runs :func:`search_shard_file`
    per shard and :func:`merge_topk` on the results)."""
    check_metric(metric)
    qf = _prepared(query, "query_feats", metric)
    gf = _prepared(gallery, "gallery_feats", metric)
    centroids = None
    if approximate is not None and approximate.kind == "ivf":
        centroids = train_quantizer(gf, metric, default_nlist(len(gf), approximate), approximate.seed)
    results = [search_shard(qf, gf[a:b], a, k, metric, approximate, centroids) if approximate else
               exact_topk(qf, gf[a:b], k, metric, a, block_size) for a, b in split_rows(len(gf), num_shards)]
    return merge_topk(results, k)


def _prepared(x, name: str, metric: str) -> np.ndarray:
    from .search import prepare

    return prepare(as_feature_matrix(x, name, metric), metric)


def save_shard(path: str | os.PathLike, feats: np.ndarray, offset: int) -> None:
    """Write one shard file: ``feats`` [n, D] float32 and ``offset`` (global index of its first row)."""
    np.savez(path, feats=np.asarray(feats, dtype=np.float32), offset=np.int64(offset))


def load_shard(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """``(feats [n, D] float32, offset)`` of a shard file; a file without them is one ValueError naming it."""
    with numpy_load(path, "shard file") as data:
        if "feats" not in data.files or "offset" not in data.files:
            raise ValueError(f"shard file {os.fspath(path)} lacks 'feats' or 'offset' (has {sorted(data.files)})")
        feats, offset = data["feats"], data["offset"]
    if feats.ndim != 2 or offset.ndim != 0 or not np.issubdtype(offset.dtype, np.integer) or offset < 0:
        raise ValueError(f"shard file {os.fspath(path)}: expected feats [n, D] and a non-negative integer "
                         f"offset, got feats {feats.shape} and offset {offset!r}")
    return as_feature_matrix(feats, f"shard file {os.fspath(path)} feats"), int(offset)


def search_shard_file(path: str | os.PathLike, query, k: int, metric: str,
                      approximate: ApproximateSearch | None = None,
                      centroids: np.ndarray | None = None) -> ShardResult:
    """:func:`search_shard` on a shard file (what one process of a multi-process search runs)."""
    feats, offset = load_shard(path)
    return search_shard(_prepared(query, "query_feats", metric), _prepared(feats, os.fspath(path), metric),
                        offset, k, metric, approximate, centroids)


def shard_candidates(num_shards: int) -> Callable[[np.ndarray, np.ndarray, int], tuple]:
    """A candidate search for :func:`reid_robust.evaluation.rerank.iter_rerank_blocks` over ``num_shards``
    column shards of the items: per shard, each item's c nearest (squared distance, global index) and its
    largest squared distance; merged, the result is the unsharded candidate lists' (ties by index)."""
    def candidates(x: np.ndarray, sq: np.ndarray, c: int):
        results, row_max = [], np.zeros(len(x), dtype=np.float32)
        for a, b in split_rows(len(x), num_shards):
            top_scores, top_idx = exact_topk(x, x[a:b], c, "euclidean", a)  # 2 x.y - |y|^2 = |x|^2 - d
            results.append((top_scores, top_idx))
            for s, e, block in iter_score_blocks(x, x[a:b], "euclidean"):
                np.maximum(row_max[s:e], sq[s:e] - block.min(axis=1), out=row_max[s:e])
        scores, idx = merge_topk(results, c)
        return np.maximum(sq[:, None] - scores, 0), idx, np.maximum(row_max, 1e-12)

    return candidates


def build_sharded_index(gallery: np.ndarray, metric: str, approximate: ApproximateSearch):
    """One FAISS index per row range of prepared gallery rows (``approximate.shards`` of them, IVF over one
    shared quantiser), wrapped in a ``faiss.IndexShards`` that searches them all and merges: what
    :func:`reid_robust.evaluation.search.build_index` returns for ``shards > 1`` (the approximate path of
    :func:`reid_robust.evaluation.evaluate_reid`)."""
    centroids = None
    if approximate.kind == "ivf":
        centroids = train_quantizer(gallery, metric, default_nlist(len(gallery), approximate), approximate.seed)
    shards: Any = faiss.IndexShards(gallery.shape[1], False, False)  # type: ignore[call-arg]  # not threaded; the shards answer global ids
    shards.metric_type = faiss.METRIC_INNER_PRODUCT if metric == "cosine" else faiss.METRIC_L2
    parts = [build_shard_index(gallery[a:b], a, metric, approximate, centroids)
             for a, b in split_rows(len(gallery), approximate.shards)]
    for part in parts:
        shards.add_shard(part)
    shards.referenced_objects = parts
    return shards
