"""Tests of k-reciprocal re-ranking against a plain loop version of the published algorithm."""

import numpy as np
import pytest

from reid_robust.evaluation import evaluate_reid, evaluate_reid_distances
from reid_robust.evaluation.rerank import iter_rerank_blocks, k_reciprocal_rerank


def _ranking(row, tie_order):
    """Item indices sorted by distance; equal distances by index (ascending, or descending if asked)."""
    order = np.arange(len(row)) if tie_order == "index" else np.arange(len(row))[::-1]
    return order[np.argsort(row[order], kind="stable")]


def _k_reciprocal(ranking, p, k):
    """R(p, k) of the paper (eq. 2-3): items of p's k+1 nearest (p included) whose own k+1 nearest hold p."""
    return [g for g in ranking[p][: k + 1] if p in ranking[g][: k + 1]]


def reference_rerank(qf, gf, k1, k2, lambda_value, tie_order="index"):
    """Plain loop version of Zhong et al., CVPR 2017 (float64), with the official code's conventions:
    squared Euclidean distance divided by each row's maximum, round(k1/2) by np.around, expansion when more
    than 2/3 of R(q, k1/2) lies in R(p, k1), query expansion over the k2 nearest, d* of eq. 14."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    num, num_query = len(x), len(qf)
    dist = np.array([[float(np.sum((x[i] - x[j]) ** 2)) for j in range(num)] for i in range(num)])
    dist /= dist.max(axis=1, keepdims=True)
    ranking = [_ranking(dist[i], tie_order) for i in range(num)]
    half = int(np.around(k1 / 2.0))
    v = np.zeros((num, num))
    for p in range(num):
        base = _k_reciprocal(ranking, p, k1)
        expanded = set(base)
        for q in base:
            candidate = _k_reciprocal(ranking, q, half)
            if len(set(candidate) & set(base)) > 2.0 / 3.0 * len(candidate):
                expanded |= set(candidate)
        for g in expanded:  # eq. 7
            v[p, g] = np.exp(-dist[p, g])
        v[p] /= max(v[p].sum(), 1e-300)  # an empty set (p not among its own nearest) stays empty
    if k2 != 1:  # local query expansion, eq. 13
        v = np.array([np.mean([v[g] for g in ranking[p][:k2]], axis=0) for p in range(num)])
    final = np.empty((num_query, num - num_query))
    for i in range(num_query):
        for j in range(num_query, num):
            shared = sum(min(v[i, t], v[j, t]) for t in range(num))  # eq. 11-12
            jaccard = 1.0 - shared / (2.0 - shared)
            final[i, j - num_query] = (1 - lambda_value) * jaccard + lambda_value * dist[i, j]
    return final


@pytest.mark.parametrize("k1, k2, lambda_value", [(20, 6, 0.3), (6, 3, 0.5), (4, 1, 0.0)])
def test_matches_dense_reference_on_tiny_data(k1, k2, lambda_value):
    rng = np.random.default_rng(k1)
    centres = rng.integers(-3, 4, size=(6, 5))
    qf = (centres[rng.integers(0, 6, 12)] + rng.integers(-1, 2, size=(12, 5))).astype(np.float32)
    gf = (centres[rng.integers(0, 6, 40)] + rng.integers(-1, 2, size=(40, 5))).astype(np.float32)
    expected = reference_rerank(qf, gf, k1, k2, lambda_value)
    for block_size in (5, None):
        result = k_reciprocal_rerank(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value, block_size=block_size)
        assert result.shape == (12, 40)
        np.testing.assert_allclose(result, expected, atol=1e-5)


@pytest.mark.parametrize("k1, k2, lambda_value, block_size", [(20, 6, 0.3, 16), (7, 3, 0.5, 5), (4, 1, 0.2, None)])
def test_matches_the_published_algorithm_on_continuous_features(k1, k2, lambda_value, block_size):
    """Random continuous features (no ties), more items than each row's candidate list and several row
    blocks: the half-matrix pass with transposed blocks and candidate merges gives the loop's result."""
    rng = np.random.default_rng(k1)
    centres = rng.normal(size=(8, 6))
    qf = (centres[rng.integers(0, 8, 20)] + 0.7 * rng.normal(size=(20, 6))).astype(np.float32)
    gf = (centres[rng.integers(0, 8, 130)] + 0.7 * rng.normal(size=(130, 6))).astype(np.float32)
    expected = reference_rerank(qf, gf, k1, k2, lambda_value)
    result = k_reciprocal_rerank(qf, gf, k1=k1, k2=k2, lambda_value=lambda_value, block_size=block_size)
    np.testing.assert_allclose(result, expected, atol=2e-6)


def test_ties_go_to_the_earlier_item_and_decide_the_result():
    """Exact ties in the initial ranking (duplicated images) are broken by item index, queries first, as a
    stable sort orders them. The order matters: broken the other way, the same data re-rank differently
    (by up to ~0.36 here). This is why torchreid's re_ranking, whose np.argsort (quicksort) orders ties
    arbitrarily, and ours can differ on inputs with ties (exact, or made by float32 rounding of distances
    computed differently): one swapped neighbour at the k1 + 1 or k2 boundary changes R(p, k1) and V_p."""
    rng = np.random.default_rng(0)
    centres = rng.integers(-3, 4, size=(5, 4))  # integer offsets: many items at equal distances
    qf = (centres[rng.integers(0, 5, 10)] + rng.integers(-1, 2, size=(10, 4))).astype(np.float32)
    gf = (centres[rng.integers(0, 5, 50)] + rng.integers(-1, 2, size=(50, 4))).astype(np.float32)
    ours = k_reciprocal_rerank(qf, gf, k1=5, k2=3, lambda_value=0.3, block_size=7)
    np.testing.assert_allclose(ours, reference_rerank(qf, gf, 5, 3, 0.3), atol=2e-6)
    reversed_ties = reference_rerank(qf, gf, 5, 3, 0.3, tie_order="reverse")
    assert np.abs(ours - reversed_ties).max() > 0.1


