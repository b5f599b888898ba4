#!/usr/bin/env python
"""Speed and memory of k-reciprocal re-ranked evaluation (evaluate_reid(rerank=True)) at Market-1501 scale
(3,368 queries x 15,913 gallery, 2,048-d clustered features from benchmarks/eval.py), against the floor
measured in the same run: the general float32 product of all M = Q + G normalised features with themselves
(numpy's BLAS, in row blocks; re-ranking needs every item's distances to every item).

Interleaved: floor, re-ranked evaluation, floor, ...; best of ``--repeats`` each; the ratio is from this run.
Memory: peak RSS during the evaluation minus RSS before it (features already loaded).

With ``--torchreid FILE`` (a Python file defining torchreid's ``re_ranking(q_g_dist, q_q_dist, g_g_dist,
k1, k2, lambda_value)``, e.g. a copy of torchreid/utils/rerank.py; not part of this repository), also both
algorithms at a smaller scale (``--torchreid-size``): time and largest difference, torchreid given plain
Euclidean distances (it squares its input).

  python benchmarks/rerank.py --threads 2
  python benchmarks/rerank.py --torchreid /tmp/torchreid_rerank.py --torchreid-size 1500 8000
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval import market_like  # noqa: E402  (benchmarks/eval.py: the shared Market-like generator)

from reid_robust.evaluation import evaluate_reid, k_reciprocal_rerank, set_num_threads  # noqa: E402
from reid_robust.evaluation.search import default_block_size, l2_normalize  # noqa: E402


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def floor_product(x: np.ndarray) -> float:
    """Seconds for all M x M products of x [M, D] with itself, in row blocks of the default size (general
    product: numpy's symmetric x @ x.T path would do half the work)."""
    block = default_block_size(len(x))
    start = time.perf_counter()
    for s in range(0, len(x), block):
        np.matmul(x[s:s + block], x.T)
    return time.perf_counter() - start


def compare_torchreid(path: str, num_query: int, num_gallery: int, dim: int) -> None:
    spec = importlib.util.spec_from_file_location("torchreid_rerank", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    qf, gf, *_ = market_like(num_query, num_gallery, dim, seed=0)
    qf, gf = l2_normalize(qf), l2_normalize(gf)
    start = time.perf_counter()
    ours = k_reciprocal_rerank(qf, gf)
    t_ours = time.perf_counter() - start
    x = np.concatenate([qf, gf]).astype(np.float64)
    sq = (x * x).sum(1)
    dist = np.sqrt(np.maximum(sq[:, None] + sq[None] - 2 * x @ x.T, 0))
    start = time.perf_counter()
    theirs = module.re_ranking(dist[:num_query, num_query:], dist[:num_query, :num_query],
                               dist[num_query:, num_query:], 20, 6, 0.3)
    t_theirs = time.perf_counter() - start
    diff = np.abs(ours - theirs)
    print(f"torchreid re_ranking at {num_query} x {num_gallery}, {dim}-d: {t_theirs:.1f} s; ours {t_ours:.1f} s "
          f"({t_theirs / t_ours:.1f}x faster); largest difference {diff.max():.2g}, rows differing by > 1e-5: "
          f"{int((diff.max(axis=1) > 1e-5).sum())}, top-1 differing: {int((ours.argmin(1) != theirs.argmin(1)).sum())}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch/BLAS threads (default 2)")
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions, best kept (default 2)")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (default 2048)")
    parser.add_argument("--size", type=int, nargs=2, default=(3368, 15913),
                        metavar=("Q", "G"), help="query and gallery sizes (default Market-1501: 3368 15913)")
    parser.add_argument("--torchreid", help="file defining torchreid's re_ranking (not in this repository)")
    parser.add_argument("--torchreid-size", type=int, nargs=2, default=(1000, 5000),
                        metavar=("Q", "G"),
                        help="query and gallery sizes of the comparison with torchreid (default 1000 5000)")
    parser.add_argument("--torchreid-dim", type=int, default=512,
                        help="feature dimension of the comparison with torchreid (default 512)")
    args = parser.parse_args()
    set_num_threads(args.threads)
    load_start = os.getloadavg()[0]
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(*args.size, args.dim, seed=0)
    x = l2_normalize(np.concatenate([qf, gf]))
    floors, evals, peaks = [], [], []
    for _ in range(args.repeats):
        floors.append(floor_product(x))
        reset_peak()
        before = rss_kib("VmRSS")
        start = time.perf_counter()
        result = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, rerank=True)
        evals.append(time.perf_counter() - start)
        peaks.append((rss_kib("VmHWM") - before) / 1024)
    plain = evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams)
    floor, best = min(floors), min(evals)
    print(f"{args.size[0]} x {args.size[1]}, {args.dim}-d, {args.threads} threads, best of {args.repeats}; "
          f"load average {load_start:.1f} at start, {os.getloadavg()[0]:.1f} at the end")
    print(f"floor: general product of the {len(x)} features with themselves {floor:.2f} s "
          f"(all runs: {', '.join(f'{t:.2f}' for t in floors)})")
    print(f"evaluate_reid(rerank=True): {best:.2f} s (all runs: {', '.join(f'{t:.2f}' for t in evals)}) = "
          f"{best / floor:.2f} x floor; peak beyond the loaded features {max(peaks):.0f} MiB; "
          f"mAP {result['mAP']:.4f} (plain {plain['mAP']:.4f}), rank-1 {result['rank1']:.4f}")
    if args.torchreid:
        compare_torchreid(args.torchreid, *args.torchreid_size, args.torchreid_dim)


if __name__ == "__main__":
    main()
