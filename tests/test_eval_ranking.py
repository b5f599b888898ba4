"""Tests of reid_robust.evaluation.ranking.match_ranks against a stable-sort loop reference, on ties."""

import numpy as np
import pytest
import torch

from reid_robust.evaluation import ranking


def reference_ranks(scores, members, excluded):
    """Rank list = stable argsort of -score (ties by gallery index), excluded members deleted."""
    ranks, counts = [], []
    for row, mem, exc in zip(scores, members, excluded):
        order = np.argsort(-row.astype(np.float64), kind="stable")
        dropped = set(mem[(mem >= 0) & exc].tolist())
        kept = [g for g in order.tolist() if g not in dropped]
        good = set(mem[(mem >= 0) & ~exc].tolist())
        ranks.append([i + 1 for i, g in enumerate(kept) if g in good])
        counts.append(len(good))
    width = members.shape[1]
    padded = np.zeros((len(scores), width), dtype=np.int64)
    for i, r in enumerate(ranks):
        padded[i, :len(r)] = r
    return padded, np.array(counts)


def tied_block(seed, num_rows=12, num_cols=40, levels=4, max_members=7):
    """Scores from a few levels (many ties among members and with other items, +0.0 and -0.0 alike) and
    random members with random excluded ones; some rows without members."""
    rng = np.random.default_rng(seed)
    values = np.array([-1.5, -0.0, 0.0, 0.25, 2.0, 3.0], dtype=np.float32)[:levels + 2]
    scores = rng.choice(values, size=(num_rows, num_cols)).astype(np.float32)
    members = np.full((num_rows, max_members), -1, dtype=np.int64)
    excluded = np.zeros((num_rows, max_members), dtype=bool)
    for i in range(num_rows):
        count = rng.integers(0, max_members + 1)
        members[i, :count] = np.sort(rng.choice(num_cols, size=count, replace=False))
        excluded[i, :count] = rng.random(count) < 0.3
    return scores, members, excluded


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("path", ["candidates", "sorted_rows"])
@pytest.mark.parametrize("levels", [1, 4])
def test_ranks_equal_stable_sort_reference_on_random_ties(seed, path, levels, monkeypatch):
    monkeypatch.setattr(ranking, "DENSE_FRACTION", 1.0 if path == "candidates" else 0.0)
    scores, members, excluded = tied_block(seed, levels=levels)
    ranks, counts = ranking.match_ranks(scores, members, excluded)
    expected, expected_counts = reference_ranks(scores, members, excluded)
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_array_equal(ranks, expected)


@pytest.mark.parametrize("path", ["candidates", "sorted_rows"])
def test_ranks_without_ties_and_from_torch(path, monkeypatch):
    """Distinct scores, then ties among members only: no row needs the fallback; torch input too."""
    monkeypatch.setattr(ranking, "DENSE_FRACTION", 1.0 if path == "candidates" else 0.0)
    rng = np.random.default_rng(3)
    scores = rng.permutation(np.arange(30 * 200, dtype=np.float32)).reshape(30, 200) / 7
    members = np.sort(np.stack([rng.choice(200, size=9, replace=False) for _ in range(30)]), axis=1)
    excluded = rng.random(members.shape) < 0.25
    ranks, counts = ranking.match_ranks(torch.from_numpy(scores), members, excluded)
    expected, expected_counts = reference_ranks(scores, members, excluded)
    np.testing.assert_array_equal(ranks, expected)
    np.testing.assert_array_equal(counts, expected_counts)
    # ties among members only (no other item shares their score): settled without the per-row fallback
    rows = np.arange(30)
    scores[rows, members[:, 5]] = scores[rows, members[:, 2]]
    scores[rows, members[:, 8]] = scores[rows, members[:, 2]]
    ranks, _ = ranking.match_ranks(scores, members, excluded)
    np.testing.assert_array_equal(ranks, reference_ranks(scores, members, excluded)[0])


def test_a_non_member_tied_with_a_member_is_ordered_by_gallery_index():
    # row 0: item 1 (not a member) ties member 3 and comes first; row 1: member 0 ties item 2 and comes first
    scores = np.array([[0.1, 0.5, 0.2, 0.5, 0.0], [0.7, 0.3, 0.7, 0.9, 0.1]], dtype=np.float32)
    members = np.array([[3, -1], [0, 4]])
    excluded = np.zeros((2, 2), dtype=bool)
    ranks, counts = ranking.match_ranks(scores, members, excluded)
    np.testing.assert_array_equal(ranks, [[2, 0], [2, 5]])
    np.testing.assert_array_equal(counts, [1, 2])
