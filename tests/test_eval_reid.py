"""Tests of reid_robust.evaluation.evaluate_reid against a plain dense reference and hand-worked examples."""

import warnings

import numpy as np
import pytest
import torch

from reid_robust.evaluation import ApproximateSearch, evaluate_reid, evaluate_reid_distances, ranking


def reference_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="cosine", ap_mode="standard", max_rank=50):
    """Dense distances, a stable argsort per query, junk deleted after ranking, AP by a loop."""
    qf, gf = np.asarray(qf, np.float64), np.asarray(gf, np.float64)
    if metric == "cosine":
        qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
        gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
        dist = -qf @ gf.T
    else:
        dist = ((qf[:, None, :] - gf[None, :, :]) ** 2).sum(-1)
    aps, inps, cmcs = [], [], []
    for i in range(len(qf)):
        order = np.argsort(dist[i], kind="stable")
        pids, cams = g_pids[order], g_cams[order]
        junk = (pids == -1) | ((pids == q_pids[i]) & (cams == q_cams[i]))
        match = (pids[~junk] == q_pids[i]) & (q_pids[i] > 0)
        if not match.any():
            continue
        num_good, hits, ap = match.sum(), 0, 0.0
        old_precision, last = 1.0, 0
        for k, is_match in enumerate(match, start=1):
            if is_match:
                hits += 1
                precision = hits / k
                if ap_mode == "standard":
                    ap += precision / num_good
                else:  # MATLAB compute_AP.m: trapezoid between consecutive list positions
                    ap += (old_precision + precision) / 2 / num_good
                last = k
            old_precision = hits / k
        aps.append(ap)
        inps.append(num_good / last)
        first = np.flatnonzero(match)[0]
        cmcs.append((np.arange(max_rank) >= first).astype(float))
    cmc = np.mean(cmcs, axis=0)
    return {"mAP": np.mean(aps), "mINP": np.mean(inps), "cmc": cmc, "rank1": cmc[0], "rank5": cmc[4],
            "rank10": cmc[9], "num_valid_queries": len(aps)}


def random_protocol(seed, metric, num_q=30, num_g=120, num_ids=8, num_cams=3):
    """Features whose scores are exact in float32 (ties are real ties) and ids with every special case."""
    rng = np.random.default_rng(seed)
    if metric == "cosine":  # ±1 entries in 16-d: normalised entries are ±1/4, products exact
        qf = rng.choice([-1.0, 1.0], size=(num_q, 16)) * rng.integers(1, 4, size=(num_q, 1))
        gf = rng.choice([-1.0, 1.0], size=(num_g, 16)) * rng.integers(1, 4, size=(num_g, 1))
        gf[::7] = qf[: len(range(0, num_g, 7))]  # duplicates of queries: exact ties
    else:
        qf = rng.integers(-2, 3, size=(num_q, 4)).astype(np.float64)
        gf = rng.integers(-2, 3, size=(num_g, 4)).astype(np.float64)
    g_pids = rng.integers(-1, num_ids + 1, size=num_g)  # includes -1 junk and 0 distractors
    q_pids = rng.integers(1, num_ids + 3, size=num_q)  # some ids absent from the gallery
    q_pids[:2] = [0, -1]
    g_cams = rng.integers(0, num_cams, size=num_g)
    q_cams = rng.integers(0, num_cams, size=num_q)
    return qf, gf, q_pids, g_pids, q_cams, g_cams


