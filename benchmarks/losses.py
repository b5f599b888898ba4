"""Forward + backward time of every registered loss, beside pytorch-metric-learning's equivalent.

Both are timed in the same run, interleaved, on the same PK batch (4 images per identity); the table
reports the best (minimum) milliseconds of the repeats, which is the estimate least disturbed by other
load on the machine, the ratio ours / PML of those (< 1 means ours is faster) and the ratio of medians.

    python benchmarks/losses.py            # batch 256 and 1024, dim 512 and 2048
    python benchmarks/losses.py --quick    # batch 256, dim 512, fewer repeats
    python benchmarks/losses.py --device cuda
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from typing import Callable

import torch

from reid_robust.losses import LOSSES, build_loss

# per loss: parameters for ours, and a factory of the PML equivalent (None where PML has none)
SETTINGS: dict[str, dict] = {
    "triplet": {"params": {"margin": 0.3, "mining": "batch_hard", "normalize": False}},
    "contrastive": {"params": {"pos_margin": 0.0, "neg_margin": 1.0}},
    "multi_similarity": {"params": {"alpha": 2.0, "beta": 50.0, "base": 0.5, "epsilon": 0.1}},
    "circle": {"params": {"m": 0.25, "gamma": 128.0}},
    "ranked_list": {"params": {"margin": 0.4, "boundary": 1.2, "neg_temperature": 10.0}},
    "ice": {"params": {"scale": 16.0}},
}


def pml_equivalent(name: str, batch: int) -> Callable | None:
    """A callable ``(embeddings, labels) -> loss`` built from pytorch-metric-learning, or None."""
    try:
        from pytorch_metric_learning import distances, losses, miners, reducers
    except ImportError:
        return None
    if name == "triplet":
        dist = distances.LpDistance(normalize_embeddings=False)
        loss = losses.TripletMarginLoss(margin=0.3, distance=dist, reducer=reducers.MeanReducer())
        miner = miners.BatchHardMiner(distance=dist)
        return lambda x, y: loss(x, y, miner(x, y))
    if name == "contrastive":
        return losses.ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
    if name == "multi_similarity":
        loss, miner = losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5), miners.MultiSimilarityMiner(0.1)
        return lambda x, y: loss(x, y, miner(x, y))
    if name == "circle":
        return losses.CircleLoss(m=0.25, gamma=128)
    if name == "ranked_list":  # PML weights differ in detail (see docs/losses.md) but the cost is comparable
        return losses.RankedListLoss(margin=0.4, Tn=10.0, alpha=1.2)
    if name == "ice" and batch <= 256:
        # PML's NT-Xent builds a [positive pairs, negative pairs] matrix: ~3e9 entries at batch 1024
        return losses.NTXentLoss(temperature=1.0 / 16.0)
    return None


def time_fn(fn: Callable, x: torch.Tensor, y: torch.Tensor, device: str) -> float:
    """Milliseconds of one forward + backward."""
    x = x.detach().requires_grad_(True)
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn(x, y).backward()
    if device == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1e3


def bench(name: str, batch: int, dim: int, repeats: int, device: str) -> tuple[list[float], list[float]]:
    torch.manual_seed(0)
    y = torch.arange(batch // 4, device=device).repeat_interleave(4)
    x = torch.randn(batch, dim, device=device)
    params = dict(SETTINGS.get(name, {}).get("params", {}))
    if LOSSES[name].needs_num_classes:
        params.update(num_classes=batch // 4, embedding_dim=dim)
    ours = build_loss(name, **params).to(device)
    ref = pml_equivalent(name, batch)
    for _ in range(2):  # warm-up (and fill PRISM's memory)
        time_fn(ours, x, y, device)
        if ref is not None:
            time_fn(ref, x, y, device)
    ours_ms, ref_ms = [], []
    for _ in range(repeats):  # interleaved so that machine load hits both alike
        ours_ms.append(time_fn(ours, x, y, device))
        if ref is not None:
            ref_ms.append(time_fn(ref, x, y, device))
    return ours_ms, ref_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="batch 256, dim 512, 3 repeats")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the losses run")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats per loss and size (default 5, 3 with --quick)")
    parser.add_argument("--losses", nargs="*", default=None, help="subset of loss names")
    args = parser.parse_args()
    sizes = [(256, 512)] if args.quick else [(256, 512), (256, 2048), (1024, 512), (1024, 2048)]
    repeats = args.repeats or (3 if args.quick else 5)
    names = args.losses or list(LOSSES)
    dev = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine()
    print(f"device {args.device} ({dev}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"{repeats} repeats")
    print("| loss | batch | dim | ours ms (best) | PML ms (best) | ours/PML (best) | ours/PML (median) |")
    print("|---|---|---|---|---|---|---|")
    for name in names:
        for batch, dim in sizes:
            ours, ref = bench(name, batch, dim, repeats, args.device)
            if ref:
                cols = (f"{min(ref):.1f}", f"{min(ours) / min(ref):.2f}",
                        f"{statistics.median(ours) / statistics.median(ref):.2f}")
            else:
                cols = ("-", "-", "-")
            print(f"| {name} | {batch} | {dim} | {min(ours):.1f} | " + " | ".join(cols) + " |", flush=True)


if __name__ == "__main__":
    main()
