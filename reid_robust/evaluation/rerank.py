"""k-reciprocal re-ranking (Zhong, Zheng, Cao, Li, "Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017; reference code zhunzhong07/person-re-ranking). methods.md §12.2.

All M = Q + G items (queries and gallery together) are used, transductively:
1. ``d̃`` = squared Euclidean distance, each row divided by its maximum; initial ranking per row by
   (d̃, item index): ties go to the earlier item (a stable sort's order);
2. ``R(p, k1)`` = items of p's top k1+1 whose own top k1+1 contains p;
3. for each ``q ∈ R(p, k1)``, ``R(q, round(k1/2))`` is added when more than 2/3 of it lies in ``R(p, k1)``;
4. ``V_p[g] = exp(-d̃(p, g))`` on the expanded set, normalised to sum 1;
5. local query expansion: ``V_p`` = mean of V over p's top k2 rows;
6. Jaccard distance ``d_J = 1 - m / (2 - m)``, ``m = Σ_j min(V_p[j], V_g[j])``;
7. ``d* = (1 - λ) d_J + λ d̃`` for queries x gallery.

The input is plain (not squared) Euclidean distance, squared once here (torchreid squares twice).

Cost: the M x M squared distances are computed once, half of them (block rows of the upper triangle; each
block also serves, transposed, the rows below it), keeping per row its maximum and its ``c`` smallest
entries; then Q x G once more for the λ d̃ term. Everything else is vectorised over the neighbour lists
and split by rows over the worker threads (:func:`map_row_chunks`), bit-equal for any thread count.
Memory: one block of distances (2^24 entries by default), the candidate lists [M, c], a sparse V (a few
hundred entries per row) and one block of queries' results at a time (:func:`iter_rerank_blocks`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import numpy as np
import scipy.sparse as sp
import torch

from reid_robust.progress import progress as show_progress

from .search import (
    as_feature_matrix,
    check_block_size,
    check_positive_int,
    check_same_dim,
    default_block_size,
    map_row_chunks,
    worker_threads,
)

CandidateSearch = Callable[[np.ndarray, np.ndarray, int], tuple]
JACCARD_ENTRIES = 1 << 22  # (query, shared item, gallery) triples in Jaccard steps at once: ~100 MB of temporaries


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


def _passing(mask: np.ndarray) -> np.ndarray:
    """Flat C-order positions of the True entries of a C-contiguous boolean array (few of them): scanned
    eight bytes at a time, several times faster than ``np.flatnonzero`` on sparse masks."""
    flat = mask.reshape(-1)
    if flat.size % 8:
        return np.flatnonzero(flat)
    words = np.flatnonzero(flat.view(np.uint64))
    rows, offsets = np.nonzero(flat.reshape(-1, 8)[words])
    return words[rows] * 8 + offsets


def _merge(raw: np.ndarray, idx: np.ndarray, rows: np.ndarray, new_vals: np.ndarray, new_idx: np.ndarray):
    """Merge new candidates (``rows`` ascending, values, items) into the lists of ``rows`` (in place): each
    list keeps its ``c`` smallest, and every value left out is >= every value kept, the invariant that makes
    the final selection exact (see :func:`_neighbours`). Rows are split over worker threads
    (:func:`map_row_chunks`); each row's merge does not depend on the split (:func:`_merge_rows`)."""
    starts = np.flatnonzero(np.diff(rows, prepend=-1))
    ends = np.append(starts[1:], len(rows))

    def chunk(a: int, b: int) -> None:
        lo, hi = starts[a], ends[b - 1]
        _merge_rows(raw, idx, rows[starts[a:b]], ends[a:b] - starts[a:b], new_vals[lo:hi], new_idx[lo:hi])

    if len(starts):
        map_row_chunks(chunk, len(starts), raw.shape[1] + len(rows) // len(starts))


def _merge_rows(raw, idx, touched, counts, new_vals, new_idx) -> None:
    """:func:`_merge` for rows ``touched`` with ``counts`` new entries each (entries grouped by row), in
    groups of rows with 8, 16, 32, ... new entries at most, each padded to that width, so a row's selection
    sees the same values in the same slots whichever rows share its group."""
    width = 8
    while len(touched):
        group = counts <= width
        in_group = np.repeat(group, counts)
        if group.any():
            _merge_group(raw, idx, touched[group], counts[group], new_vals[in_group], new_idx[in_group], width)
        new_vals, new_idx = new_vals[~in_group], new_idx[~in_group]
        touched, counts = touched[~group], counts[~group]
        width *= 2


def _merge_group(raw, idx, touched, counts, new_vals, new_idx, width: int) -> None:
    """:func:`_merge_rows` for rows ``touched`` with ``counts`` <= ``width`` new entries each."""
    c = raw.shape[1]
    pos = np.arange(len(new_vals)) - np.repeat(np.cumsum(counts) - counts, counts)
    slot = np.repeat(np.arange(len(touched)), counts)
    vals = np.full((len(touched), c + width), np.inf, dtype=np.float32)
    items = np.full(vals.shape, -1, dtype=np.int64)
    vals[:, :c], items[:, :c] = raw[touched], idx[touched]
    vals[slot, c + pos], items[slot, c + pos] = new_vals, new_idx
    keep = np.argpartition(vals, c - 1, axis=1)[:, :c]
    raw[touched] = np.take_along_axis(vals, keep, axis=1)
    idx[touched] = np.take_along_axis(items, keep, axis=1)


def _absorb(raw: np.ndarray, idx: np.ndarray, d: np.ndarray, row0: int, col0: int, transposed: bool) -> None:
    """Merge the entries of a distance block into the candidate lists of its rows: ``d`` [n, w] holds rows
    row0.. against columns col0.. (``transposed``: ``d`` [w, n] holds columns col0.. against rows row0..).
    Only entries below a row's current c-th candidate can enter its list; rows whose list is not yet full
    take a dense top-k.
    """
    n = d.shape[1] if transposed else d.shape[0]
    thr = raw[row0:row0 + n].max(axis=1)
    if not np.isfinite(thr).all():
        rows_first = torch.from_numpy(d).T if transposed else torch.from_numpy(d)  # a view: no copy
        k = min(raw.shape[1], rows_first.shape[1])
        top = torch.topk(rows_first, k, dim=1, largest=False)
        rows = np.repeat(np.arange(row0, row0 + n), k)
        _merge(raw, idx, rows, top.values.numpy().ravel(), top.indices.numpy().ravel() + col0)
        return
    flat = _passing(d < (thr[None, :] if transposed else thr[:, None]))
    if not len(flat):
        return
    a, b = np.divmod(flat, d.shape[1])
    vals = d[a, b]
    if transposed:  # a = column, b = row: group by row
        order = np.argsort(b, kind="stable")
        a, b, vals = b[order], a[order], vals[order]
    _merge(raw, idx, a + row0, vals, b + col0)


def _to_squared_distances(d: np.ndarray, row_sq: np.ndarray, col_sq: np.ndarray) -> np.ndarray:
    """In place: products ``d`` [n, m] of rows and columns become squared distances
    ``row_sq[:, None] + col_sq - 2 d`` (always in this order of float32 operations)."""
    d *= -2.0
    d += col_sq
    d += row_sq[:, None]
    return d


def _candidates(x: np.ndarray, sq: np.ndarray, c: int, block: int, progress: bool | None = False):
    """Per item p: its ``c`` smallest squared distances ``raw[p]`` to ``idx[p]`` (unordered) and its largest
    squared distance ``row_max[p]``, from the upper triangle of the M x M matrix in row blocks (each block
    serves its rows and, transposed, the rows below it)."""
    num = len(x)
    raw = np.full((num, c), np.inf, dtype=np.float32)
    idx = np.full((num, c), -1, dtype=np.int64)
    row_max = np.zeros(num, dtype=np.float32)
    for s in show_progress(range(0, num, block), desc=f"re-ranking: neighbours of {num} items", unit="block",
                           enabled=progress):
        e = min(s + block, num)
        d = np.matmul(x[s:e], x[s:].T)  # [b, M - s]: rows s..e against columns s..M
        if np.isfinite(raw[s:].max(axis=1)).all():
            _absorb_block(raw, idx, row_max, d, sq, s, e)
            continue
        _to_squared_distances(d, sq[s:e], sq[s:])  # some lists not yet full (the first blocks): dense top-k
        np.maximum(row_max[s:e], d.max(axis=1), out=row_max[s:e])
        _absorb(raw, idx, d, s, s, transposed=False)
        if e < num:
            below = d[:, e - s:]  # transposed: rows e..M against columns s..e
            np.maximum(row_max[e:], below.max(axis=0), out=row_max[e:])
            _absorb(raw, idx, below, e, s, transposed=True)
    return raw, idx, np.maximum(row_max, 1e-12)


def _absorb_block(raw, idx, row_max, d: np.ndarray, sq: np.ndarray, s: int, e: int) -> None:
    """One block of :func:`_candidates` once every list from row s on is full: the products ``d`` [e - s,
    M - s] become squared distances in place, rows s..e and (transposed) rows e..M update their maxima and
    take the entries below their current c-th candidate. The elementwise passes and the selection of those
    entries run in row chunks on worker threads (:func:`map_row_chunks`); the entries are merged in the
    order one pass over the whole block finds them, so the lists equal those of one thread bit for bit."""
    thr_rows, thr_below = raw[s:e].max(axis=1), raw[e:].max(axis=1)
    width, split = d.shape[1], e - s

    def chunk(a: int, b: int):
        part = d[a:b]
        _to_squared_distances(part, sq[s + a:s + b], sq[s:])
        near = _passing(part < thr_rows[a:b, None])
        below = part[:, split:]
        far = _passing(below < thr_below[None, :])
        return (part.max(axis=1), below.max(axis=0) if split < width else None,
                near + a * width, part.reshape(-1)[near], far + a * (width - split),
                below[np.divmod(far, max(1, width - split))])

    parts = map_row_chunks(chunk, split, width)
    np.maximum(row_max[s:e], np.concatenate([p[0] for p in parts]), out=row_max[s:e])
    rows, cols = np.divmod(np.concatenate([p[2] for p in parts]), width)
    if len(rows):
        _merge(raw, idx, rows + s, np.concatenate([p[3] for p in parts]), cols + s)
    if split == width:
        return
    np.maximum(row_max[e:], np.maximum.reduce([p[1] for p in parts]), out=row_max[e:])
    cols, rows = np.divmod(np.concatenate([p[4] for p in parts]), width - split)  # block row = column
    if len(rows):
        order = np.argsort(rows, kind="stable")
        _merge(raw, idx, rows[order] + e, np.concatenate([p[5] for p in parts])[order], cols[order] + s)


def _neighbours(raw, idx, row_max, k: int, x: np.ndarray, sq: np.ndarray) -> np.ndarray:
    """Top-k neighbours [M, k] by (d̃, index) from the candidate lists; d̃ = max(raw, 0) / row_max.

    Exact whenever the k-th d̃ is below the largest kept candidate's (nothing left out can tie with it);
    the other rows (ties reaching past the candidates, e.g. many duplicates) are recomputed from the full row.
    """
    norm = np.maximum(raw, 0) / row_max[:, None]
    order = np.lexsort((idx, norm), axis=1)
    top = np.take_along_axis(idx, order[:, :k], axis=1)
    if raw.shape[1] < len(x):
        kth = np.take_along_axis(norm, order[:, k - 1:k], axis=1)[:, 0]
        for p in np.flatnonzero(kth >= norm.max(axis=1)):
            row = np.maximum(sq[p] + sq - 2.0 * (x @ x[p]), 0) / row_max[p]
            top[p] = _top_neighbours(torch.from_numpy(row[None].astype(np.float32)), k)[0].numpy()
    return top


def _reciprocal(top: np.ndarray, k: int) -> np.ndarray:
    """R(p, k) for every p, padded [M, k+1] with -1: members of p's top k+1 whose own top k+1 contains p."""
    near = top[:, : k + 1]
    mutual = (near[near] == np.arange(len(near))[:, None, None]).any(axis=2)
    return np.where(mutual, near, -1)


def _expanded_sets(top: np.ndarray, k1: int) -> np.ndarray:
    """Steps 2-3: the expanded set of every p, padded [M, W] with -1, each row sorted and duplicate-free."""
    num = len(top)
    recip = _reciprocal(top, k1)
    half = _reciprocal(top, int(np.around(k1 / 2.0)))
    chunks = map_row_chunks(lambda start, end: _expanded_rows(recip, half, start, end), num, num)
    members = np.sort(np.concatenate(chunks), axis=1)  # the -1 slots first: drop the columns holding only them
    return members[:, members.shape[1] - max(1, int((members >= 0).sum(axis=1).max())):]


def _expanded_rows(recip: np.ndarray, half: np.ndarray, start: int, end: int) -> np.ndarray:
    """:func:`_expanded_sets` of items start..end from R(·, k1) and R(·, round(k1/2)) of all items."""
    num = len(recip)
    chunk = max(1, (1 << 25) // (num * worker_threads()))  # membership tables of R(p, k1): 32 MB in all
    out = []
    for s in range(start, end, chunk):
        base = recip[s:min(s + chunk, end)]  # [n, k1+1]
        rows = np.arange(len(base))
        in_base = np.zeros((len(base), num), dtype=bool)
        in_base[np.broadcast_to(rows[:, None], base.shape)[base >= 0], base[base >= 0]] = True
        cand = np.where(base[:, :, None] >= 0, half[np.maximum(base, 0)], -1)  # [n, k1+1, h+1]
        inside = (in_base[rows[:, None, None], np.maximum(cand, 0)] & (cand >= 0)).sum(-1)
        size = (cand >= 0).sum(-1)
        added = np.where((inside > 2.0 / 3.0 * size)[..., None], cand, -1)  # strict, as the reference
        members = np.sort(np.concatenate([base, added.reshape(len(base), -1)], axis=1), axis=1)
        members[:, 1:][members[:, 1:] == members[:, :-1]] = -1
        out.append(members)
    return np.concatenate(out)


def _member_distances(members, idx, raw, x, sq) -> np.ndarray:
    """Squared distances [M, W] from p to each member (from the candidate lists, or computed if absent;
    0 in the -1 slots)."""
    num, width = members.shape
    order = np.argsort(idx, axis=1)
    cand_keys = (np.arange(num)[:, None] * num + np.take_along_axis(idx, order, axis=1)).ravel()
    cand_raw = np.take_along_axis(raw, order, axis=1).ravel()
    slots = np.flatnonzero(members.ravel() >= 0)
    rows, cols = slots // width, members.ravel()[slots]
    keys = rows * num + cols
    pos = np.minimum(np.searchsorted(cand_keys, keys), len(cand_keys) - 1)
    found = cand_keys[pos] == keys
    values = cand_raw[pos]
    missing = np.flatnonzero(~found)

    def compute(a: int, b: int) -> None:  # the pairs not in the lists, a chunk per worker thread
        for s in range(a, b, 1 << 12):
            m = missing[s:min(s + (1 << 12), b)]
            values[m] = sq[rows[m]] + sq[cols[m]] - 2.0 * np.einsum("ij,ij->i", x[rows[m]], x[cols[m]])

    map_row_chunks(compute, len(missing), 2 * x.shape[1])
    out = np.zeros(num * width, dtype=np.float32)
    out[slots] = np.maximum(values, 0)
    return out.reshape(num, width)


def _encode(members: np.ndarray, sq_dist: np.ndarray, row_max: np.ndarray) -> sp.csr_matrix:
    """Step 4: sparse V [M, M], ``V_p = exp(-d̃(p, ·))`` on p's expanded set, normalised to sum 1."""
    valid = members >= 0
    weights = np.where(valid, np.exp(-(sq_dist / row_max[:, None]).astype(np.float32)), 0).astype(np.float32)
    weights /= np.maximum(weights.sum(axis=1, keepdims=True), np.finfo(np.float32).tiny)  # empty sets stay 0
    counts = valid.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    num = len(members)
    return sp.csr_matrix((weights[valid], members[valid], indptr), shape=(num, num))


def _jaccard_rows(v: sp.csr_matrix, gallery: sp.csc_matrix, start: int, end: int) -> np.ndarray:
    """d_J(p, g) [end - start, G] for queries p in [start, end); ``gallery`` = the gallery rows of V, CSC.

    Each nonzero V_p[j] meets the gallery items g with V_g[j] > 0 (column j): Σ_j min(V_p[j], V_g[j])
    accumulates over those triples only.
    """
    num_g = gallery.shape[0]
    lo, hi = v.indptr[start], v.indptr[end]
    cols, vals = v.indices[lo:hi], v.data[lo:hi]
    query = np.repeat(np.arange(end - start), np.diff(v.indptr[start:end + 1]))
    first = gallery.indptr[cols]
    counts = gallery.indptr[cols + 1] - first
    total = int(counts.sum())
    ends = np.cumsum(counts)
    at = np.arange(total) + np.repeat(first - (ends - counts), counts)
    pair = np.repeat(query * num_g, counts) + gallery.indices[at]
    mins = np.minimum(np.repeat(vals, counts), gallery.data[at])
    overlap = np.bincount(pair, weights=mins, minlength=(end - start) * num_g)
    jaccard = np.subtract(2.0, overlap)  # 1 - m / (2 - m), in place
    np.divide(overlap, jaccard, out=jaccard)
    np.subtract(1.0, jaccard, out=jaccard)
    return jaccard.astype(np.float32).reshape(end - start, num_g)


def _jaccard_steps(v: sp.csr_matrix, gallery: sp.csc_matrix, start: int, end: int,
                   entries: int) -> Iterator[tuple[int, int]]:
    """Consecutive query ranges covering [start, end) for :func:`_jaccard_rows`, each of at most ``entries``
    triples (or one query)."""
    col_nnz = np.diff(gallery.indptr)
    row_nnz = np.diff(v.indptr[start:end + 1])
    per_entry = col_nnz[v.indices[v.indptr[start]:v.indptr[end]]]
    per_query = np.bincount(np.repeat(np.arange(end - start), row_nnz), weights=per_entry, minlength=end - start)
    max_rows = max(1, entries // gallery.shape[0])  # the float64 overlap block stays small too
    before = np.concatenate([[0], np.cumsum(per_query)])  # triples of the queries before each one
    s = start
    while s < end:
        fits = int(np.searchsorted(before, before[s - start] + entries, side="right")) - 1 - (s - start)
        e = min(s + max(1, min(fits, max_rows)), end)
        yield s, e
        s = e


def _final_rows(d: np.ndarray, v: sp.csr_matrix, gallery: sp.csc_matrix, sq: np.ndarray, row_max: np.ndarray,
                start: int, lambda_value: float) -> None:
    """Step 7 for queries start.. (in place): the products ``d`` [n, G] of their features with the gallery's
    become ``(1 - λ) d_J + λ d̃``. The Jaccard steps share ``JACCARD_ENTRIES`` among the worker threads."""
    end, num_query = start + len(d), len(sq) - gallery.shape[0]
    np.maximum(_to_squared_distances(d, sq[start:end], sq[num_query:]), 0, out=d)
    d *= (lambda_value / row_max[start:end])[:, None]
    for s, e in _jaccard_steps(v, gallery, start, end, max(1, JACCARD_ENTRIES // worker_threads())):
        jaccard = _jaccard_rows(v, gallery, s, e)
        jaccard *= 1.0 - lambda_value
        d[s - start:e - start] += jaccard


def _stack_rows(qf: np.ndarray, gf: np.ndarray, x: np.ndarray, sq: np.ndarray, start: int, end: int) -> None:
    """Rows start..end of ``x`` = [qf; gf] and of their squared norms ``sq``."""
    q_end = min(end, len(qf))
    if start < q_end:
        x[start:q_end] = qf[start:q_end]
    if end > len(qf):
        x[max(start, len(qf)):end] = gf[max(start, len(qf)) - len(qf):end - len(qf)]
    sq[start:end] = np.einsum("ij,ij->i", x[start:end], x[start:end])


def _final_chunk(d, v, gallery, sq, row_max, start: int, lambda_value: float, a: int, b: int) -> None:
    """:func:`_final_rows` for rows a..b of the block ``d`` of queries start.. (a worker thread's share)."""
    _final_rows(d[a:b], v, gallery, sq, row_max, start + a, lambda_value)


def _check_params(k1, k2, lambda_value, block_size) -> None:
    check_positive_int(k1, "k1")
    check_positive_int(k2, "k2")
    if k2 > k1 + 1:
        raise ValueError(f"need k1 >= 1 and 1 <= k2 <= k1 + 1, got k1={k1}, k2={k2}")
    if not 0.0 <= lambda_value <= 1.0:
        raise ValueError(f"lambda_value must be in [0, 1], got {lambda_value}")
    check_block_size(block_size)


def iter_rerank_blocks(query_feats, gallery_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                       block_size: int | None = None, candidate_search: CandidateSearch | None = None,
                       progress: bool | None = False) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, end, distances[end - start, G])``: re-ranked distances (lower = closer) of consecutive
    blocks of queries [Q, D] against the gallery [G, D].

    Memory beyond the features: a copy of them, the candidate lists, the sparse encodings V and one block
    (the default block holds 2^24 distances, 64 MB), so re-ranked evaluation stays O(block x gallery) like
    the plain one. The original distance is the Euclidean distance of the features as given (normalise them
    first for cosine-trained embeddings, as BoT does). ``candidate_search(x [M, D], sq [M], c)`` replaces the
    built-in pass that finds each item's c nearest: it returns ``(squared distances [M, c], indices [M, c],
    largest squared distance per item [M])``, e.g. searched shard by shard
    (:func:`reid_robust.evaluation.sharded.shard_candidates`). ``progress=None`` shows the progress of the
    neighbour pass and of the query blocks (a bar on a terminal, else a log line about every 30 s;
    :mod:`reid_robust.progress`); ``False`` (the default) is silent.
    """
    _check_params(k1, k2, lambda_value, block_size)
    qf = as_feature_matrix(query_feats, "query_feats")
    gf = as_feature_matrix(gallery_feats, "gallery_feats")
    check_same_dim(qf, gf)
    num, num_query = len(qf) + len(gf), len(qf)
    x, sq = np.empty((num, qf.shape[1]), dtype=np.float32), np.empty(num, dtype=np.float32)
    map_row_chunks(lambda start, end: _stack_rows(qf, gf, x, sq, start, end), num, x.shape[1])
    k = min(k1 + 1, num)
    c = min(num, 2 * k + 8)
    if candidate_search is None:
        raw, idx, row_max = _candidates(x, sq, c, block_size or default_block_size(num), progress)
    else:
        raw, idx, row_max = (np.asarray(a) for a in candidate_search(x, sq, c))
    top = _neighbours(raw, idx, row_max, k, x, sq)
    members = _expanded_sets(top, k1)
    v = _encode(members, _member_distances(members, idx, raw, x, sq), row_max)
    k2 = min(k2, k)  # fewer than k2 items in all: expand over all of them
    if k2 != 1:
        expand = sp.csr_matrix((np.full(num * k2, 1.0 / k2, dtype=np.float32),
                                (np.repeat(np.arange(num), k2), top[:, :k2].reshape(-1))), shape=(num, num))
        v = (expand @ v).tocsr()
    gallery_v = v[num_query:].tocsc()
    gallery_t = x[num_query:].T
    query_block = block_size or default_block_size(num - num_query)
    for start in show_progress(range(0, num_query, query_block), desc=f"re-ranking {num_query} queries",
                               unit="block", enabled=progress):
        end = min(start + query_block, num_query)
        d = np.matmul(x[start:end], gallery_t)
        map_row_chunks(partial(_final_chunk, d, v, gallery_v, sq, row_max, start, lambda_value), end - start,
                       gallery_t.shape[1])
        yield start, end, d


def k_reciprocal_rerank(query_feats, gallery_feats, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                        block_size: int | None = None, candidate_search: CandidateSearch | None = None,
                        progress: bool | None = False) -> np.ndarray:
    """Re-ranked distances [Q, G] (lower = closer) from query [Q, D] and gallery [G, D] features, whole
    (for pictures or custom metrics; :func:`iter_rerank_blocks` gives them block by block)."""
    out = None
    for start, end, block in iter_rerank_blocks(query_feats, gallery_feats, k1, k2, lambda_value, block_size,
                                                candidate_search, progress):
        if out is None:
            out = np.empty((len(query_feats), block.shape[1]), dtype=np.float32)
        out[start:end] = block
    assert out is not None  # as_feature_matrix rejects 0 queries, so there was at least one block
    return out
