"""Tests of k-reciprocal re-ranking against a dense transcription of the reference algorithm."""

import numpy as np
import pytest

from reid_robust.evaluation import evaluate_reid, evaluate_reid_distances
from reid_robust.evaluation.rerank import iter_rerank_blocks, k_reciprocal_rerank


def reference_rerank(qf, gf, k1, k2, lambda_value):
    """Dense loop version of zhunzhong07/person-re-ranking (stable argsort, float32 like the original)."""
    x = np.concatenate([qf, gf]).astype(np.float64)
    original = ((x[:, None] - x[None]) ** 2).sum(-1).astype(np.float32)  # squared once
    original = original / original.max(axis=1, keepdims=True)
    num, num_query = len(x), len(qf)
    initial_rank = np.argsort(original, axis=1, kind="stable")
    V = np.zeros_like(original)
    half = int(np.around(k1 / 2.0))
    for i in range(num):
        forward = initial_rank[i, : k1 + 1]
        backward = initial_rank[forward, : k1 + 1]
        recip = forward[np.where(backward == i)[0]]
        expansion = recip
        for candidate in recip:
            c_forward = initial_rank[candidate, : half + 1]
            c_backward = initial_rank[c_forward, : half + 1]
            c_recip = c_forward[np.where(c_backward == candidate)[0]]
            if len(np.intersect1d(c_recip, recip)) > 2.0 / 3 * len(c_recip):
                expansion = np.append(expansion, c_recip)
        expansion = np.unique(expansion)
        weight = np.exp(-original[i, expansion])
        V[i, expansion] = weight / weight.sum()
    if k2 != 1:
        V = np.stack([V[initial_rank[i, :k2]].mean(axis=0) for i in range(num)])
    jaccard = np.zeros((num_query, num), dtype=np.float32)
    for i in range(num_query):
        m = np.minimum(V[i][None, :], V).sum(axis=1)
        jaccard[i] = 1 - m / (2.0 - m)
    final = jaccard * (1 - lambda_value) + original[:num_query] * lambda_value
    return final[:, num_query:]


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
