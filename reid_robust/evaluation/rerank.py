"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017; reference code zhunzhong07/person-re-ranking). methods.md §12.2.

All M = Q + G items (queries and gallery together) are used, transductively:
1. ``d̃`` = squared Euclidean distance, each row divided by its maximum; initial ranking per row (ties by
   item index, so an item's own entry comes first unless an earlier duplicate exists);
2. ``R(p, k1)`` = items of p's top k1+1 whose own top k1+1 contains p;
3. for each ``q ∈ R(p, k1)``, ``R(q, round(k1/2))`` is added when more than 2/3 of it lies in ``R(p, k1)``;
4. ``V_p[g] = exp(-d̃(p, g))`` on the expanded set, normalised to sum 1;
5. local query expansion: ``V_p`` = mean of V over p's top k2 rows;
6. Jaccard distance ``d_J = 1 - m / (2 - m)``, ``m = Σ_j min(V_p[j], V_g[j])``;
7. ``d* = (1 - λ) d_J + λ d̃`` for queries x gallery.

The input is plain (not squared) Euclidean distance, squared once here (torchreid squares twice).
Memory: the neighbour lists [M, k1+1], a sparse V (about M x 200 entries) and one block of queries' re-ranked
distances at a time (:func:`iter_rerank_blocks`); the full M x M distance matrix is computed in row blocks
and never held. :func:`k_reciprocal_rerank` assembles the whole [Q, G] matrix when a caller wants it.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .search import as_feature_matrix, check_block_size, check_positive_int, check_same_dim, default_block_size


def _top_neighbours(dist_rows: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the k smallest entries of each row [B, M], ordered by (distance, index)."""
    kth = torch.topk(dist_rows, k, dim=1, largest=False, sorted=True).values[:, -1:]
    less = dist_rows < kth
    equal = dist_rows == kth
    needed = k - less.sum(1, keepdim=True)
    take = less | (equal & (equal.cumsum(1) <= needed))
    idx = take.nonzero()[:, 1].view(dist_rows.shape[0], k)  # ascending index within each row
    order = torch.sort(dist_rows.gather(1, idx), dim=1, stable=True).indices
    return idx.gather(1, order)


def _reciprocal(neighbours: np.ndarray, k: int) -> list[np.ndarray]:
    """R(p, k) for every p: members of p's top k+1 whose own top k+1 contains p."""
    top = neighbours[:, : k + 1]
    back = top[top]  # [M, k+1, k+1]
    mutual = (back == np.arange(len(top))[:, None, None]).any(axis=2)
    return [top[p][mutual[p]] for p in range(len(top))]


def _encode(squared_row_fn, neighbours: np.ndarray, k1: int) -> sp.csr_matrix:
    """Sparse V [M, M] of steps 2-4; ``squared_row_fn(p, cols)`` returns d̃(p, cols)."""
    num = len(neighbours)
    recip = _reciprocal(neighbours, k1)
    half = int(np.around(k1 / 2.0))
    recip_half = _reciprocal(neighbours, half)
    half_len = np.array([len(r) for r in recip_half])
    in_base = np.zeros(num, dtype=bool)  # membership of R(p, k1), set and cleared for each p
    rows, cols, vals = [], [], []
    for p in range(num):
        base = recip[p]
        in_base[base] = True
        candidates = [recip_half[q] for q in base]
        lengths = half_len[base]
        inside = np.concatenate([[0], np.cumsum(in_base[np.concatenate(candidates)])])
        ends = np.cumsum(lengths)
        overlap = inside[ends] - inside[ends - lengths]
        in_base[base] = False
        added = [candidates[i] for i in np.flatnonzero(overlap > 2.0 / 3.0 * lengths)]  # strict, as the reference
        members = np.unique(np.concatenate([base, *added]))
        weights = np.exp(-squared_row_fn(p, members))
        rows.append(np.full(len(members), p))
        cols.append(members)
        vals.append((weights / weights.sum()).astype(np.float32))
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(num, num))


def _jaccard_rows(v: sp.csr_matrix, gallery: sp.csc_matrix, start: int, end: int) -> np.ndarray:
    """d_J(p, g) [end - start, G] for queries p in [start, end) from the sparse encodings; ``gallery`` is the
    gallery part of ``v`` in CSC form."""
    out = np.empty((end - start, gallery.shape[0]), dtype=np.float32)
    for i, p in enumerate(range(start, end)):
        lo, hi = v.indptr[p], v.indptr[p + 1]
        cols, vals = v.indices[lo:hi], v.data[lo:hi]
        sub = gallery[:, cols].tocoo()
        overlap = np.bincount(sub.row, weights=np.minimum(vals[sub.col], sub.data), minlength=out.shape[1])
        out[i] = 1.0 - overlap / (2.0 - overlap)
    return out


def iter_rerank_blocks(query_feats, gallery_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                       block_size: int | None = None):
    """Yield ``(start, end, distances[end - start, G])``: re-ranked distances (lower = closer) of consecutive
    blocks of queries [Q, D] against the gallery [G, D].

    Memory beyond the features: the neighbour lists, the sparse encodings V and one block (the default block
    holds 2^24 distances, 64 MB), so re-ranked evaluation stays O(block x gallery) like the plain one. The
    original distance is the Euclidean distance of the features as given (normalise them first for
    cosine-trained embeddings, as BoT does).
    """
    check_positive_int(k1, "k1")
    check_positive_int(k2, "k2")
    if k2 > k1 + 1:
        raise ValueError(f"need k1 >= 1 and 1 <= k2 <= k1 + 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    check_block_size(block_size)
    qf = as_feature_matrix(query_feats, "query_feats")
    gf = as_feature_matrix(gallery_feats, "gallery_feats")
    check_same_dim(qf, gf)
    x = np.concatenate([qf, gf])
    num, num_query = x.shape[0], qf.shape[0]
    k = min(k1 + 1, num)
    sq = np.einsum("ij,ij->i", x, x)

    def squared(rows, cols=slice(None)) -> np.ndarray:
        """Squared Euclidean distances [len(rows), len(cols)] (numpy's BLAS for the product)."""
        return np.maximum(sq[rows][:, None] + sq[cols][None, :] - 2.0 * (x[rows] @ x[cols].T), 0)

    row_max = np.empty(num, dtype=np.float32)
    neighbours_np = np.empty((num, k), dtype=np.int64)
    block = block_size or default_block_size(num)
    for start in range(0, num, block):
        rows = slice(start, min(start + block, num))
        d = squared(rows)
        row_max[rows] = np.maximum(d.max(axis=1), 1e-12)
        neighbours_np[rows] = _top_neighbours(torch.from_numpy(d / row_max[rows, None]), k).numpy()

    def normalised_row(p: int, cols: np.ndarray) -> np.ndarray:
        return (np.maximum(sq[p] + sq[cols] - 2.0 * (x[cols] @ x[p]), 0) / row_max[p]).astype(np.float32)

    v = _encode(normalised_row, neighbours_np, k1)
    k2 = min(k2, k)  # fewer than k2 items in all: expand over all of them
    if k2 != 1:
        expand = sp.csr_matrix((np.full(num * k2, 1.0 / k2, dtype=np.float32),
                                (np.repeat(np.arange(num), k2), neighbours_np[:, :k2].reshape(-1))),
                               shape=(num, num))
        v = (expand @ v).tocsr()
    gallery_v = v[num_query:].tocsc()
    query_block = block_size or default_block_size(num - num_query)
    for start in range(0, num_query, query_block):
        end = min(start + query_block, num_query)
        out = _jaccard_rows(v, gallery_v, start, end)
        out *= 1.0 - lambda_value
        out += lambda_value * (squared(slice(start, end), slice(num_query, num)) / row_max[start:end, None])
        yield start, end, out


def k_reciprocal_rerank(query_feats, gallery_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                        block_size: int | None = None) -> np.ndarray:
    """Re-ranked distances [Q, G] (lower = closer) from query [Q, D] and gallery [G, D] features, whole
    (for pictures or custom metrics; :func:`iter_rerank_blocks` gives them block by block)."""
    out = None
    for start, end, block in iter_rerank_blocks(query_feats, gallery_feats, k1, k2, lambda_value, block_size):
        if out is None:
            out = np.empty((len(query_feats), block.shape[1]), dtype=np.float32)
        out[start:end] = block
    assert out is not None  # as_feature_matrix rejects 0 queries, so there was at least one block
    return out
