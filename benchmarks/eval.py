#!/usr/bin/env python
"""Speed and memory of evaluate_reid (Market-1501, MSMT17 scale) and evaluate_retrieval (CUB, SOP scale).

The floor of any exact evaluator is the float32 product of the normalised features; it is measured with
both numpy's BLAS (the one the evaluators use) and torch's, in the same run, interleaved with the
evaluators (best of ``--repeats``), with the same thread count.
Market-1501 scale (3,368 queries x 15,913 gallery, 2,048-d, clustered features with Market-like
identities, cameras and distractors):
  1. the two products (the floor is the faster);
  2. evaluate_reid (exact, blocked) on the clustered features and on unclustered random ones (the worst
     case of the counting step: nearly every item outscores a query's lowest match);
  3. the dense-distance-matrix + argsort + per-query-loop approach (torchreid's eval_market1501), once;
  4. evaluate_reid in approximate mode (FAISS IVF and HNSW), mAP difference from exact.
Leave-one-out retrieval, compute_nmi=False, 512-d clustered features: CUB-200 test scale (5,924 items,
100 classes) and SOP test scale (60,502 items, 11,316 classes). The floor is the general product x @ y.T
(y a copy of x): numpy's x @ x.T takes a symmetric half-cost path, reported beside it. Up to 8,192 items
evaluate_retrieval itself multiplies only the block upper triangle of x xᵀ (9/16 of the multiply-adds) and
mirrors it; that product is timed too, and evaluate_retrieval's ratio to it is printed beside the floor's. At SOP scale the
products are blocked into one reused buffer (the whole 60,502^2 matrix is 14.6 GB), and the peak memory
beyond the features is measured in a subprocess. pytorch-metric-learning's AccuracyCalculator (same
metrics, its faiss k-NN) runs at CUB scale; at SOP scale only with --pml-sop.
MSMT17 scale (11,659 x 82,161), in a subprocess: peak RSS minus RSS after the features are in memory.

  python benchmarks/eval.py                 # everything (the MSMT17 and SOP parts take minutes on 2 cores)
  python benchmarks/eval.py --skip-msmt --skip-sop --threads 2
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

from reid_robust.evaluation import ApproximateSearch, evaluate_reid, evaluate_retrieval, set_num_threads
from reid_robust.evaluation.search import default_block_size, l2_normalize, symmetric_product, symmetric_products


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


def best_of(repeats: int, named: dict) -> tuple[dict, dict]:
    """Run every callable of ``named`` in turn, ``repeats`` rounds (interleaved); best time and last result."""
    best = {name: float("inf") for name in named}
    results = {}
    for _ in range(repeats):
        for name, fn in named.items():
            t, results[name] = timed(fn)
            best[name] = min(best[name], t)
    return best, results


def blocked_products(x: np.ndarray, y: np.ndarray, backend: str) -> None:
    """x @ y.T in blocks of the evaluators' size, into one reused buffer (numpy or torch)."""
    block = default_block_size(y.shape[0])
    out = np.empty((min(block, len(x)), len(y)), dtype=np.float32)
    tx, ty, tout = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(out)
    for start in range(0, len(x), block):
        end = min(start + block, len(x))
        if backend == "numpy":
            np.matmul(x[start:end], y.T, out=out[: end - start])
        else:
            torch.mm(tx[start:end], ty.T, out=tout[: end - start])


def floor_products(x: np.ndarray, y: np.ndarray, blocked: bool) -> dict:
    """The two float32 products of normalised features x [N, D], y [M, D] (y never the same buffer as x)."""
    if blocked:
        return {"numpy product": lambda: blocked_products(x, y, "numpy"),
                "torch product": lambda: blocked_products(x, y, "torch")}
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    return {"numpy product": lambda: np.matmul(x, y.T), "torch product": lambda: torch.mm(tx, ty.T)}


def report_floor(best: dict) -> float:
    floor = min(best["numpy product"], best["torch product"])
    for name in ("numpy product", "torch product"):
        print(f"  {name:28s} {best[name]:8.2f} s" + ("   (the floor)" if best[name] == floor else ""))
    return floor


