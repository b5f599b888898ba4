"""Exact ranks of the true matches of each query without sorting the gallery.

A query's rank list is its gallery sorted by score, best first, ties broken by gallery index (the lower
index ranks first); excluded items (junk) are then deleted from the list. Every metric of both protocols
(AP, INP, CMC, Recall@K, MAP@R) depends only on the 1-based ranks of the true matches in that list, and the
rank of a match ``m`` is ``1 + #{items ranked before m} - #{excluded items ranked before m}``. The first
count is taken against the few match scores of the row (a count, not a sort of the row); the second only
involves the query's own "members" (its matches and its excluded same-identity items).

"Members" of a query are the gallery items that share its label; each member is either a true match or
excluded (Market-1501: same camera; leave-one-out retrieval: the query itself). Items with other labels are
negatives. Label -1 junk that applies to every query is removed from the gallery before scoring.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

DENSE_FRACTION = 0.125  # above this share of candidates in a block, bucket the whole block instead


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


def match_ranks(scores, members: np.ndarray, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ranks of the true matches of a block of queries.

    Args:
        scores: [B, G] float32 (numpy or torch), higher = closer; must be finite.
        members: [B, P] int64 gallery indices of each row's members, ascending, -1 = padding.
        excluded: [B, P] bool, members deleted from the rank list (junk); the rest are true matches.
    Returns:
        ranks [B, P] int64: 1-based ranks of the true matches in the junk-free list, ascending, 0 = padding;
        num_matches [B] int64.
    Cost: one pass over the block to find, per row, the items scoring at least the row's lowest member
    (the candidates: a few dozen per row for a useful embedding); then one binary search per candidate
    among all rows' member scores, keyed by (row, score): O(candidates x log(B P)); when candidates are
    more than ``DENSE_FRACTION`` of the block, every score is bucketed among its own row's member scores
    instead (O(B G log P)). Members' equal scores are then settled by gallery index. No row is sorted.
    """
    scores = scores.numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores)
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

    # candidates: only items scoring at least the lowest member can rank before a member
    is_candidate = scores >= lowest[:, None]
    ascending = thresholds[:, ::-1].copy()  # padding thresholds (-inf) first
    if np.count_nonzero(is_candidate) <= DENSE_FRACTION * scores.size:
        rows, cols = np.nonzero(is_candidate)
        values = scores[rows, cols]
        # one binary search per candidate among all rows' thresholds, keyed by (row, score)
        ascending_keys = _sortable_keys(ascending, np.arange(num_rows)[:, None]).reshape(-1)
        keys = _sortable_keys(values, rows)
        position = np.searchsorted(ascending_keys, keys, side="left")
        bucket = position - rows * width  # thresholds of the row strictly below the value
        flat = rows * (width + 1) + bucket
        tied = np.flatnonzero(ascending_keys[np.minimum(position, ascending_keys.size - 1)] == keys)
    else:  # most of the block: bucket every score, row by row against its own thresholds (torch, batched)
        dense = scores if min(scores.strides) >= 0 and scores.flags.c_contiguous else scores.copy()
        bucket = torch.searchsorted(torch.from_numpy(ascending), torch.from_numpy(dense)).numpy()
        flat = (bucket + (np.arange(num_rows) * (width + 1))[:, None]).reshape(-1)
        nearest = np.take_along_axis(ascending, np.minimum(bucket, width - 1), axis=1)
        rows, cols = np.nonzero(scores == nearest)
        values = scores[rows, cols]
        tied = np.arange(rows.size)
    hist = np.bincount(flat, minlength=num_rows * (width + 1)).reshape(num_rows, width + 1)
    # values strictly above the a-th ascending threshold fall in buckets a+1 .. width; back to rank order
    before = hist[:, ::-1].cumsum(axis=1)[:, ::-1][:, 1:][:, ::-1].copy()
    # equal scores (the members themselves included) are settled by gallery index
    if tied.size:
        r = rows[tied]
        earlier = (values[tied, None] == thresholds[r]) & (cols[tied, None] < members[r])
        starts = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        before[r[starts]] += np.add.reduceat(earlier.astype(np.int64), starts, axis=0)

    junk = (excluded & valid).astype(np.int64)
    junk_before = junk.cumsum(axis=1) - junk
    good = valid & ~excluded
    ranks = np.where(good, before - junk_before + 1, np.iinfo(np.int64).max)
    ranks.sort(axis=1)
    num_matches = good.sum(axis=1)
    ranks[np.arange(width)[None, :] >= num_matches[:, None]] = 0
    return ranks, num_matches
