"""Exact ranks of the true matches of each query, counted against the few match scores of its row.

A query's rank list is its gallery sorted by score, best first, ties broken by gallery index (the lower
index ranks first); excluded items (junk) are then deleted from the list. Every metric of both protocols
(AP, INP, CMC, Recall@K, MAP@R) depends only on the 1-based ranks of the true matches in that list, and the
rank of a match ``m`` is ``1 + #{items ranked before m} - #{excluded items ranked before m}``. The first
count only involves the items scoring at least the row's lowest match (binary searches among them); the
second only involves the query's own "members" (its matches and its excluded same-identity items).

Leave-one-out retrieval needs less: Recall@K and MAP@R only use the ranks up to ``depth = max(R, max K)``
(R = the row's number of matches) and the first match's rank. A row is then cut at a score that at least
``depth + #excluded`` of its items reach (:func:`depth_candidates`, from maxima of column groups): a match
below it has that many items above it, so it ranks beyond the depth and is not counted (reported as -1).
Only the ~depth items above the cut are sorted; a row whose first match lies below it gets that match's
exact rank from one more count against it (:func:`_first_ranks`). Rows are counted in chunks on
:func:`~reid_robust.evaluation.search.worker_threads` threads.

"Members" of a query are the gallery items that share its label; each member is either a true match or
excluded (Market-1501: same camera; leave-one-out retrieval: the query itself). Items with other labels are
negatives. Label -1 junk that applies to every query is removed from the gallery before scoring.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .search import map_row_chunks

DENSE_FRACTION = 0.125  # above this share of candidates in a block, sort whole rows instead of gathering them
MIN_CUT_GROUP, MAX_CUT_GROUP = 4, 32  # columns per group of depth_candidates (fewer: no cut; more: looser)
GATHER_COST = 10  # a gathered score costs about as much as this many scores of a pass over the block
Candidates = tuple[np.ndarray, np.ndarray]  # (values [C] float32, rows [C] int64) of the scores counted


@dataclass
class MemberGroups:
    """For each query, where its members sit in ``order`` (gallery indices sorted by label, stable)."""

    order: np.ndarray  # [G] gallery indices sorted by label; within a label ascending index
    start: np.ndarray  # [Q] first position of the query's label in ``order``
    count: np.ndarray  # [Q] number of members (0: label absent or the query is not eligible)

    def block(self, start: int, end: int) -> np.ndarray:
        """Members of queries ``start:end`` as a padded [B, P] int64 array of gallery indices (-1 = pad)."""
        count = self.count[start:end]
        width = int(count.max()) if count.size else 0
        offsets = np.arange(width)
        present = offsets[None, :] < count[:, None]
        positions = np.where(present, self.start[start:end, None] + offsets[None, :], 0)
        members = np.where(present, self.order[positions] if self.order.size else 0, -1)
        return members.astype(np.int64)


def group_members(query_labels: np.ndarray, gallery_labels: np.ndarray,
                  eligible: np.ndarray | None = None) -> MemberGroups:
    """Index the gallery by label; ``eligible`` [Q] bool marks queries that may have matches at all."""
    order = np.argsort(gallery_labels, kind="stable")
    labels, first, counts = np.unique(gallery_labels[order], return_index=True, return_counts=True)
    if labels.size == 0:
        zeros = np.zeros(len(query_labels), dtype=np.int64)
        return MemberGroups(order, zeros, zeros)
    pos = np.clip(np.searchsorted(labels, query_labels), 0, labels.size - 1)
    found = labels[pos] == query_labels
    if eligible is not None:
        found &= eligible
    return MemberGroups(order, first[pos].astype(np.int64), np.where(found, counts[pos], 0).astype(np.int64))


def _sortable_keys(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """uint64 keys ordered as (row, value): the row in the high 32 bits, the float32 value mapped to an
    order-preserving uint32 below it (negative floats have all bits flipped, others the sign bit set).
    Exact: equal keys mean the same row and equal values (-0.0 is first made +0.0)."""
    bits = (values.astype(np.float32) + np.float32(0.0)).view(np.uint32)
    key = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000))
    return (rows.astype(np.uint64) << np.uint64(32)) | key.astype(np.uint64)


def _count_among_candidates(values: np.ndarray, rows: np.ndarray,
                            thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many scores of each row are strictly above / equal to each of its thresholds [B, P], counting
    only the candidates ``values`` [C] of rows ``rows`` [C] (every score at least the row's lowest threshold
    must be one): their (row, score) keys are sorted once and each threshold is found by two binary searches."""
    num_rows = len(thresholds)
    keys = np.sort(_sortable_keys(values, rows))
    row_end = np.bincount(rows, minlength=num_rows).cumsum()
    wanted = _sortable_keys(thresholds, np.arange(num_rows)[:, None])
    at_most = np.searchsorted(keys, wanted, side="right")
    below = np.searchsorted(keys, wanted, side="left")
    return row_end[:, None] - at_most, at_most - below


