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

COMPARE_BUDGET = 2  # vectorised comparisons allowed per score of the block (else per-row binary search)
CHUNK_ELEMENTS = 1 << 22  # candidate x member comparisons held at once


@dataclass
class MemberGroups:
    """For each query, where its members sit in ``order`` (gallery indices sorted by label, stable)."""

    order: np.ndarray  # [G] gallery indices sorted by label; within a label ascending index
    start: np.ndarray  # [Q] first position of the query's label in ``order``
    count: np.ndarray  # [Q] number of members (0: label absent or the query is not eligible)

    def block(self, start: int, end: int) -> torch.Tensor:
        """Members of queries ``start:end`` as a padded [B, P] int64 tensor of gallery indices (-1 = pad)."""
        count = self.count[start:end]
        width = int(count.max()) if count.size else 0
        offsets = np.arange(width)
        present = offsets[None, :] < count[:, None]
        positions = np.where(present, self.start[start:end, None] + offsets[None, :], 0)
        members = np.where(present, self.order[positions] if self.order.size else 0, -1)
        return torch.from_numpy(members.astype(np.int64))


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


def _ranks_of_row(candidates: np.ndarray, values: np.ndarray, thresholds: np.ndarray, members: np.ndarray,
                  excluded: np.ndarray) -> np.ndarray:
    """Junk-free 1-based ranks (ascending) of the true matches of one query row.

    ``candidates`` [C] gallery indices scoring at least the lowest member, ``values`` [C] their scores;
    ``thresholds`` [P] the members' scores, ``members`` [P] their gallery indices (ascending), ``excluded``
    [P] bool. Items scoring below every member cannot rank before any member, so they are not needed.
    """
    order = np.lexsort((members, -thresholds))  # rank order of the members: score desc, then index
    members, excluded, thresholds = members[order], excluded[order], thresholds[order]
    ascending = thresholds[::-1]
    below = np.searchsorted(ascending, values, side="left")  # thresholds strictly below each value
    hist = np.bincount(below, minlength=thresholds.size + 1)
    # items strictly above the a-th ascending threshold have ``below`` >= a + 1
    greater_ascending = hist[::-1].cumsum()[::-1][1:]
    before = greater_ascending[::-1].copy()
    # equal to some member's score (the members themselves included): the first threshold >= the value
    tied = np.flatnonzero(values == ascending[np.minimum(below, thresholds.size - 1)])
    if tied.size:
        equal = values[tied, None] == thresholds[None, :]
        earlier = candidates[tied, None] < members[None, :]
        before += (equal & earlier).sum(0)
    junk = excluded.astype(np.int64)
    junk_before = np.cumsum(junk) - junk
    return (before - junk_before + 1)[~excluded]


def _ranks_by_comparison(rows, cols, values, thresholds, members, excluded, valid):
    """Vectorised over the block: each candidate is compared with every member of its row."""
    num_rows, width = members.shape
    # rank order of the members: score descending, ties by gallery index (members arrive ascending)
    thresholds, perm = torch.sort(thresholds, dim=1, descending=True, stable=True)
    members, excluded, valid = members.gather(1, perm), excluded.gather(1, perm), valid.gather(1, perm)
    before = torch.zeros((num_rows, width), dtype=torch.int64)
    step = max(1, CHUNK_ELEMENTS // width)
    for lo in range(0, rows.numel(), step):
        r, c, v = rows[lo:lo + step], cols[lo:lo + step], values[lo:lo + step].unsqueeze(1)
        t = thresholds[r]
        earlier = (v > t) | ((v == t) & (c.unsqueeze(1) < members[r]))
        before.index_add_(0, r, earlier.to(torch.int64))
    junk = excluded & valid
    junk_before = junk.cumsum(1) - junk.to(torch.int64)
    good = valid & ~excluded
    ranks = torch.where(good, before - junk_before + 1, torch.full_like(before, torch.iinfo(torch.int64).max))
    ranks = ranks.sort(dim=1).values
    num_matches = good.sum(1)
    ranks = ranks.masked_fill(torch.arange(width).unsqueeze(0) >= num_matches.unsqueeze(1), 0)
    return ranks, num_matches


def match_ranks(scores, members: torch.Tensor, excluded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of the true matches of a block of queries.

    Args:
        scores: [B, G] float32 (torch or numpy), higher = closer; must be finite.
        members: [B, P] int64 gallery indices of each row's members, ascending, -1 = padding.
        excluded: [B, P] bool, members deleted from the rank list (junk); the rest are true matches.
    Returns:
        ranks [B, P] int64: 1-based ranks of the true matches in the junk-free list, ascending, 0 = padding;
        num_matches [B] int64.
    Cost: one pass over the block to find, per row, the items scoring at least the row's lowest member
    (the candidates: few for a good embedding); then either every candidate is compared with the P members
    of its row, vectorised over the block (when candidates x P <= COMPARE_BUDGET x block size), or, for
    many candidates, a binary search per candidate, row by row: O(candidates x log P). No row is sorted.
    """
    scores = scores if isinstance(scores, torch.Tensor) else torch.from_numpy(np.asarray(scores))
    num_rows, width = members.shape
    if width == 0:
        return torch.zeros((num_rows, 0), dtype=torch.int64), torch.zeros(num_rows, dtype=torch.int64)
    valid = members >= 0
    thresholds = scores.gather(1, members.clamp(min=0)).masked_fill(~valid, float("-inf"))
    lowest = thresholds.masked_fill(~valid, float("inf")).min(dim=1).values
    rows, cols = (scores >= lowest.unsqueeze(1)).nonzero(as_tuple=True)  # row-major: grouped by row
    values = scores[rows, cols]
    if rows.numel() * width <= COMPARE_BUDGET * scores.numel():
        return _ranks_by_comparison(rows, cols, values, thresholds, members, excluded, valid)

    ranks = np.zeros((num_rows, width), dtype=np.int64)
    num_matches = np.zeros(num_rows, dtype=np.int64)
    values, cols = values.numpy(), cols.numpy()
    bounds = np.searchsorted(rows.numpy(), np.arange(num_rows + 1))
    members_np, excluded_np, valid_np = members.numpy(), excluded.numpy().astype(bool), valid.numpy()
    thresholds_np = thresholds.numpy()
    for i in np.flatnonzero(valid_np.any(axis=1)):
        v = valid_np[i]
        lo, hi = bounds[i], bounds[i + 1]
        row_ranks = _ranks_of_row(cols[lo:hi], values[lo:hi], thresholds_np[i][v], members_np[i][v],
                                  excluded_np[i][v])
        ranks[i, :row_ranks.size] = row_ranks
        num_matches[i] = row_ranks.size
    return torch.from_numpy(ranks), torch.from_numpy(num_matches)
