"""Tests of reid_robust.evaluation.evaluate_retrieval: scikit-learn neighbours, a loop reference, MAP@R example."""

import warnings

import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from reid_robust.evaluation import evaluate_retrieval, ranking


def reference_retrieval(x, y, ks):
    """Dense squared distances, self removed, stable argsort per item (ties by index)."""
    x = np.asarray(x, np.float64)
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    recalls, maps = {k: [] for k in ks}, []
    for i in range(len(x)):
        others = np.delete(np.arange(len(x)), i)
        order = others[np.argsort(dist[i, others], kind="stable")]
        rel = y[order] == y[i]
        num_rel = rel.sum()
        if num_rel == 0:
            continue
        for k in ks:
            recalls[k].append(rel[:k].any())
        top = rel[:num_rel]
        precision = np.cumsum(top) / np.arange(1, num_rel + 1)
        maps.append((precision * top).sum() / num_rel)
    return {f"recall@{k}": np.mean(v) for k, v in recalls.items()} | {"map_at_r": np.mean(maps)}


def reference_per_item(x, y):
    """First rank and MAP@R of every item (0 and 0.0 for lone items), by the same loop as above."""
    x = np.asarray(x, np.float64)
    dist = ((x[:, None] - x[None]) ** 2).sum(-1)
    first, maps = np.zeros(len(x), dtype=np.int64), np.zeros(len(x))
    for i in range(len(x)):
        others = np.delete(np.arange(len(x)), i)
        rel = y[others[np.argsort(dist[i, others], kind="stable")]] == y[i]
        num_rel = rel.sum()
        if num_rel:
            first[i] = np.flatnonzero(rel)[0] + 1
            maps[i] = (np.cumsum(rel[:num_rel]) / np.arange(1, num_rel + 1) * rel[:num_rel]).sum() / num_rel
    return first, maps


@pytest.mark.parametrize("block_size", [1, 37, None])
@pytest.mark.parametrize("threads", [1, 3])
def test_per_query_first_rank_and_map_at_r_exact_with_the_depth_cut(block_size, threads, monkeypatch):
    """400 items in classes of 4 to 10 with many tied distances: rows are cut at depth max(R, 8), so most
    matches are never counted; first ranks far beyond the cut and MAP@R stay exact (rows over 3 threads)."""
    from reid_robust.evaluation import search

    monkeypatch.setattr(search, "worker_threads", lambda: threads)
    monkeypatch.setattr(search, "MIN_CHUNK_ELEMENTS", 1)
    calls = []
    cut = ranking.depth_candidates
    monkeypatch.setattr(ranking, "depth_candidates", lambda *a: calls.append(cut(*a)) or calls[-1])
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(60), rng.integers(4, 11, size=60))[:400]
    feats = rng.integers(-2, 3, size=(len(labels), 4)).astype(np.float32)  # ties everywhere
    result = evaluate_retrieval(feats, labels, metric="euclidean", compute_nmi=False, per_query=True,
                                block_size=block_size)
    assert any(c[1] is not None for c in calls)  # cuts were made
    first, maps = reference_per_item(feats, labels)
    assert (first > 15).any()
    np.testing.assert_array_equal(result["per_query"]["first_rank"], first)
    np.testing.assert_allclose(result["per_query"]["map_at_r"], maps, rtol=0, atol=1e-12)


def test_recall_at_k_matches_sklearn_nearest_neighbors():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, size=200)
    feats = rng.normal(size=(10, 16))[labels] + 1.5 * rng.normal(size=(200, 16))
    result = evaluate_retrieval(feats, labels, ks=(1, 2, 4, 8, 16), metric="euclidean", compute_nmi=False)
    _, idx = NearestNeighbors(n_neighbors=17).fit(feats).kneighbors(feats)
    assert (idx[:, 0] == np.arange(200)).all()  # continuous data: self first, no ties
    hits = labels[idx[:, 1:]] == labels[:, None]
    for k in (1, 2, 4, 8, 16):
        assert result[f"recall@{k}"] == pytest.approx(hits[:, :k].any(1).mean(), abs=1e-12)
    assert result["precision_at_1"] == result["recall@1"]

    # cosine = euclidean on normalised features
    normed = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    _, idx = NearestNeighbors(n_neighbors=9).fit(normed).kneighbors(normed)
    cosine = evaluate_retrieval(feats, labels, metric="cosine", compute_nmi=False)
    hits = labels[idx[:, 1:]] == labels[:, None]
    for k in (1, 2, 4, 8):
        assert cosine[f"recall@{k}"] == pytest.approx(hits[:, :k].any(1).mean(), abs=1e-12)


@pytest.mark.parametrize("block_size", [1, 5, None])
@pytest.mark.parametrize("path", ["candidates", "whole_block"])
def test_matches_loop_reference_with_ties_and_duplicates(block_size, path, monkeypatch):
    monkeypatch.setattr(ranking, "DENSE_FRACTION", 1.0 if path == "candidates" else 0.0)
    rng = np.random.default_rng(1)
    feats = rng.integers(-1, 2, size=(60, 3)).astype(np.float32)  # many duplicates and tied distances
    labels = rng.integers(0, 6, size=60)
    labels[-1] = 99  # a lone item
    with pytest.warns(UserWarning, match="1 of 60 items"):
        result = evaluate_retrieval(feats, labels, metric="euclidean", compute_nmi=False, block_size=block_size)
    expected = reference_retrieval(feats, labels, (1, 2, 4, 8))
    for key, value in expected.items():
        assert result[key] == pytest.approx(value, abs=1e-6), key
    assert result["num_valid_queries"] == 59 and result["num_lone_queries"] == 1


def test_map_at_r_worked_example():
    # item 0 at the origin, its R = 3 same-label items at distances 1, 3, 5; another label at 2 and 4
    feats = np.array([[0.0], [1.0], [2.0], [3.0], [4.0], [5.0]])
    labels = np.array([0, 0, 1, 0, 1, 0])
    result = evaluate_retrieval(feats, labels, metric="euclidean", compute_nmi=False, per_query=True)
    # top 3 of item 0: [1, 0, 1] -> (1 + 2/3) / 3
    assert result["per_query"]["map_at_r"][0] == pytest.approx((1 + 2 / 3) / 3)
    assert result["per_query"]["first_rank"][0] == 1


def test_nmi_is_one_for_separated_clusters_and_lower_for_random_labels():
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(5), 20)
    feats = 20 * np.eye(8)[labels] + 0.1 * rng.normal(size=(100, 8))
    assert evaluate_retrieval(feats, labels)["nmi"] == pytest.approx(1.0)
    shuffled = rng.permutation(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert evaluate_retrieval(feats, shuffled)["nmi"] < 0.3


def test_bad_input_is_rejected():
    with pytest.raises(ValueError, match="labels has 3 entries but the features have 4 rows"):
        evaluate_retrieval(np.ones((4, 2)), [0, 0, 1])
    with pytest.raises(ValueError, match="NaN"):
        evaluate_retrieval(np.array([[0.0], [np.nan]]), [0, 0])
    with pytest.raises(ValueError, match="no item has another item"):
        evaluate_retrieval(np.eye(3), [0, 1, 2])
    with pytest.raises(ValueError, match="ks"):
        evaluate_retrieval(np.eye(3), [0, 0, 1], ks=(0,))
