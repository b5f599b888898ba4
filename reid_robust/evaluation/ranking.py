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


def _count_before_candidates(scores, thresholds, members, rows, cols, include_greater: bool) -> torch.Tensor:
    """Add up, per (row, member), the listed items ranked before the member.

    ``rows, cols`` list items of ``scores``; item (i, k) is before member m of row i when
    ``s[i,k] > t[i,m]`` (only when ``include_greater``) or ``s[i,k] == t[i,m]`` and ``k < index(m)``.
    """
    counts = torch.zeros(thresholds.shape, dtype=torch.int64)
    if rows.numel() == 0 or thresholds.shape[1] == 0:
        return counts
    step = max(1, CHUNK_ELEMENTS // thresholds.shape[1])
    for lo in range(0, rows.numel(), step):
        r, c = rows[lo:lo + step], cols[lo:lo + step]
        v = scores[r, c].unsqueeze(1)
        t = thresholds[r]
        before = (v == t) & (c.unsqueeze(1) < members[r])
        if include_greater:
            before |= v > t
        counts.index_add_(0, r, before.to(torch.int64))
    return counts


def _count_before_dense(scores, thresholds, members) -> torch.Tensor:
    """Same counts over every item of the block, by bucketing each score among the row's thresholds."""
    num_rows, width = thresholds.shape
    ascending = thresholds.flip(1)  # thresholds arrive sorted best first
    bucket = torch.searchsorted(ascending, scores, out_int32=True)  # #{thresholds strictly below the score}
    offsets = (torch.arange(num_rows, dtype=torch.int32) * (width + 1)).unsqueeze(1)
    hist = torch.bincount((bucket + offsets).view(-1), minlength=num_rows * (width + 1)).view(num_rows, width + 1)
    # items strictly above the a-th ascending threshold are those in buckets a+1 .. width
    suffix = hist.flip(1).cumsum(1).flip(1)
    greater = suffix[:, 1:].flip(1)
    nearest = ascending.gather(1, bucket.clamp(max=width - 1).long())
    rows, cols = (scores == nearest).nonzero(as_tuple=True)
    return greater + _count_before_candidates(scores, thresholds, members, rows, cols, include_greater=False)


def match_ranks(scores: torch.Tensor, members: torch.Tensor, excluded: torch.Tensor,
                method: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """Ranks of the true matches of a block of queries.

    Args:
        scores: [B, G] float32, higher = closer; must be finite.
        members: [B, P] int64 gallery indices of each row's members, ascending, -1 = padding.
        excluded: [B, P] bool, members deleted from the rank list (junk); the rest are true matches.
        method: ``"candidates"`` compares only items scoring at least the row's lowest member;
            ``"dense"`` buckets every item; ``"auto"`` picks the cheaper. Results are identical.
    Returns:
        ranks [B, P] int64: 1-based ranks of the true matches in the junk-free list, ascending, 0 = padding;
        num_matches [B] int64.
    """
    num_rows, width = members.shape
    if width == 0:
        return torch.zeros((num_rows, 0), dtype=torch.int64), torch.zeros(num_rows, dtype=torch.int64)
    valid = members >= 0
    thresholds = scores.gather(1, members.clamp(min=0))
    thresholds = thresholds.masked_fill(~valid, float("-inf"))
    # members in rank order: score descending, ties by gallery index (members arrive ascending); pads last
    thresholds, perm = torch.sort(thresholds, dim=1, descending=True, stable=True)
    members, excluded, valid = members.gather(1, perm), excluded.gather(1, perm), valid.gather(1, perm)

    lowest = thresholds.masked_fill(~valid, float("inf")).min(dim=1).values
    candidates = scores >= lowest.unsqueeze(1)
    if method == "auto":
        num_candidates = int(candidates.sum())
        method = "candidates" if num_candidates * width <= 4 * scores.numel() else "dense"
    if method == "candidates":
        rows, cols = candidates.nonzero(as_tuple=True)
        before = _count_before_candidates(scores, thresholds, members, rows, cols, include_greater=True)
    elif method == "dense":
        before = _count_before_dense(scores, thresholds, members)
    else:
        raise ValueError(f"method must be 'auto', 'candidates' or 'dense', got {method!r}")

    junk = excluded & valid
    junk_before = junk.cumsum(1) - junk.long()
    good = valid & ~excluded
    ranks = torch.where(good, before - junk_before + 1, torch.full_like(before, torch.iinfo(torch.int64).max))
    ranks = ranks.sort(dim=1).values
    num_matches = good.sum(1)
    ranks = ranks.masked_fill(torch.arange(width).unsqueeze(0) >= num_matches.unsqueeze(1), 0)
    return ranks, num_matches