def market_benchmark(args) -> dict:
    qf, gf, q_pids, g_pids, q_cams, g_cams = market_like(3368, 15913, args.dim, noise=args.noise, spread=args.spread)
    data = (qf, gf, q_pids, g_pids, q_cams, g_cams)
    qn, gn = l2_normalize(qf), l2_normalize(gf)
    # worst case for the counting: unclustered features, nearly the whole gallery outscores a query's lowest match
    rng = np.random.default_rng(1)
    noise_q = rng.standard_normal(qf.shape, dtype=np.float32)
    noise_g = rng.standard_normal(gf.shape, dtype=np.float32)
    best, results = best_of(args.repeats, {
        **floor_products(qn, gn, blocked=False),
        "evaluate_reid": lambda: evaluate_reid(*data),
        "evaluate_reid, random feats": lambda: evaluate_reid(noise_q, noise_g, q_pids, g_pids, q_cams, g_cams)})
    exact = results["evaluate_reid"]
    t_dense, (dense_map, dense_r1) = timed(lambda: dense_argsort_loop(*data))
    print(f"Market-1501 scale: {len(qf)} x {len(gf)}, {args.dim}-d, {args.threads} threads, best of "
          f"{args.repeats}: mAP {exact['mAP']:.4f}, rank1 {exact['rank1']:.4f}, mINP {exact['mINP']:.4f}; "
          f"load average {os.getloadavg()[0]:.1f}")
    floor = report_floor(best)
    for name, target in (("evaluate_reid", 1.2), ("evaluate_reid, random feats", 1.5)):
        print(f"  {name:28s} {best[name]:8.2f} s   = {best[name] / floor:.2f} x floor (target <= {target})")
    print(f"  dense + argsort + loop       {t_dense:8.2f} s   evaluate_reid / dense = "
          f"{best['evaluate_reid'] / t_dense:.2f}", flush=True)
    assert abs(dense_map - exact["mAP"]) < 1e-4 and abs(dense_r1 - exact["rank1"]) < 1e-4, "exact != dense"
    out = {**best, "dense_argsort_loop_s": t_dense, "mAP": exact["mAP"]}
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


