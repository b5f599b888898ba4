"""Tests of reid_robust.evaluation.blocks: score blocks multiplied and counted on several threads, and the
symmetric product of leave-one-out retrieval."""

import threading
import time
import warnings

import numpy as np
import pytest
import torch

from reid_robust.evaluation import blocks, search
from reid_robust.evaluation.search import iter_score_blocks, prepare


def _feats(seed=0, num=41, dim=6):
    return np.random.default_rng(seed).normal(size=(num, dim)).astype(np.float32)


def _collect(run, *args, **kwargs) -> dict:
    """{(start, end): copy of the scores} from a run_* call, and which threads did the work."""
    seen, lock = {}, threading.Lock()

    def work(start, end, scores):
        with lock:
            assert (start, end) not in seen
            seen[(start, end)] = (scores.copy(), threading.get_ident(), torch.get_num_threads())
        time.sleep(0.01)  # let the other threads take blocks too
    run(*args, work, **kwargs)
    return seen


@pytest.fixture
def three_threads(monkeypatch):
    monkeypatch.setattr(search, "worker_threads", lambda: 3)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("backend", ["torch", "numpy"])
@pytest.mark.parametrize("overlap", [True, False])
def test_threaded_blocks_equal_the_sequential_blocks(metric, backend, overlap, three_threads, monkeypatch):
    """Blocks of 5 queries on 3 threads (single-threaded products) cover every query once and equal
    iter_score_blocks; torch's thread count is 1 inside and restored after. Above OVERLAP_MAX_DIM the blocks
    come one after another on the calling thread, with its thread count."""
    monkeypatch.setenv("REID_ROBUST_PRODUCT", backend)
    monkeypatch.setattr(blocks, "OVERLAP_MAX_DIM", 6 if overlap else 5)
    query, gallery = prepare(_feats(1, 23), metric), prepare(_feats(2), metric)
    threads_before = torch.get_num_threads()
    seen = _collect(blocks.run_score_blocks, query, gallery, metric, block_size=5)
    assert torch.get_num_threads() == threads_before
    expected = {(s, e): b.copy() for s, e, b in iter_score_blocks(query, gallery, metric, block_size=5)}
    assert seen.keys() == expected.keys()
    for key, (scores, _, threads_inside) in seen.items():
        np.testing.assert_allclose(scores, expected[key], rtol=1e-6, atol=1e-6)
        assert threads_inside == (1 if overlap else threads_before)
    idents = {ident for _, ident, _ in seen.values()}
    assert len(idents) > 1 if overlap else idents == {threading.get_ident()}


@pytest.mark.parametrize("scale", [1.0, 1e-25, 1e17])
def test_raw_cosine_scores_rank_as_normalised_ones(scale, monkeypatch):
    """evaluate_reid's exact cosine path scores raw features divided by the gallery norms when every norm is
    in SCALABLE_NORMS, else normalised copies: both give the same per-query results, on features of any
    scale (tiny and huge norms take the normalised path) and with exact duplicates in the gallery. At
    1e-25 raw products underflow float32 (1e-50): scoring them raw would lose the ranking."""
    from reid_robust.evaluation import evaluate_reid

    rng = np.random.default_rng(6)
    centres = rng.normal(size=(10, 8))
    pids = np.repeat(np.arange(1, 11), 12)
    feats = ((centres[pids - 1] + 0.7 * rng.normal(size=(len(pids), 8))) * scale).astype(np.float32)
    feats[1::12] = feats[0::12]  # duplicates tie
    cams = np.arange(len(pids)) % 4
    q, g = np.arange(len(pids)) % 3 == 0, np.arange(len(pids)) % 3 != 0
    squared = (feats.astype(np.float64) ** 2).sum(1)
    assert search.scalable_norms(squared) == (scale == 1.0)  # the default range: raw scores only at scale 1
    results = []
    for scalable in (search.SCALABLE_NORMS, (1.0, 1.0)):  # (1, 1): always normalised copies
        monkeypatch.setattr(search, "SCALABLE_NORMS", scalable)
        results.append(evaluate_reid(feats[q], feats[g], pids[q], pids[g], cams[q], cams[g] + 1, per_query=True))
    for key in ("ap", "inp", "first_rank"):
        np.testing.assert_array_equal(results[0]["per_query"][key], results[1]["per_query"][key])
    reference = evaluate_reid(feats[q].astype(np.float64) / scale, feats[g].astype(np.float64) / scale,
                              pids[q], pids[g], cams[q], cams[g] + 1)
    assert results[0]["mAP"] == pytest.approx(reference["mAP"], abs=1e-6)
    if scale == 1e-25:  # the guard matters: forced raw scoring of these norms ranks wrongly
        monkeypatch.setattr(search, "SCALABLE_NORMS", (0.0, np.inf))
        forced = evaluate_reid(feats[q], feats[g], pids[q], pids[g], cams[q], cams[g] + 1)
        assert abs(forced["mAP"] - reference["mAP"]) > 0.01