def _evaluate_quietly(*args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return evaluate_reid(*args, **kwargs)


def _assert_same(result, expected):
    for key in ("mAP", "mINP", "rank1", "rank5", "rank10"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key
    np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-6)
    assert result["num_valid_queries"] == expected["num_valid_queries"]


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("ap_mode", ["standard", "official"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("path", ["candidates", "whole_block"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_dense_reference(metric, ap_mode, seed, path, dtype, monkeypatch):
    # both counting paths: the candidates only, and whole sorted rows; float32 input is checked and
    # normalised without a copy of its own, float64 input after the cast
    monkeypatch.setattr(ranking, "DENSE_FRACTION", 1.0 if path == "candidates" else 0.0)
    data = random_protocol(seed, metric)
    data = (data[0].astype(dtype), data[1].astype(dtype), *data[2:])
    inputs = [a.copy() for a in data]
    expected = reference_reid(*data, metric=metric, ap_mode=ap_mode, max_rank=12)
    for block_size in (1, 7, None):
        result = _evaluate_quietly(*data, metric=metric, ap_mode=ap_mode, max_rank=12,
                                   block_size=block_size)
        _assert_same(result, expected)
        assert len(result["cmc"]) == 12
        assert result["num_skipped_queries"] == len(data[0]) - expected["num_valid_queries"]
    for given, kept in zip(data, inputs):  # the gallery has junk: its kept rows are normalised in place
        np.testing.assert_array_equal(given, kept)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_rows_split_over_threads_give_the_same_result(metric, monkeypatch):
    """Norms, normalisation and counting in chunks of rows on 3 threads: bit-equal normalised rows and
    the same per-query results as one thread, equal to the dense reference."""
    from reid_robust.evaluation import search

    rng = np.random.default_rng(8)
    x = (rng.standard_normal((301, 37)) * rng.uniform(0.01, 100, size=(301, 1))).astype(np.float32)
    data = random_protocol(2, metric, num_q=31, num_g=131)
    single = _evaluate_quietly(*data, metric=metric, block_size=9, per_query=True)
    one_thread = search.squared_norms(x), search.l2_normalize(x)
    monkeypatch.setattr(search, "worker_threads", lambda: 3)
    monkeypatch.setattr(search, "MIN_CHUNK_ELEMENTS", 1)
    for expected, got in zip(one_thread, (search.squared_norms(x), search.l2_normalize(x))):
        np.testing.assert_array_equal(got, expected)
    split = _evaluate_quietly(*data, metric=metric, block_size=9, per_query=True)
    for key in ("ap", "inp", "first_rank", "valid"):
        np.testing.assert_array_equal(split["per_query"][key], single["per_query"][key])
    _assert_same(split, reference_reid(*data, metric=metric))


def test_float32_features_without_junk_are_not_modified():
    qf, gf, q_pids, g_pids, q_cams, g_cams = random_protocol(3, "cosine")
    g_pids = np.abs(g_pids)  # no junk: nothing is copied before normalising
    qf, gf = qf.astype(np.float32), gf.astype(np.float32)
    q_copy, g_copy = qf.copy(), gf.copy()
    result = _evaluate_quietly(qf, gf, q_pids, g_pids, q_cams, g_cams)
    np.testing.assert_array_equal(qf, q_copy)
    np.testing.assert_array_equal(gf, g_copy)
    assert result["mAP"] == pytest.approx(reference_reid(qf, gf, q_pids, g_pids, q_cams, g_cams)["mAP"], abs=1e-6)


def _single_query(pattern):
    """1-d euclidean data where the gallery ranks in order, with matches (pid 1, other camera) at ``pattern``."""
    gf = np.arange(1, len(pattern) + 1, dtype=np.float32)[:, None]
    g_pids = np.where(np.array(pattern) == 1, 1, 2)
    return np.zeros((1, 1)), gf, np.array([1]), g_pids, np.array([0]), np.ones(len(pattern), dtype=int)


@pytest.mark.parametrize("pattern, standard, official, minp", [
    ([1, 0, 1], 5 / 6, 19 / 24, 2 / 3),
    ([0, 1, 1], 7 / 12, 5 / 12, 2 / 3),
    ([0, 0, 0, 1], 0.25, 0.125, 0.25),
    ([1, 1], 1.0, 1.0, 1.0),
])
def test_worked_examples_of_methods_12_1(pattern, standard, official, minp):
    data = _single_query(pattern)
    std = evaluate_reid(*data, metric="euclidean", max_rank=4)
    off = evaluate_reid(*data, metric="euclidean", max_rank=4, ap_mode="official")
    assert std["mAP"] == pytest.approx(standard, abs=1e-9)
    assert off["mAP"] == pytest.approx(official, abs=1e-9)
    assert std["mINP"] == pytest.approx(minp, abs=1e-9)
    assert std["rank1"] == float(pattern[0] == 1)


def test_junk_and_same_camera_items_are_deleted_and_distractors_count():
    # ranked list: match(other cam), junk -1, same-cam same-id, distractor 0, match
    qf = np.zeros((1, 1))
    gf = np.arange(1, 6, dtype=np.float32)[:, None]
    g_pids = np.array([1, -1, 1, 0, 1])
    g_cams = np.array([1, 1, 0, 0, 2])
    result = evaluate_reid(qf, gf, [1], g_pids, [0], g_cams, metric="euclidean", per_query=True)
    # junk-free list: [match, distractor, match] -> AP = (1 + 2/3) / 2
    assert result["mAP"] == pytest.approx((1 + 2 / 3) / 2)
    assert result["mINP"] == pytest.approx(2 / 3)


def test_ties_are_broken_by_gallery_index():
    qf = np.zeros((1, 2))
    gf = np.ones((2, 2))  # identical scores
    match_first = evaluate_reid(qf, gf, [1], [1, 2], [0], [1, 1], metric="euclidean")
    match_second = evaluate_reid(qf, gf, [1], [2, 1], [0], [1, 1], metric="euclidean")
    assert match_first["rank1"] == 1.0 and match_first["mAP"] == 1.0
    assert match_second["rank1"] == 0.0 and match_second["mAP"] == 0.5


def test_torch_tensors_and_numpy_give_the_same_result():
    data = random_protocol(3, "euclidean")
    as_torch = [torch.as_tensor(a) for a in data]
    a = _evaluate_quietly(*data, metric="euclidean")
    b = _evaluate_quietly(*as_torch, metric="euclidean")
    assert a == b


def test_distance_matrix_entry_matches_feature_entry():
    qf, gf, q_pids, g_pids, q_cams, g_cams = random_protocol(4, "euclidean")
    dist = ((qf[:, None] - gf[None]) ** 2).sum(-1)
    a = _evaluate_quietly(qf, gf, q_pids, g_pids, q_cams, g_cams, metric="euclidean", max_rank=10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = evaluate_reid_distances(dist, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert a == b


def test_skipped_queries_warn_with_counts_and_no_match_at_all_raises():
    qf, gf = np.eye(3), np.eye(3)
    with pytest.warns(UserWarning, match=r"2 of 3 queries have no true match.*1 with an identity absent.*1 whose"):
        result = evaluate_reid(qf, gf, [1, 2, 9], [1, 2, 3], [0, 0, 0], [1, 0, 1])
    assert result["num_valid_queries"] == 1 and result["num_skipped_queries"] == 2
    with pytest.raises(ValueError, match="no query has a true match"):
        evaluate_reid(qf, gf, [7, 8, 9], [1, 2, 3], [0, 0, 0], [1, 1, 1])


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(gf=d["gf"][:, :3]), "dimensions"),
    (lambda d: d.update(qp=d["qp"][:-1]), "query_pids has 4 entries but the features have 5 rows"),
    (lambda d: d.update(gc=d["gc"][:-1]), "gallery_camids"),
    (lambda d: d.update(gf=d["gf"][:0]), "gallery_feats is empty"),
    (lambda d: d["qf"].__setitem__((2, 1), np.nan), r"query_feats row 2 is not finite \(NaN or infinite; 1 such row"),
    (lambda d: d["gf"].__setitem__((3, 0), np.inf), "gallery_feats row 3 is not finite"),
])
def test_bad_input_is_rejected_with_a_clear_message(change, message):
    rng = np.random.default_rng(0)
    d = {"qf": rng.normal(size=(5, 4)), "gf": rng.normal(size=(9, 4)), "qp": np.arange(1, 6),
         "gp": np.arange(1, 10), "qc": np.zeros(5, int), "gc": np.ones(9, int)}
    change(d)
    with pytest.raises(ValueError, match=message):
        evaluate_reid(d["qf"], d["gf"], d["qp"], d["gp"], d["qc"], d["gc"])


def test_bad_options_are_rejected():
    data = _single_query([1, 0])
    with pytest.raises(ValueError, match="metric"):
        evaluate_reid(*data, metric="manhattan")
    with pytest.raises(ValueError, match="ap_mode"):
        evaluate_reid(*data, ap_mode="matlab")
    with pytest.raises(ValueError, match="max_rank"):
        evaluate_reid(*data, max_rank=0)


def _clustered(seed, num_ids=20, per_id=8, dim=32, num_q=40):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(num_ids, dim))
    g_pids = np.repeat(np.arange(1, num_ids + 1), per_id)
    gf = centers[g_pids - 1] + 0.8 * rng.normal(size=(len(g_pids), dim))
    q_pids = rng.integers(1, num_ids + 1, size=num_q)
    qf = centers[q_pids - 1] + 0.8 * rng.normal(size=(num_q, dim))
    return qf, gf, q_pids, g_pids, np.zeros(num_q, int), rng.integers(1, 4, size=len(g_pids))


def test_approximate_mode_equals_exact_when_it_searches_everything_and_is_close_otherwise():
    data = _clustered(0)
    exact = evaluate_reid(*data)
    full = evaluate_reid(*data, approximate=ApproximateSearch(kind="ivf", nlist=4, nprobe=4, topk=1000))
    assert full["mAP"] == pytest.approx(exact["mAP"], abs=1e-6)
    assert full["mINP"] == pytest.approx(exact["mINP"], abs=1e-6)
    np.testing.assert_allclose(full["cmc"], exact["cmc"], atol=1e-6)
    for approx in (ApproximateSearch(kind="hnsw", topk=60), ApproximateSearch(kind="ivf", nlist=8, nprobe=4)):
        result = evaluate_reid(*data, approximate=approx)
        assert abs(result["mAP"] - exact["mAP"]) < 0.05
        assert abs(result["rank1"] - exact["rank1"]) < 0.05
