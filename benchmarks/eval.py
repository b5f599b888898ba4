#!/usr/bin/env python
"""Speed and memory of reid_robust.evaluation.evaluate_reid at Market-1501 and MSMT17 scale.

Market-1501 scale (3,368 queries x 15,913 gallery, 2,048-d float32, clustered features with Market-like
identities, cameras and distractors), all in the same run with the same thread count:
  1. a bare float32 matrix product of the normalised features (the floor of any exact evaluator), with
     numpy's BLAS, the one the evaluator uses (torch's MKL is about half as fast on AMD CPUs);
  2. evaluate_reid (exact, blocked, no sort);
  3. the dense-distance-matrix + argsort + per-query-loop approach (torchreid's eval_market1501);
  4. evaluate_reid on unclustered random features (the worst case of the counting step);
  5. evaluate_reid in approximate mode (FAISS IVF and HNSW), mAP difference from exact.
MSMT17 scale (11,659 x 82,161), in a subprocess: peak RSS minus RSS after the features are in memory.

  python benchmarks/eval.py                 # everything (the MSMT17 part takes minutes on 2 cores)
  python benchmarks/eval.py --skip-msmt --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_robust.evaluation import ApproximateSearch, evaluate_reid, set_num_threads
from reid_robust.evaluation.search import l2_normalize


def market_like(num_query: int, num_gallery: int, dim: int, seed: int = 0, noise: float = 1.0,
                spread: float = 0.3, num_ids: int | None = None, ids_per_group: int = 15, num_cams: int = 6,
                distractor_fraction: float = 0.175):
    """Clustered float32 features with Market-like ids: ~4.5 queries per id (one per camera at most),
    gallery images of the same ids under several cameras, and distractors (pid 0, ~17.5% of the gallery).

    Identities come in look-alike groups (hard negatives): group centre g ~ N(0, I), identity centre
    g + ``spread`` N(0, I), image = identity centre + ``noise`` N(0, I); every distractor is an identity of
    its own drawn the same way. Generated in chunks straight into the output arrays.
    """
    rng = np.random.default_rng(seed)
    num_ids = num_ids or max(1, round(num_query / 4.5))
    gen = torch.Generator().manual_seed(seed)
    num_groups = max(1, num_ids // ids_per_group)
    groups = torch.randn(num_groups, dim, generator=gen)

    def identity_centres(n):
        return groups[torch.randint(0, num_groups, (n,), generator=gen)] + spread * torch.randn(n, dim, generator=gen)

    centres = identity_centres(num_ids)
    # queries: ids cycle, cameras distinct within an id
    q_pids = np.sort(np.arange(num_query) % num_ids) + 1
    q_cams = np.zeros(num_query, dtype=np.int64)
    for pid in np.unique(q_pids):
        idx = np.flatnonzero(q_pids == pid)
        q_cams[idx] = rng.permutation(num_cams)[: len(idx)] if len(idx) <= num_cams else rng.integers(
            0, num_cams, len(idx))
    num_distractors = round(distractor_fraction * num_gallery)
    g_pids = np.concatenate([rng.integers(1, num_ids + 1, num_gallery - num_distractors),
                             np.zeros(num_distractors, dtype=np.int64)])
    g_cams = rng.integers(0, num_cams, num_gallery)

    def fill(pids):
        out = np.empty((len(pids), dim), dtype=np.float32)
        for lo in range(0, len(pids), 4096):
            p = torch.from_numpy(pids[lo:lo + 4096])
            base = torch.where((p > 0).unsqueeze(1), centres[(p - 1).clamp(min=0)], identity_centres(len(p)))
            out[lo:lo + 4096] = (base + noise * torch.randn(len(p), dim, generator=gen)).numpy()
        return out

    return fill(q_pids), fill(g_pids), q_pids, g_pids, q_cams, g_cams


def dense_argsort_loop(qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=50):
    """torchreid/fast-reid style: full distance matrix, argsort every row, a Python loop per query."""
    distmat = -np.matmul(l2_normalize(qf), l2_normalize(gf).T)
    indices = np.argsort(distmat, axis=1)
    matches = (g_pids[indices] == q_pids[:, None]).astype(np.int32)
    all_cmc, all_ap = [], []
    for i in range(len(q_pids)):
        order = indices[i]
        remove = (g_pids[order] == q_pids[i]) & (g_cams[order] == q_cams[i]) | (g_pids[order] == -1)
        raw_cmc = matches[i][~remove]
        if not raw_cmc.any():
            continue
        cmc = raw_cmc.cumsum()
        cmc[cmc > 1] = 1
        all_cmc.append(cmc[:max_rank])
        precision = raw_cmc.cumsum() / (np.arange(len(raw_cmc)) + 1.0)
        all_ap.append((precision * raw_cmc).sum() / raw_cmc.sum())
    return float(np.mean(all_ap)), float(np.mean(all_cmc, axis=0)[0])


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def market_benchmark(args) -> dict:
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(3368, 15913, args.dim, noise=args.noise, spread=args.spread)
    data = (qf, gf, q_pids, g_pids, q_cams, g_cams)
    qn, gn = l2_normalize(qf), l2_normalize(gf)
    # interleaved, best of ``repeats``: the machine may be shared
    t_matmul = t_eval = float("inf")
    for _ in range(args.repeats):
        t_matmul = min(t_matmul, timed(lambda: np.matmul(qn, gn.T))[0])
        t, exact = timed(lambda: evaluate_reid(*data))
        t_eval = min(t_eval, t)
    t_dense, (dense_map, dense_r1) = timed(lambda: dense_argsort_loop(*data))
    print(f"Market-1501 scale: {len(qf)} x {len(gf)}, {args.dim}-d, {args.threads} threads, "
          f"mAP {exact['mAP']:.4f}, rank1 {exact['rank1']:.4f}, mINP {exact['mINP']:.4f}")
    print(f"  bare float32 matmul          {t_matmul:8.2f} s", flush=True)
    print(f"  evaluate_reid (exact)        {t_eval:8.2f} s   = {t_eval / t_matmul:.2f} x matmul "
          f"(target <= 1.5)")
    print(f"  dense + argsort + loop       {t_dense:8.2f} s   evaluate_reid / dense = {t_eval / t_dense:.2f} "
          f"(target <= 0.5)", flush=True)
    assert abs(dense_map - exact["mAP"]) < 1e-4 and abs(dense_r1 - exact["rank1"]) < 1e-4, "exact != dense"
    out = {"matmul_s": t_matmul, "evaluate_reid_s": t_eval, "dense_argsort_loop_s": t_dense,
           "ratio_vs_matmul": t_eval / t_matmul, "ratio_vs_dense": t_eval / t_dense, "mAP": exact["mAP"]}
    # worst case for the counting: unclustered features, about half the gallery outscores a query's lowest match
    rng = np.random.default_rng(1)
    noise_q = rng.standard_normal(qf.shape, dtype=np.float32)
    noise_g = rng.standard_normal(gf.shape, dtype=np.float32)
    t_random, random_result = timed(lambda: evaluate_reid(noise_q, noise_g, q_pids, g_pids, q_cams, g_cams))
    print(f"  evaluate_reid, random feats  {t_random:8.2f} s   = {t_random / t_matmul:.2f} x matmul "
          f"(worst case, no target; mAP {random_result['mAP']:.4f})", flush=True)
    out["random_features_s"] = t_random
    for approx in (ApproximateSearch(kind="ivf", nprobe=args.nprobe, topk=args.topk),
                   ApproximateSearch(kind="ivf", nprobe=2, topk=100),
                   ApproximateSearch(kind="hnsw", ef_search=args.ef_search, topk=args.topk),
                   ApproximateSearch(kind="hnsw", ef_search=16, topk=100)):
        t_approx, result = timed(lambda a=approx: evaluate_reid(*data, approximate=a))
        diff = result["mAP"] - exact["mAP"]
        setting = (f"nprobe {approx.nprobe}" if approx.kind == "ivf" else f"ef {approx.ef_search}")
        print(f"  approximate {approx.kind:4s} {setting:10s} topk {approx.topk:4d} {t_approx:7.2f} s   "
              f"mAP {result['mAP']:.4f}, exact - approx = {-diff:+.1e}, "
              f"rank1 {result['rank1'] - exact['rank1']:+.1e}, mINP {result['mINP'] - exact['mINP']:+.1e}", flush=True)
        out[f"approx_{approx.kind}_{setting}_s"] = t_approx
        out[f"approx_{approx.kind}_{setting}_map_diff"] = diff
    return out


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def msmt_child(args) -> None:
    """Runs in a subprocess: features in memory, reset the peak, evaluate, report the peak increase."""
    set_num_threads(args.threads)
    data = market_like(11659, 82161, args.msmt_dim, seed=1, noise=args.noise, spread=args.spread, num_ids=3060,
                       num_cams=15)
    rss_loaded = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    start = time.perf_counter()
    result = evaluate_reid(*data)
    elapsed = time.perf_counter() - start
    peak = _rss_kib("VmHWM")
    print(json.dumps({"rss_after_load_mib": rss_loaded / 1024, "peak_mib": peak / 1024,
                      "extra_mib": (peak - rss_loaded) / 1024, "seconds": elapsed, "mAP": result["mAP"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2, help="threads for numpy's BLAS, torch and FAISS")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension at Market-1501 scale")
    parser.add_argument("--msmt-dim", type=int, default=2048, help="feature dimension at MSMT17 scale")
    parser.add_argument("--noise", type=float, default=1.0, help="per-dimension noise of an image around its id")
    parser.add_argument("--spread", type=float, default=0.3, help="per-dimension spread of ids around their group")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings (matmul, exact)")
    parser.add_argument("--topk", type=int, default=1000, help="approximate mode: list length")
    parser.add_argument("--nprobe", type=int, default=32, help="approximate mode: IVF lists visited per query")
    parser.add_argument("--ef-search", type=int, default=256, help="approximate mode: HNSW candidates at query time")
    parser.add_argument("--skip-msmt", action="store_true", help="skip the MSMT17-scale memory measurement")
    parser.add_argument("--skip-market", action="store_true", help="skip the Market-1501-scale timings")
    parser.add_argument("--msmt-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.msmt_child:
        msmt_child(args)
        return
    set_num_threads(args.threads)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start (a shared machine makes the "
          f"absolute times noisy; ratios are within one run)", flush=True)
    if not args.skip_market:
        market_benchmark(args)
    if not args.skip_msmt:
        cmd = [sys.executable, __file__, "--msmt-child", "--threads", str(args.threads),
               "--msmt-dim", str(args.msmt_dim), "--noise", str(args.noise), "--spread", str(args.spread)]
        out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
        print(f"MSMT17 scale: 11659 x 82161, {args.msmt_dim}-d: features {out['rss_after_load_mib']:.0f} MiB RSS, "
              f"peak beyond them {out['extra_mib']:.0f} MiB (target <= 3072), {out['seconds']:.1f} s, "
              f"mAP {out['mAP']:.4f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