def test_an_error_in_a_worker_is_raised_and_the_threads_stop(three_threads):
    """Block 2 of 12 fails: the other two threads finish the block they hold and take no more (without the
    stop, all 11 others would run), the error reaches the caller, no worker is left, the count is restored."""
    query = prepare(_feats(3, 60), "cosine")
    done = []

    def work(start, end, scores):
        if start == 10:
            raise RuntimeError("boom in block 10")
        time.sleep(0.05)
        done.append(start)
    threads_before, alive_before = torch.get_num_threads(), threading.active_count()
    with pytest.raises(RuntimeError, match="boom in block 10"):
        blocks.run_score_blocks(query, query, "cosine", work, block_size=5)
    assert torch.get_num_threads() == threads_before
    assert len(done) <= 4, done
    assert threading.active_count() == alive_before


def test_numpy_products_inside_the_workers_use_one_blas_thread(three_threads, monkeypatch):
    """A read-only gallery takes numpy's product even with torch's backend: its BLAS is limited to one
    thread inside the workers too (no threads x BLAS threads oversubscription)."""
    from threadpoolctl import threadpool_info

    monkeypatch.setenv("REID_ROBUST_PRODUCT", "torch")
    x = prepare(_feats(7, 30), "cosine")
    frozen = x.copy()
    frozen.flags.writeable = False
    blas_threads = []

    def work(start, end, scores):
        blas_threads.extend(info["num_threads"] for info in threadpool_info()  # numpy's own OpenBLAS
                            if info["internal_api"] == "openblas" and "numpy" in info["filepath"])
    blocks.run_score_blocks(x, frozen, "cosine", work, block_size=5)
    assert blas_threads and set(blas_threads) == {1}


