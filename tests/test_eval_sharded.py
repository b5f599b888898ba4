"""Search over a gallery split into shards: exact equals unsharded (ties by global index), IVF with one shared
quantiser equals the unsharded IVF, HNSW per shard keeps recall; shard files; the evaluation and re-ranking
hooks."""

import numpy as np
import pytest

from reid_robust.evaluation import ApproximateSearch, evaluate_reid
from reid_robust.evaluation.rerank import k_reciprocal_rerank
from reid_robust.evaluation.search import build_index, l2_normalize, search_topk
from reid_robust.evaluation.sharded import (
    build_shard_index,
    exact_topk,
    load_shard,
    merge_topk,
    save_shard,
    search_shard,
    search_shard_file,
    shard_candidates,
    sharded_search,
    split_rows,
    train_quantizer,
)


def loop_topk(query, gallery, k, metric):
    """Reference: float64 scores of every pair, sorted by (higher score, smaller index) in a Python loop."""
    q, g = query.astype(np.float64), gallery.astype(np.float64)
    out = []
    for row in q:
        if metric == "cosine":
            scores = [float(row @ item) for item in g]
        else:
            scores = [-float(((row - item) ** 2).sum()) for item in g]
        out.append(sorted(range(len(g)), key=lambda j: (-scores[j], j))[:k])
    return np.array(out)


def clustered(rng, n, dim, centres):
    return (centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, dim))).astype(np.float32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("num_shards", [1, 3, 7])
def test_exact_sharded_search_is_the_unsharded_top_k(metric, num_shards):
    rng = np.random.default_rng(num_shards)
    centres = rng.normal(size=(6, 8))
    qf, gf = clustered(rng, 15, 8, centres), clustered(rng, 200, 8, centres)
    scores, indices = sharded_search(qf, gf, 12, metric, num_shards, block_size=4)
    q, g = (l2_normalize(qf), l2_normalize(gf)) if metric == "cosine" else (qf, gf)
    np.testing.assert_array_equal(indices, loop_topk(q, g, 12, metric))
    whole_scores, whole_indices = exact_topk(q, g, 12, metric)
    np.testing.assert_array_equal(indices, whole_indices)
    np.testing.assert_allclose(scores, whole_scores, rtol=1e-6, atol=1e-6)


def test_exact_ties_go_to_the_smaller_global_index_across_shards():
    """Integer features (exact float32 products): duplicated gallery rows tie across shard boundaries."""
    rng = np.random.default_rng(0)
    points = rng.integers(-2, 3, size=(5, 4)).astype(np.float32)
    gf = points[rng.integers(0, 5, 60)]
    qf = rng.integers(-2, 3, size=(9, 4)).astype(np.float32)
    for num_shards in (2, 5, 60):
        _, indices = sharded_search(qf, gf, 20, "euclidean", num_shards)
        np.testing.assert_array_equal(indices, loop_topk(qf, gf, 20, "euclidean"))


def test_ties_straddling_the_k_th_place_keep_the_smallest_indices():
    gallery = np.tile(np.array([[0.0, 1.0]], np.float32), (12, 1))
    gallery[5] = [1.0, 0.0]  # the best; the eleven others tie (a partial top-k picks among them freely)
    scores, indices = exact_topk(np.array([[1.0, 0.0]], np.float32), gallery, 3, "euclidean", offset=100)
    np.testing.assert_array_equal(indices, [[105, 100, 101]])
    np.testing.assert_allclose(scores, [[1.0, -1.0, -1.0]])


def test_merge_drops_empty_slots_and_orders_by_score_then_index():
    a = (np.array([[0.9, 0.5, 0.0]]), np.array([[7, 3, -1]]))
    b = (np.array([[0.9, 0.7]]), np.array([[2, 8]]))
    scores, indices = merge_topk([a, b], 4)
    np.testing.assert_array_equal(indices, [[2, 7, 8, 3]])
    np.testing.assert_allclose(scores, [[0.9, 0.9, 0.7, 0.5]])


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_ivf_with_a_shared_quantizer_equals_the_unsharded_ivf(metric):
    rng = np.random.default_rng(1)
    qf, gf = rng.normal(size=(40, 16)).astype(np.float32), rng.normal(size=(3000, 16)).astype(np.float32)
    if metric == "cosine":
        qf, gf = l2_normalize(qf), l2_normalize(gf)
    approximate = ApproximateSearch(kind="ivf", nlist=30, nprobe=3, topk=10)
    whole = search_topk(build_index(gf, metric, approximate), qf, 10, metric)  # search.py's own IVF
    centroids = train_quantizer(gf, metric, 30)
    shards = [search_shard(qf, gf[a:b], a, 10, metric, approximate, centroids) for a, b in split_rows(3000, 4)]
    scores, indices = merge_topk(shards, 10)
    np.testing.assert_array_equal(indices, whole[1])
    np.testing.assert_allclose(scores, whole[0], rtol=1e-6, atol=1e-5)
    exact = loop_topk(qf, gf, 10, metric)
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(indices, exact)]) < 1.0  # nprobe 3 misses some


