"""Exact ranks of the true matches of each query, counted against the few match scores of its row.

A query's rank list is its gallery sorted by score, best first, ties broken by gallery index (the lower
index ranks first); excluded items (junk) are then deleted from the list. Every metric of both protocols
(AP, INP, CMC, Recall@K, MAP@R) depends only on the 1-based ranks of the true matches in that list, and the
rank of a match ``m`` is ``1 + #{items ranked before m} - #{excluded items ranked before m}``. The first
count only involves the items scoring at least the row's lowest match (binary searches among them); the
second only involves the query's own "members" (its matches and its excluded same-identity items).

"Members" of a query are the gallery items that share its label; each member is either a true match or
excluded (Market-1501: same camera; leave-one-out retrieval: the query itself). Items with other labels are
negatives. Label -1 junk that applies to every query is removed from the gallery before scoring.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DENSE_FRACTION = 0.125  # above this share of candidates in a block, sort whole rows instead of gathering them


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


def _count_among_candidates(scores: np.ndarray, is_candidate: np.ndarray,
                            thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """How many scores of each row are strictly above / equal to each of its thresholds [B, P], counting
    only the candidates (every score at least the row's lowest threshold must be one): their (row, score)
    keys are sorted once and each threshold is found by two binary searches."""
    num_rows, num_cols = scores.shape
    flat = np.flatnonzero(is_candidate)
    rows = flat // num_cols
    keys = np.sort(_sortable_keys(scores.reshape(-1)[flat], rows))
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


def match_ranks(scores, members: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the true matches of a block of queries.

    Args:
        scores: [B, G] float32 (numpy or torch), higher = closer; must be finite.
        members: [B, P] int64 gallery indices of each row's members, ascending, -1 = padding.
        excluded: [B, P] bool, members deleted from the rank list (junk); the rest are true matches.
    Returns:
        ranks [B, P] int64: 1-based ranks of the true matches in the junk-free list, ascending, 0 = padding;
        num_matches [B] int64.
    Cost: one pass over the block finds the candidates, the items scoring at least the row's lowest member
    (only they can rank before a member). When they are at most ``DENSE_FRACTION`` of the block (a useful
    embedding: a few dozen per row), only they are gathered and sorted, keyed by row; otherwise every row
    is sorted (numpy's vectorised sort). Two binary searches per member then give the items strictly above it and
    those tied with it; members tied with members are ordered by gallery index. A row where another item
    ties a member's score (rare with real features) is settled exactly by a stable sort of that row.
    """
    scores = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    members = members.numpy() if isinstance(members, torch.Tensor) else np.asarray(members)
    excluded = excluded.numpy() if isinstance(excluded, torch.Tensor) else np.asarray(excluded)
    num_rows, width = members.shape
    if width == 0:
        return np.zeros((num_rows, 0), dtype=np.int64), np.zeros(num_rows, dtype=np.int64)
    valid = members >= 0
    thresholds = np.where(valid, np.take_along_axis(scores, np.maximum(members, 0), axis=1), -np.inf)
    thresholds = thresholds.astype(np.float32)
    # rank order of the members: score descending, ties by gallery index (members arrive ascending); pads last
    order = np.argsort(-thresholds, axis=1, kind="stable")
    thresholds, members, excluded, valid = (np.take_along_axis(a, order, axis=1)
                                            for a in (thresholds, members, excluded.astype(bool), valid))
    lowest = np.where(valid, thresholds, np.inf).min(axis=1).astype(np.float32)

    is_candidate = scores >= lowest[:, None]
    if np.count_nonzero(is_candidate) <= DENSE_FRACTION * scores.size:
        above, equal = _count_among_candidates(scores, is_candidate, thresholds)
    else:
        above, equal = _count_in_sorted_rows(scores, thresholds)
    offset, run = _tie_groups(thresholds)
    before = above + offset  # items strictly above, then the members tied with it and earlier in the gallery
    others_tied = (valid & (equal > run)).any(axis=1)  # a non-member shares a member's score
    if others_tied.any():
        rows = np.flatnonzero(others_tied)
        before[rows] = _positions_in_rank_list(scores[rows], members[rows])

    junk = (excluded & valid).astype(np.int64)
    junk_before = junk.cumsum(axis=1) - junk
    good = valid & ~excluded
    ranks = np.where(good, before - junk_before + 1, np.iinfo(np.int64).max)
    ranks.sort(axis=1)
    num_matches = good.sum(axis=1)
    ranks[np.arange(width)[None, :] >= num_matches[:, None]] = 0
    return ranks, num_matches