def retrieval_like(num_items: int, num_classes: int, dim: int, seed: int = 0, noise: float = 1.0,
                   spread: float = 0.5, classes_per_group: int = 10):
    """Clustered float32 features [N, D] and labels [N] for leave-one-out retrieval: classes of about equal
    size in look-alike groups (group centre + ``spread`` N(0, I)), image = class centre + ``noise`` N(0, I)."""
    gen = torch.Generator().manual_seed(seed)
    groups = torch.randn(max(1, num_classes // classes_per_group), dim, generator=gen)
    centres = groups[torch.arange(num_classes) % len(groups)] + spread * torch.randn(num_classes, dim, generator=gen)
    labels = np.sort(np.arange(num_items) % num_classes)
    feats = np.empty((num_items, dim), dtype=np.float32)
    for lo in range(0, num_items, 8192):
        p = torch.from_numpy(labels[lo:lo + 8192])
        feats[lo:lo + 8192] = (centres[p] + noise * torch.randn(len(p), dim, generator=gen)).numpy()
    return feats, labels


def pml_accuracy(feats: np.ndarray, labels: np.ndarray) -> dict:
    """pytorch-metric-learning's AccuracyCalculator on the same leave-one-out task (its faiss k-NN)."""
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

    calc = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"), device=torch.device("cpu"))
    x = torch.from_numpy(l2_normalize(feats))
    y = torch.from_numpy(labels)
    return calc.get_accuracy(x, y, x, y, ref_includes_query=True)


def retrieval_timings(feats, labels, repeats: int, blocked: bool, with_pml: bool) -> tuple[dict, dict]:
    """Floors (general numpy and torch products, numpy's symmetric x @ x.T), evaluate_retrieval, PML."""
    x = l2_normalize(feats)
    y = x.copy()  # a different buffer: numpy takes the general product, as every evaluator must
    named = {**floor_products(x, y, blocked),
             "evaluate_retrieval": lambda: evaluate_retrieval(feats, labels, compute_nmi=False)}
    if not blocked:
        named["numpy x @ x.T (symmetric)"] = lambda: np.matmul(x, x.T)
    if symmetric_products(len(x)):
        named["block-triangle product"] = lambda: symmetric_product(x)
    if with_pml:
        named["pytorch-metric-learning"] = lambda: pml_accuracy(feats, labels)
    return best_of(repeats, named)


def report_retrieval(title: str, best: dict, results: dict, target: float) -> None:
    ours = results["evaluate_retrieval"]
    print(f"{title}: P@1 {ours['precision_at_1']:.4f}, MAP@R {ours['map_at_r']:.4f}; "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    floor = report_floor(best)
    if "numpy x @ x.T (symmetric)" in best:
        t = best["numpy x @ x.T (symmetric)"]
        print(f"  {'numpy x @ x.T (symmetric)':28s} {t:8.2f} s   (OpenBLAS's half-cost path for x @ x.T)")
    t = best["evaluate_retrieval"]
    print(f"  {'evaluate_retrieval':28s} {t:8.2f} s   = {t / floor:.2f} x floor (target <= {target})")
    if "block-triangle product" in best:
        own = best["block-triangle product"]
        print(f"  {'block-triangle product':28s} {own:8.2f} s   (the products evaluate_retrieval computes here: "
              f"x xᵀ is symmetric; evaluate_retrieval = {t / own:.2f} x it)")
    if "pytorch-metric-learning" in best:
        pml = results["pytorch-metric-learning"]
        print(f"  {'pytorch-metric-learning':28s} {best['pytorch-metric-learning']:8.2f} s   = "
              f"{best['pytorch-metric-learning'] / t:.1f} x evaluate_retrieval; P@1 {pml['precision_at_1']:.4f}, "
              f"MAP@R {pml['mean_average_precision_at_r']:.4f}")
        assert abs(pml["precision_at_1"] - ours["precision_at_1"]) < 1e-3, "P@1 differs from pytorch-metric-learning"
    print(flush=True)


def cub_benchmark(args) -> None:
    feats, labels = retrieval_like(5924, 100, 512, noise=args.retrieval_noise)
    best, results = retrieval_timings(feats, labels, args.repeats, blocked=False, with_pml=True)
    report_retrieval(f"CUB-200 scale (leave-one-out, 5924 x 512, 100 classes, {args.threads} threads, best of "
                     f"{args.repeats})", best, results, 1.5)


def sop_child(args) -> None:
    """Runs in a subprocess: SOP-scale timings, then the peak memory of one evaluation beyond the features."""
    set_num_threads(args.threads)
    feats, labels = retrieval_like(60502, 11316, 512, seed=2, noise=args.retrieval_noise)
    best, results = retrieval_timings(feats, labels, args.sop_repeats, blocked=True, with_pml=args.pml_sop)
    report_retrieval(f"SOP scale (leave-one-out, 60502 x 512, 11316 classes, {args.threads} threads, best of "
                     f"{args.sop_repeats}, products blocked)", best, results, 1.2)
    del results
    rss_loaded = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
    evaluate_retrieval(feats, labels, compute_nmi=False)
    extra = (_rss_kib("VmHWM") - rss_loaded) / 1024
    print(f"  evaluate_retrieval peak memory beyond the features and the floor's buffers: {extra:.0f} MiB "
          f"(target <= 3072)", flush=True)


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
    parser.add_argument("--skip-cub", action="store_true", help="skip the CUB-scale retrieval timings")
    parser.add_argument("--skip-sop", action="store_true", help="skip the SOP-scale retrieval timings and memory")
    parser.add_argument("--sop-repeats", type=int, default=2, help="best of this many timings at SOP scale")
    parser.add_argument("--pml-sop", action="store_true", help="also run pytorch-metric-learning at SOP scale")
    parser.add_argument("--retrieval-noise", type=float, default=2.2, help="retrieval features: noise around a class")
    parser.add_argument("--msmt-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--sop-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.msmt_child:
        msmt_child(args)
        return
    if args.sop_child:
        sop_child(args)
        return
    set_num_threads(args.threads)
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start (a shared machine makes the "
          f"absolute times noisy; ratios are within one run)", flush=True)
    if not args.skip_market:
        market_benchmark(args)
    if not args.skip_cub:
        cub_benchmark(args)
    if not args.skip_sop:  # a subprocess: its peak memory is its own
        cmd = [sys.executable, __file__, "--sop-child", "--threads", str(args.threads), "--sop-repeats",
               str(args.sop_repeats), "--retrieval-noise", str(args.retrieval_noise)] + (["--pml-sop"] if args.pml_sop else [])
        subprocess.run(cmd, check=True)
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