def test_default_blocks_are_even_and_a_multiple_of_the_threads():
    """Market-1501 scale on 2 threads: 4 blocks of 842 queries, not 3 of 1,054 and one of 206."""
    rows = blocks.block_rows(3368, 15913, 2)
    assert rows == 842 and -(-3368 // rows) % 2 == 0
    assert blocks.block_rows(3368, 15913, 2, block_size=7) == 7
    for num_rows, num_cols, threads in ((1, 10, 4), (5924, 5924, 2), (60502, 60502, 3), (10, 10**9, 2)):
        rows = blocks.block_rows(num_rows, num_cols, threads)
        assert rows >= 1 and rows * num_cols * threads <= max(blocks.PARALLEL_BLOCK_ELEMENTS, threads * num_cols)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("num_blocks", [1, 3, 7])
def test_symmetric_products_equal_the_general_blocks(metric, num_blocks, three_threads, monkeypatch):
    """Leave-one-out scores from the block upper triangle mirrored below it are the general product's scores
    (float32 rounding; exactly symmetric), with 1 to 7 row blocks of the product and blocks of 5 queries."""
    monkeypatch.setenv("REID_ROBUST_PRODUCT", "torch")
    monkeypatch.setattr(search, "MIN_SYMMETRIC_BLOCK", 1)
    x = prepare(_feats(4), metric)
    assert search.symmetric_products(len(x))
    full = search.symmetric_product(x, num_blocks)
    np.testing.assert_array_equal(full, full.T)
    np.testing.assert_allclose(full, x.astype(np.float64) @ x.T.astype(np.float64), rtol=1e-5, atol=1e-5)
    seen = _collect(blocks.run_self_score_blocks, x, metric, block_size=5)
    expected = {(s, e): b.copy() for s, e, b in iter_score_blocks(x, x, metric, block_size=5)}
    assert seen.keys() == expected.keys()
    for key, (scores, *_) in seen.items():
        np.testing.assert_allclose(scores, expected[key], rtol=1e-5, atol=1e-5)


def test_symmetric_products_only_for_small_sets_with_torch(monkeypatch):
    """Above SYMMETRIC_MAX_ELEMENTS scores or with numpy's products, the general blocked product is used; a
    read-only float32 input is copied for torch, not refused."""
    monkeypatch.setenv("REID_ROBUST_PRODUCT", "torch")
    assert search.symmetric_products(8192) and not search.symmetric_products(8193)
    monkeypatch.setenv("REID_ROBUST_PRODUCT", "numpy")
    assert not search.symmetric_products(10)
    monkeypatch.setenv("REID_ROBUST_PRODUCT", "torch")
    x = prepare(_feats(5), "euclidean")
    frozen = x.copy()
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch.from_numpy on a read-only array would warn
        seen = _collect(blocks.run_self_score_blocks, frozen, "euclidean")
    scores = np.concatenate([seen[key][0] for key in sorted(seen)])
    np.testing.assert_allclose(scores, 2 * x @ x.T - (x.astype(np.float64) ** 2).sum(1)[None, :], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("threads", [1, 3])
def test_retrieval_metrics_equal_with_and_without_symmetric_products(threads, monkeypatch):
    """evaluate_retrieval on tied features gives the same per-item ranks whether its scores come from the
    symmetric product or the general one (SYMMETRIC_MAX_ELEMENTS = 0), on 1 or 3 threads."""
    from reid_robust.evaluation import evaluate_retrieval

    monkeypatch.setenv("REID_ROBUST_PRODUCT", "torch")
    monkeypatch.setattr(search, "MIN_SYMMETRIC_BLOCK", 1)
    monkeypatch.setattr(search, "worker_threads", lambda: threads)
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 12, size=150)
    feats = rng.integers(-2, 3, size=(150, 5)).astype(np.float32)  # many exact ties
    results = []
    for limit in (search.SYMMETRIC_MAX_ELEMENTS, 0):
        monkeypatch.setattr(search, "SYMMETRIC_MAX_ELEMENTS", limit)
        results.append(evaluate_retrieval(feats, labels, metric="euclidean", compute_nmi=False, per_query=True,
                                          block_size=16))
    for key in ("first_rank", "map_at_r", "valid"):
        np.testing.assert_array_equal(results[0]["per_query"][key], results[1]["per_query"][key])


def test_group_maxima_of_read_only_scores(monkeypatch):
    """match_ranks with a depth on read-only scores (no torch warning: the maxima are taken by numpy)."""
    from reid_robust.evaluation import ranking

    monkeypatch.setattr(ranking, "MIN_CUT_GROUP", 1)
    rng = np.random.default_rng(8)
    scores = rng.normal(size=(6, 200)).astype(np.float32)
    members = np.sort(np.stack([rng.choice(200, size=4, replace=False) for _ in range(6)]), axis=1)
    excluded = np.zeros((6, 4), dtype=bool)
    expected = ranking.match_ranks(scores.copy(), members, excluded, depth=2)
    scores.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ranks = ranking.match_ranks(scores, members, excluded, depth=2)
    np.testing.assert_array_equal(ranks[0], expected[0])
    np.testing.assert_array_equal(ranks[1], expected[1])