def _count_in_sorted_rows(scores: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The same counts as :func:`_count_among_candidates` over whole rows: each row is sorted (numpy's
    vectorised sort) and its thresholds found by binary search."""
    ascending = np.sort(scores, axis=1)
    at_most = np.empty(thresholds.shape, dtype=np.int64)
    below = np.empty(thresholds.shape, dtype=np.int64)
    for row, (values, wanted) in enumerate(zip(ascending, thresholds)):
        at_most[row] = np.searchsorted(values, wanted, side="right")
        below[row] = np.searchsorted(values, wanted, side="left")
    return scores.shape[1] - at_most, at_most - below


def _tie_groups(thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For thresholds in rank order [B, P] (descending): each one's offset within its run of equal values,
    and that run's length ([B, P] int64 each)."""
    width = thresholds.shape[1]
    pos = np.broadcast_to(np.arange(width), thresholds.shape)
    changes = thresholds[:, 1:] != thresholds[:, :-1]
    starts_run = np.concatenate([np.ones((len(thresholds), 1), bool), changes], axis=1)
    ends_run = np.concatenate([changes, np.ones((len(thresholds), 1), bool)], axis=1)
    first = np.maximum.accumulate(np.where(starts_run, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends_run, pos, width - 1)[:, ::-1], axis=1)[:, ::-1]
    return pos - first, last - first + 1


def _positions_in_rank_list(scores: np.ndarray, members: np.ndarray) -> np.ndarray:
    """0-based positions of ``members`` [R, P] in their rows' rank lists (score descending, ties by index),
    by a stable sort of each row [R, G]: the exact fallback for rows where other items tie a member."""
    order = np.argsort(-scores, axis=1, kind="stable")
    position = np.empty_like(order)
    np.put_along_axis(position, order, np.arange(scores.shape[1])[None, :], axis=1)
    return np.take_along_axis(position, np.maximum(members, 0), axis=1)


def _rank_order(thresholds: np.ndarray) -> np.ndarray:
    """Order [B, P] of each row's members in its rank list, given their scores [B, P] in ascending gallery
    index: score descending, ties by position (-inf padding last). One sort of unique uint64 keys
    (descending-score key, then position), faster than a stable argsort of the scores."""
    bits = (np.float32(0.0) - thresholds).view(np.uint32)  # 0 - x: -0.0 and +0.0 both become +0.0
    key = np.where(bits & np.uint32(0x80000000), ~bits, bits | np.uint32(0x80000000)).astype(np.uint64)
    keys = np.sort((key << np.uint64(32)) | np.arange(thresholds.shape[1], dtype=np.uint64), axis=1)
    return (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)


def match_ranks(scores, members: np.ndarray, excluded: np.ndarray,
                depth: np.ndarray | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the true matches of a block of queries.

    Args:
        scores: [B, G] float32 (numpy or torch), higher = closer; must be finite.
        members: [B, P] int64 gallery indices of each row's members, ascending, -1 = padding.
        excluded: [B, P] bool, members deleted from the rank list (junk); the rest are true matches.
        depth: None (every rank exact), or [B] (or one) positive int: only the ranks up to a row's depth and
            the rank of its first match must be exact (Recall@K and MAP@R; see :func:`depth_candidates`).
    Returns:
        ranks [B, P] int64: 1-based ranks of the true matches in the junk-free list, ascending, 0 = padding;
        with ``depth``, a match ranked beyond the depth may be -1 instead (after the exact ranks; never the
        first match); num_matches [B] int64.
    Cost: one pass over the block finds the candidates, the items scoring at least the row's cut-off: its
    lowest member (only they can rank before a member), or with ``depth`` the cut-off of
    :func:`depth_candidates` when that is higher. When they are at most ``DENSE_FRACTION`` of the block (a
    useful embedding: a few dozen per row), only they are gathered and sorted, keyed by row; otherwise every
    row is sorted (numpy's vectorised sort). Two binary searches per member at or above the cut-off then
    give the items strictly above it and those tied with it; members tied with members are ordered by
    gallery index. A row where another item ties a member's score (rare with real features) is settled
    exactly by a stable sort of that row. Rows are split into chunks counted on
    :func:`~reid_robust.evaluation.search.worker_threads` threads.
    """
    scores = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    members = members.numpy() if isinstance(members, torch.Tensor) else np.asarray(members)
    excluded = (excluded.numpy() if isinstance(excluded, torch.Tensor) else np.asarray(excluded)).astype(bool)
    num_rows, width = members.shape
    if width == 0:
        return np.zeros((num_rows, 0), dtype=np.int64), np.zeros(num_rows, dtype=np.int64)
    depths = maxima = None
    if depth is not None:
        depths = np.broadcast_to(np.asarray(depth, dtype=np.int64), (num_rows,))
        maxima = group_maxima(scores, depths + (excluded & (members >= 0)).sum(axis=1))
    parts = map_row_chunks(lambda start, end: _rank_rows(
        scores[start:end], members[start:end], excluded[start:end], None if depths is None else depths[start:end],
        None if maxima is None else maxima.rows(start, end)), num_rows, scores.shape[1])
    if len(parts) == 1:
        return parts[0]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _candidates_above(scores: np.ndarray, cut: np.ndarray, may_be_dense: bool = True) -> Candidates | None:
    """The scores of each row at least its ``cut`` [B] as ``(values, rows)``, by one pass over the block;
    None when they are more than ``DENSE_FRACTION`` of it (then whole rows are sorted instead; checked only
    if they ``may_be_dense``)."""
    is_candidate = scores >= cut[:, None]
    if may_be_dense and np.count_nonzero(is_candidate) > DENSE_FRACTION * scores.size:
        return None
    flat = np.flatnonzero(is_candidate)
    return scores.reshape(-1)[flat], flat // scores.shape[1]


@dataclass
class GroupMaxima:
    """Maxima of interleaved column groups of a score block (see :func:`depth_candidates`)."""

    values: np.ndarray  # [B, groups] float32: values[r, j] = max of scores[r, j::groups] (first groups * width columns)
    width: int  # columns per group

    def rows(self, start: int, end: int) -> GroupMaxima:
        return GroupMaxima(self.values[start:end], self.width)


def group_maxima(scores: np.ndarray, count: np.ndarray) -> GroupMaxima | None:
    """Maxima of the ``w`` interleaved column groups of ``scores`` [B, G] (column j in group j mod (G // w)),
    with ``w`` as large as leaves 8 groups per needed item (``count`` [B]), at most ``MAX_CUT_GROUP``; None when
    that is under ``MIN_CUT_GROUP`` (no cut). One reduction over the block on torch's threads (about 3x
    numpy's on the 2-core VM: numpy's max over a middle axis is not vectorised)."""
    need = int(count.max()) if count.size else 0
    width = min(MAX_CUT_GROUP, scores.shape[1] // max(1, 8 * need))
    if need < 1 or width < MIN_CUT_GROUP:
        return None
    groups = scores.shape[1] // width
    if not scores.flags.writeable:  # torch reads only writable arrays in place
        return GroupMaxima(scores[:, : groups * width].reshape(len(scores), width, groups).max(axis=1), width)
    view = torch.from_numpy(scores)[:, : groups * width].view(len(scores), width, groups)
    return GroupMaxima(view.amax(dim=1).numpy(), width)


def depth_candidates(scores: np.ndarray, count: np.ndarray, lowest: np.ndarray,
                     maxima: GroupMaxima | None = None) -> tuple[np.ndarray, Candidates | None]:
    """A cut-off per row of ``scores`` [B, G] that at least ``count`` [B] of its scores reach, raised to
    ``lowest`` [B] where that is higher, and the scores at least the cut-off as ``(values, rows)`` (None: find
    them by :func:`_candidates_above`). Returns ``(lowest, None)`` when no cut is made (:func:`group_maxima`
    is None). ``maxima``: the block's :func:`group_maxima` if already taken.

    The columns are split into ``w`` interleaved groups: the count-th largest of the group maxima is the
    cut-off (each of the count groups whose maximum reaches it holds a score reaching it). With at least 8
    groups per needed item it lies near the count-th largest score: about ``count`` candidates a row, for one
    reduction over the block and a sort of the maxima. The candidates are gathered from the groups whose
    maximum reaches the cut-off (plus the ``G mod w`` leftover columns) when those groups hold under a
    ``GATHER_COST``-th of the block, else found by a pass over it.
    """
    maxima = maxima or group_maxima(scores, count)
    if maxima is None:
        return lowest, None
    num_rows, num_cols = scores.shape
    width, groups = maxima.width, maxima.values.shape[1]
    ordered = np.sort(maxima.values, axis=1)
    count_th = ordered[np.arange(num_rows), groups - np.maximum(count, 1)]
    cut = np.maximum(count_th, lowest)
    # at least `count` groups of a row reach its cut unless `lowest` raised it: a pass when even that is dense
    if np.where(count_th >= lowest, count, 0).sum() * width * GATHER_COST > scores.size:
        return cut, _candidates_above(scores, cut, may_be_dense=False)
    rows, group = np.nonzero(maxima.values >= cut[:, None])
    if rows.size * width * GATHER_COST > scores.size:  # at most (count + ties) * w <= G / 8 a row: not dense
        return cut, _candidates_above(scores, cut, may_be_dense=False)
    values = scores.reshape(-1).take((rows * num_cols + group)[:, None] + groups * np.arange(width)[None, :])
    keep = values >= cut[rows][:, None]
    tail_rows, tail_cols = np.nonzero(scores[:, groups * width:] >= cut[:, None])
    return cut, (np.concatenate([values[keep], scores[tail_rows, tail_cols + groups * width]]),
                 np.concatenate([np.broadcast_to(rows[:, None], keep.shape)[keep], tail_rows]))


def _rank_rows(scores: np.ndarray, members: np.ndarray, excluded: np.ndarray, depth: np.ndarray | None,
               maxima: GroupMaxima | None = None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`match_ranks` on one chunk of rows (numpy arrays, scores contiguous float32); ``maxima``: the
    rows' :func:`group_maxima` (with ``depth``; None: no cut)."""
    width = members.shape[1]
    valid = members >= 0
    thresholds = np.where(valid, np.take_along_axis(scores, np.maximum(members, 0), axis=1), -np.inf)
    thresholds = thresholds.astype(np.float32)
    order = _rank_order(thresholds)
    thresholds, members, excluded, valid = (np.take_along_axis(a, order, axis=1)
                                            for a in (thresholds, members, excluded, valid))
    cut = np.where(valid, thresholds, np.inf).min(axis=1).astype(np.float32)  # the lowest member
    junk = (excluded & valid).astype(np.int64)
    candidates = None
    if maxima is not None:
        cut, candidates = depth_candidates(scores, depth + junk.sum(axis=1), cut, maxima)
    if candidates is None:
        candidates = _candidates_above(scores, cut)
    exact = valid & (thresholds >= cut[:, None])  # members whose rank is counted; the rest rank beyond depth
    before = _items_before(scores, thresholds, members, exact, cut, candidates)

    junk_before = junk.cumsum(axis=1) - junk
    good = valid & ~excluded
    beyond = np.iinfo(np.int64).max - 1
    ranks = np.where(good, np.where(exact, before - junk_before + 1, beyond), np.iinfo(np.int64).max)
    ranks.sort(axis=1)
    num_matches = good.sum(axis=1)
    ranks[ranks == beyond] = -1
    ranks[np.arange(width)[None, :] >= num_matches[:, None]] = 0
    missing = np.flatnonzero(ranks[:, 0] == -1)  # the first match lies below the depth cut-off
    if missing.size:
        ranks[missing, 0] = _first_ranks(scores[missing], members[missing], excluded[missing], valid[missing])
    return ranks, num_matches


def _items_before(scores: np.ndarray, thresholds: np.ndarray, members: np.ndarray, exact: np.ndarray,
                  cut: np.ndarray, candidates: Candidates | None) -> np.ndarray:
    """Items ranked before each member in rank order [B, P], exact where ``exact`` (members at or above the
    row's ``cut``): counted among the ``candidates`` (the scores at least the cut), or in sorted rows."""
    if candidates is None:
        above, equal = _count_in_sorted_rows(scores, thresholds)
    else:  # counts of members below the cut are wrong and unused
        above, equal = _count_among_candidates(*candidates, thresholds)
    offset, run = _tie_groups(thresholds)
    before = above + offset  # items strictly above, then the members tied with it and earlier in the gallery
    others_tied = (exact & (equal > run)).any(axis=1)  # a non-member shares a member's score
    if others_tied.any():
        rows = np.flatnonzero(others_tied)
        before[rows] = _positions_in_rank_list(scores[rows], members[rows])
    return before


def _first_ranks(scores: np.ndarray, members: np.ndarray, excluded: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Exact rank of each row's first true match [R], members given in rank order [R, P]: counted as in
    :func:`match_ranks` against that match and the excluded members ranked before it (no others matter)."""
    width = members.shape[1]
    first = np.argmax(valid & ~excluded, axis=1)
    keep = valid & (np.arange(width)[None, :] <= first[:, None])
    by_index = np.argsort(np.where(keep, members, np.iinfo(np.int64).max), axis=1, kind="stable")
    keep = np.take_along_axis(keep, by_index, axis=1)
    kept = np.where(keep, np.take_along_axis(members, by_index, axis=1), -1)
    ranks, _ = _rank_rows(scores, kept, np.take_along_axis(excluded, by_index, axis=1) & keep, None)
    return ranks[:, 0]