def test_hnsw_per_shard_recall_is_at_most_0_01_below_one_graph():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(30, 24))
    qf, gf = clustered(rng, 200, 24, centres), clustered(rng, 6000, 24, centres)
    exact = exact_topk(qf, gf, 10, "euclidean")[1]
    approximate = ApproximateSearch(kind="hnsw", hnsw_m=8, ef_construction=40, ef_search=32, topk=10)

    def recall(indices):
        return np.mean([len(set(a) & set(b)) / 10 for a, b in zip(indices, exact)])

    one_graph = build_shard_index(gf, 0, "euclidean", approximate).search(qf, 10)[1]
    sharded = sharded_search(qf, gf, 10, "euclidean", 4, approximate)[1]
    assert recall(one_graph) > 0.8
    assert recall(sharded) >= recall(one_graph) - 0.01  # smaller graphs: usually higher (0.9995 vs 0.985)


def test_shard_files_searched_separately_merge_to_the_whole(tmp_path):
    """The multi-process form: each process writes or reads one shard file and returns its top-k."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(5, 8))
    qf, gf = clustered(rng, 10, 8, centres), clustered(rng, 90, 8, centres)
    paths = []
    for i, (a, b) in enumerate(split_rows(90, 3)):
        paths.append(tmp_path / f"shard{i}.npz")
        save_shard(paths[-1], gf[a:b], a)
    assert load_shard(paths[1])[1] == 30
    merged = merge_topk([search_shard_file(p, qf, 7, "cosine") for p in paths], 7)
    np.testing.assert_array_equal(merged[1], sharded_search(qf, gf, 7, "cosine", 1)[1])


def test_bad_shard_files_and_settings_are_one_line(tmp_path):
    np.savez(tmp_path / "bad.npz", feats=np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match=r"shard file .*bad.npz lacks 'feats' or 'offset'"):
        load_shard(tmp_path / "bad.npz")
    np.savez(tmp_path / "neg.npz", feats=np.zeros((3, 2), np.float32), offset=np.int64(-1))
    with pytest.raises(ValueError, match="non-negative integer offset"):
        load_shard(tmp_path / "neg.npz")
    with pytest.raises(ValueError, match="num_shards must be a positive integer"):
        split_rows(10, 0)
    with pytest.raises(ValueError, match="shared centroids"):
        build_shard_index(np.zeros((4, 2), np.float32), 0, "euclidean", ApproximateSearch(kind="ivf"))
    with pytest.raises(ValueError, match="approximate shards"):
        ApproximateSearch(shards=0)


def test_evaluation_with_a_sharded_ivf_index_equals_the_unsharded_one():
    rng = np.random.default_rng(4)
    centres = rng.normal(size=(12, 16))
    g_pids = rng.integers(1, 13, 800)
    gf = (centres[g_pids - 1] + 0.8 * rng.normal(size=(800, 16))).astype(np.float32)
    q_pids = np.arange(1, 13)
    qf = (centres[q_pids - 1] + 0.8 * rng.normal(size=(12, 16))).astype(np.float32)
    cams = np.zeros(12, int), np.ones(800, int)
    results = [evaluate_reid(qf, gf, q_pids, g_pids, *cams, approximate=ApproximateSearch(
        kind="ivf", nlist=20, nprobe=2, topk=50, shards=s)) for s in (1, 3)]
    assert results[0] == results[1]
    assert results[0]["mAP"] < evaluate_reid(qf, gf, q_pids, g_pids, *cams)["mAP"]  # approximate: something missed


def test_reranking_candidates_searched_by_shards_give_the_same_result():
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(6, 8))
    qf, gf = clustered(rng, 12, 8, centres), clustered(rng, 110, 8, centres)
    whole = k_reciprocal_rerank(qf, gf, k1=6, k2=3)
    sharded = k_reciprocal_rerank(qf, gf, k1=6, k2=3, candidate_search=shard_candidates(4))
    np.testing.assert_allclose(sharded, whole, atol=1e-6)
