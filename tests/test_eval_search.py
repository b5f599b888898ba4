"""Tests of reid_robust.evaluation.search: block scores, FAISS top-k lists, label validation."""

import warnings

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


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_both_product_backends_give_the_same_metrics(metric, monkeypatch):
    """REID_ROBUST_PRODUCT picks torch (MKL) or numpy (OpenBLAS) for the score products: the scores agree to
    float32 rounding and the metrics of both protocols are the same; read-only inputs take numpy's path."""
    from reid_robust.evaluation import evaluate_reid, evaluate_retrieval
    from reid_robust.evaluation.search import block_product, product_backend

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(13, 16)).astype(np.float32)
    pids = np.repeat(np.arange(1, 13), 8)
    feats = centres[pids] + 0.8 * rng.normal(size=(len(pids), 16)).astype(np.float32)
    cams = np.arange(len(pids)) % 3
    results = {}
    for backend in ("torch", "numpy"):
        monkeypatch.setenv("REID_ROBUST_PRODUCT", backend)
        assert product_backend() == backend
        reid = evaluate_reid(feats[::2], feats[1::2], pids[::2], pids[1::2], cams[::2], cams[1::2] + 1,
                             metric=metric)
        results[backend] = (reid, evaluate_retrieval(feats, pids, metric=metric, compute_nmi=False))
    for a, b in zip(results["torch"], results["numpy"]):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], abs=1e-9, nan_ok=True), key
    monkeypatch.setenv("REID_ROBUST_PRODUCT", "torch")
    frozen = feats.copy()
    frozen.flags.writeable = False
    swapped = feats.astype(feats.dtype.newbyteorder()).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy on a read-only array would warn
        for gallery, query, out_dtype in ((frozen, frozen[:4], np.float32), (feats, swapped[:4], np.float32),
                                          (feats.astype(np.float64), feats[:4].astype(np.float64), np.float64),
                                          (feats, np.asfortranarray(feats[:4]), np.float32)):
            out = np.empty((4, len(feats)), out_dtype)
            np.testing.assert_allclose(block_product(gallery)(query, out), feats[:4] @ feats.T, rtol=1e-5, atol=1e-4)
        float64 = list(iter_score_blocks(feats.astype(np.float64), feats.astype(np.float64), "cosine", 40))
        assert all(block.dtype == np.float64 for *_, block in float64)


