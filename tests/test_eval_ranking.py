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


def assert_exact_up_to_depth(ranks, counts, expected, expected_counts, depth):
    """Ranks up to each row's depth and every first rank equal the reference; the others exact or -1."""
    np.testing.assert_array_equal(counts, expected_counts)
    np.testing.assert_array_equal(ranks[:, 0], expected[:, 0])
    np.testing.assert_array_equal(ranks == 0, expected == 0)
    within = (expected > 0) & (expected <= depth[:, None])
    np.testing.assert_array_equal(ranks[within], expected[within])
    beyond = ranks == -1
    assert (expected[beyond] > np.broadcast_to(depth[:, None], ranks.shape)[beyond]).all()
    np.testing.assert_array_equal(ranks[ranks > 0], expected[ranks > 0])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gather_cost", [0, 10**9])  # candidates gathered from the groups / by a pass
@pytest.mark.parametrize("levels", [1, 4, 200])  # heavy ties (at the cut-off too), then nearly none
def test_depth_ranks_equal_reference_up_to_depth_and_first_rank(seed, gather_cost, levels, monkeypatch):
    monkeypatch.setattr(ranking, "MIN_CUT_GROUP", 1)  # cut even 40-column rows
    monkeypatch.setattr(ranking, "GATHER_COST", gather_cost)
    rng = np.random.default_rng(seed)
    scores, members, excluded = tied_block(seed, num_rows=30, num_cols=97, levels=min(levels, 4), max_members=6)
    if levels > 4:
        scores = rng.permutation(np.arange(scores.size, dtype=np.float32)).reshape(scores.shape)
    depth = rng.integers(1, 4, size=len(scores))
    cut, _ = ranking.depth_candidates(scores, depth + excluded.sum(1), np.full(len(scores), -np.inf, np.float32))
    assert np.isfinite(cut).all()  # the cut is made
    ranks, counts = ranking.match_ranks(scores, members, excluded, depth=depth)
    expected, expected_counts = reference_ranks(scores, members, excluded)
    assert (expected[:, 0] > depth).any() and (ranks == -1).any()  # first ranks beyond the depth were settled
    assert_exact_up_to_depth(ranks, counts, expected, expected_counts, depth)


def test_depth_cut_reaches_count_and_no_item_is_lost():
    """The cut-off of each row is reached by at least ``count`` scores, and the candidates are exactly the
    scores at least the cut-off (gathered from the groups or by a pass)."""
    rng = np.random.default_rng(7)
    scores = rng.choice(np.linspace(-1, 1, 50, dtype=np.float32), size=(25, 1003))  # ties at every level
    count = rng.integers(1, 4, size=25)
    lowest = np.full(25, -np.inf, np.float32)
    lowest[::3] = 0.9  # a higher lowest member raises the cut-off
    for gather_cost in (0, 10**9):
        ranking.GATHER_COST, saved = gather_cost, ranking.GATHER_COST
        try:
            cut, (values, rows) = ranking.depth_candidates(scores, count, lowest)
        finally:
            ranking.GATHER_COST = saved
        reach = scores >= cut[:, None]
        assert (reach.sum(1) >= count).all() and (cut >= lowest).all()
        assert (cut[1::3] > -1).all()  # a cut was made
        np.testing.assert_array_equal(np.bincount(rows, minlength=25), reach.sum(1))
        np.testing.assert_array_equal(np.sort(values), np.sort(scores[reach]))


def test_depth_first_match_far_beyond_the_depth_and_single_matches():
    """R = 1 rows, a first match ranked last, an excluded member above the cut-off, ties with it."""
    rng = np.random.default_rng(4)
    scores = rng.permutation(np.arange(12 * 400, dtype=np.float32)).reshape(12, 400) / 400
    members = np.full((12, 3), -1)
    excluded = np.zeros((12, 3), dtype=bool)
    for row in range(12):
        order = np.argsort(-scores[row], kind="stable")
        picks = [order[0], order[399 - row]] if row % 2 else [order[399 - row]]  # excluded best, one match low
        members[row, :len(picks)] = np.sort(picks)
        excluded[row, :len(picks)] = np.isin(np.sort(picks), order[0]) if row % 2 else False
    scores[3, members[3, 0]] = scores[3, 5] if members[3, 0] != 5 else scores[3, 6]  # the match ties an item
    ranks, counts = ranking.match_ranks(scores, members, excluded, depth=1)
    expected, expected_counts = reference_ranks(scores, members, excluded)
    assert (expected[:, 0] > 300).any()
    assert_exact_up_to_depth(ranks, counts, expected, expected_counts, np.ones(12, dtype=np.int64))


def test_depth_cut_counts_the_excluded_members_above_it():
    """Excluded item first, matches second and third: with depth 2 both matches (ranks 1, 2) are exact, so
    the cut-off must leave 3 items (depth + 1 excluded) above it; the three sit in different column groups."""
    scores = np.linspace(0, 1, 400, dtype=np.float32)[::-1].copy()[None, :]  # column 0 highest
    members, excluded = np.array([[0, 1, 2, 300]]), np.array([[True, False, False, False]])
    ranks, counts = ranking.match_ranks(scores, members, excluded, depth=2)
    np.testing.assert_array_equal(ranks, [[1, 2, -1, 0]])  # the match at 300 lies below the cut-off
    np.testing.assert_array_equal(counts, [3])


@pytest.mark.parametrize("num_rows", [1, 7, 13])
@pytest.mark.parametrize("with_depth", [False, True])
def test_rows_split_over_threads_give_the_same_ranks(num_rows, with_depth, monkeypatch):
    """Chunks of rows counted on 3 threads (odd row counts, a single row) equal the reference."""
    from reid_robust.evaluation import search

    monkeypatch.setattr(search, "MIN_CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(search, "worker_threads", lambda: 3)
    monkeypatch.setattr(ranking, "MIN_CUT_GROUP", 1)
    scores, members, excluded = tied_block(num_rows, num_rows=num_rows, num_cols=120, levels=4)
    depth = np.arange(num_rows) % 3 + 1
    ranks, counts = ranking.match_ranks(scores, members, excluded, depth=depth if with_depth else None)
    expected, expected_counts = reference_ranks(scores, members, excluded)
    if with_depth:
        assert_exact_up_to_depth(ranks, counts, expected, expected_counts, depth)
    else:
        np.testing.assert_array_equal(ranks, expected)
        np.testing.assert_array_equal(counts, expected_counts)


def test_map_row_chunks_covers_every_row_once_in_order(monkeypatch):
    from reid_robust.evaluation import search

    monkeypatch.setattr(search, "worker_threads", lambda: 3)
    monkeypatch.setattr(search, "MIN_CHUNK_ELEMENTS", 10)
    assert search.map_row_chunks(lambda s, e: (s, e), 7, row_size=5) == [(0, 2), (2, 4), (4, 7)]  # >= 2 rows each
    assert search.map_row_chunks(lambda s, e: (s, e), 7, row_size=4) == [(0, 3), (3, 7)]  # >= 3 rows each
    assert search.map_row_chunks(lambda s, e: (s, e), 10, row_size=10) == [(0, 3), (3, 6), (6, 10)]
    assert search.map_row_chunks(lambda s, e: (s, e), 0, row_size=10) == [(0, 0)]