def test_ties_beyond_the_candidate_lists_are_resolved_exactly():
    """40 copies of one point tie far past each row's candidate list (2 (k1 + 1) + 8 = 20 items): those rows
    are ranked again from their full distance row, still by (distance, index)."""
    rng = np.random.default_rng(11)
    gf = np.concatenate([np.zeros((40, 3)), rng.normal(size=(30, 3))]).astype(np.float32)
    qf = np.concatenate([np.zeros((3, 3)), rng.normal(size=(5, 3))]).astype(np.float32)
    result = k_reciprocal_rerank(qf, gf, k1=5, k2=2, lambda_value=0.3, block_size=9)
    np.testing.assert_allclose(result, reference_rerank(qf, gf, 5, 2, 0.3), atol=2e-6)


def test_reranking_helps_on_clustered_data_and_feeds_the_distance_evaluator():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(15, 16))
    g_pids = np.repeat(np.arange(1, 16), 6)
    q_pids = np.arange(1, 16)
    gf = centres[g_pids - 1] + 0.9 * rng.normal(size=(len(g_pids), 16))
    qf = centres[q_pids - 1] + 0.9 * rng.normal(size=(15, 16))
    q_cams, g_cams = np.zeros(15, int), np.ones(len(g_pids), int)
    base = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="euclidean")
    dist = k_reciprocal_rerank(qf, gf)
    reranked = evaluate_reid_distances(dist, q_pids, g_pids, q_cams, g_cams)
    assert reranked["mAP"] > base["mAP"]
    assert evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="euclidean", rerank=True) == reranked


def test_bad_parameters_are_rejected():
    x = np.zeros((3, 2))
    with pytest.raises(ValueError, match="k2"):
        k_reciprocal_rerank(x, x, k1=3, k2=5)
    with pytest.raises(ValueError, match="lambda_value"):
        k_reciprocal_rerank(x, x, lambda_value=2.0)
    with pytest.raises(ValueError, match="dimensions"):
        k_reciprocal_rerank(x, np.zeros((3, 3)))


def test_fewer_items_than_k2_expand_over_all_of_them():
    rng = np.random.default_rng(3)
    qf = rng.integers(-2, 3, size=(2, 4)).astype(np.float32)
    gf = rng.integers(-2, 3, size=(3, 4)).astype(np.float32)  # 5 items in all, k2 = 6
    result = k_reciprocal_rerank(qf, gf, k1=20, k2=6, lambda_value=0.3)
    np.testing.assert_allclose(result, reference_rerank(qf, gf, 20, 6, 0.3), atol=1e-5)


def test_blocks_are_the_rows_of_the_whole_matrix_and_feed_the_evaluator():
    rng = np.random.default_rng(5)
    centres = rng.integers(-3, 4, size=(5, 6))
    q_pids, g_pids = rng.integers(1, 6, 11), rng.integers(1, 6, 37)
    qf = (centres[q_pids - 1] + rng.integers(-1, 2, size=(11, 6))).astype(np.float32)
    gf = (centres[g_pids - 1] + rng.integers(-1, 2, size=(37, 6))).astype(np.float32)
    q_cams, g_cams = np.zeros(11, int), np.ones(37, int)
    whole = k_reciprocal_rerank(qf, gf, block_size=4)
    blocks = list(iter_rerank_blocks(qf, gf, block_size=4))
    assert [(s, e) for s, e, _ in blocks] == [(0, 4), (4, 8), (8, 11)]  # one query block at a time
    np.testing.assert_array_equal(np.concatenate([b for _, _, b in blocks]), whole)
    np.testing.assert_allclose(whole, reference_rerank(qf, gf, 20, 6, 0.3), atol=1e-5)
    expected = evaluate_reid_distances(whole, q_pids, g_pids, q_cams, g_cams)
    for block_size in (3, None):
        got = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="euclidean", rerank=True,
                            block_size=block_size)
        assert got["mAP"] == pytest.approx(expected["mAP"], abs=1e-12) and got["cmc"] == expected["cmc"]


@pytest.mark.parametrize("block_size", [17, 7, None])
def test_work_split_over_threads_equals_one_thread_bit_for_bit(monkeypatch, block_size):
    """The row-wise work split into chunks over worker threads (3 threads, chunks of a few rows, so chunk
    edges fall inside odd-sized blocks and one chunk holds the last queries and the first gallery items)
    gives the one-thread result exactly, and the loop's result."""
    from reid_robust.evaluation import search

    rng = np.random.default_rng(2)
    centres = rng.normal(size=(8, 6))
    qf = (centres[rng.integers(0, 8, 61)] + 0.7 * rng.normal(size=(61, 6))).astype(np.float32)
    gf = (centres[rng.integers(0, 8, 97)] + 0.7 * rng.normal(size=(97, 6))).astype(np.float32)
    monkeypatch.setattr(search, "worker_threads", lambda: 1)
    one = k_reciprocal_rerank(qf, gf, k1=7, k2=3, lambda_value=0.3, block_size=block_size)
    monkeypatch.setattr(search, "worker_threads", lambda: 3)
    monkeypatch.setattr(search, "MIN_CHUNK_ELEMENTS", 1)
    split = k_reciprocal_rerank(qf, gf, k1=7, k2=3, lambda_value=0.3, block_size=block_size)
    np.testing.assert_array_equal(split, one)
    np.testing.assert_allclose(split, reference_rerank(qf, gf, 7, 3, 0.3), atol=2e-6)
