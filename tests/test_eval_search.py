"""Tests of reid_robust.evaluation.search: block scores, FAISS top-k lists, label validation."""

import numpy as np
import pytest

from reid_robust.evaluation.search import (
    ApproximateSearch,
    as_label_vector,
    build_index,
    iter_score_blocks,
    prepare,
    search_topk,
)


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(23, 6)).astype(np.float32), rng.normal(size=(41, 6)).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_score_blocks_rank_like_the_metric(metric):
    q, g = _data()
    qp, gp = prepare(q, metric), prepare(g, metric)
    blocks = list(iter_score_blocks(qp, gp, metric, block_size=5))
    assert [(s, e) for s, e, _ in blocks][:2] == [(0, 5), (5, 10)] and blocks[-1][1] == 23
    scores = np.concatenate([b for _, _, b in blocks])
    q64, g64 = q.astype(np.float64), g.astype(np.float64)
    if metric == "cosine":
        q64 /= np.linalg.norm(q64, axis=1, keepdims=True)
        g64 /= np.linalg.norm(g64, axis=1, keepdims=True)
        expected = q64 @ g64.T
    else:  # negative squared distance up to a per-row constant ||q||^2
        expected = (q64 ** 2).sum(1, keepdims=True) - ((q64[:, None] - g64[None]) ** 2).sum(-1)
    np.testing.assert_allclose(scores, expected, atol=1e-4)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_flat_index_top_k_is_the_exact_ranking(metric):
    q, g = _data(1)
    qp, gp = prepare(q, metric), prepare(g, metric)
    scores, idx = search_topk(build_index(gp, metric), qp, 7, metric, block_size=4)
    dense = np.concatenate([b for _, _, b in iter_score_blocks(qp, gp, metric)])
    expected = np.argsort(-dense, axis=1, kind="stable")[:, :7]
    np.testing.assert_array_equal(idx, expected)
    # same convention as the block scores (euclidean: -squared distance, so shifted by ||q||^2)
    shift = (qp.astype(np.float64) ** 2).sum(1, keepdims=True) if metric == "euclidean" else 0.0
    np.testing.assert_allclose(scores, np.take_along_axis(dense, idx, 1) - shift, atol=1e-4)


def test_approximate_settings_are_validated():
    with pytest.raises(ValueError, match="kind"):
        ApproximateSearch(kind="lsh")
    with pytest.raises(ValueError, match="nprobe"):
        ApproximateSearch(nprobe=0)


def test_label_vectors_must_be_integral_and_of_the_right_length():
    assert as_label_vector(np.array([1.0, 2.0]), "pids", 2).dtype == np.int64
    with pytest.raises(ValueError, match="must hold integers"):
        as_label_vector(np.array([1.5, 2.0]), "pids", 2)
    with pytest.raises(ValueError, match="pids has 2 entries but the features have 3 rows"):
        as_label_vector([1, 2], "pids", 3)
    with pytest.raises(ValueError, match="1-D"):
        as_label_vector(np.zeros((2, 2)), "pids", 2)
