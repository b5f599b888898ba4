"""Tests of the ranked-list pictures and of the junk-free top-k lists behind them."""

import numpy as np
from PIL import Image

from reid_robust.evaluation.visualize import pick_queries, ranked_lists, save_ranked_lists


def _images(directory, count, prefix):
    paths = []
    for i in range(count):
        path = directory / f"{prefix}_{i}.png"
        Image.fromarray(np.full((16, 8, 3), 20 * i % 255, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return paths


def test_ranked_lists_skip_junk_and_mark_matches():
    # 1-d euclidean: gallery ranks in index order for a query at 0
    gf = np.arange(1, 9, dtype=np.float32)[:, None]
    g_pids = np.array([5, -1, 5, 0, 7, 5, 5, 7])
    g_cams = np.array([0, 1, 1, 1, 1, 0, 2, 1])
    indices, matches = ranked_lists(np.zeros((1, 1)), gf, [5], g_pids, [0], g_cams, [0], topk=4,
                                    metric="euclidean")
    # deleted: index 1 (junk id), 0 and 5 (same id, same camera)
    assert indices[0].tolist() == [2, 3, 4, 6]
    assert matches[0].tolist() == [True, False, False, True]
    # the same lists from a distance matrix
    indices_d, matches_d = ranked_lists(None, None, [5], g_pids, [0], g_cams, [0], topk=4,
                                        distances=gf.T ** 2)
    assert indices_d[0].tolist() == [2, 3, 4, 6] and matches_d[0].tolist() == matches[0].tolist()


def test_save_ranked_lists_writes_one_picture_per_query(tmp_path):
    rng = np.random.default_rng(0)
    q_paths, g_paths = _images(tmp_path, 4, "q"), _images(tmp_path, 12, "g")
    qf, gf = rng.normal(size=(4, 8)), rng.normal(size=(12, 8))
    written = save_ranked_lists(tmp_path / "ranks", q_paths, g_paths, qf, gf, [1, 2, 3, 4],
                                rng.integers(1, 5, 12), [0, 0, 0, 0], np.ones(12, int), num_queries=3, topk=10)
    assert len(written) == 3 and all(p.exists() and p.stat().st_size > 0 for p in written)
    assert pick_queries(4, 3).tolist() == [0, 2, 3]
    assert pick_queries(2, 10).tolist() == [0, 1]
