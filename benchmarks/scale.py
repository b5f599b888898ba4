#!/usr/bin/env python
"""Search at scale: recall@10 and time of sharded IVF and HNSW indexes against the exact top-10, on
simulated clustered features (default 1,000,000 x 128-d float32, 4 shards), the numbers docs/scaling.md
multiplies out to a 10-million-image gallery.

Per shard: the time to build its index (IVF: assign and add, over one quantiser trained once on a sample;
HNSW: insert), its memory (the serialised index), the time to search all queries; then the merged lists'
recall@10 against exact search (exact per-shard top-k merged, equal to unsharded exact search). Also the
embedding throughput of a ResNet-50 on this machine's CPU, for the embedding step.

  python benchmarks/scale.py                       # ~6-10 minutes on 2 cores
  python benchmarks/scale.py --num 200000 --skip-embed
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import faiss
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reid_robust.evaluation import ApproximateSearch, set_num_threads
from reid_robust.evaluation.search import l2_normalize
from reid_robust.evaluation.sharded import build_shard_index, exact_topk, merge_topk, split_rows, train_quantizer


def clustered_features(num: int, dim: int, num_ids: int, seed: int, chunk: int = 1 << 16) -> np.ndarray:
    """L2-normalised float32 rows: identity centre N(0, I) (the same ``num_ids`` centres for every seed) +
    0.8 N(0, I) noise drawn from ``seed``, built in chunks."""
    centres = np.random.default_rng(12345).standard_normal((num_ids, dim), dtype=np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((num, dim), dtype=np.float32)
    for lo in range(0, num, chunk):
        n = min(chunk, num - lo)
        out[lo:lo + n] = centres[rng.integers(0, num_ids, n)] + 0.8 * rng.standard_normal((n, dim), dtype=np.float32)
    return l2_normalize(out)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / truth.shape[1] for a, b in zip(found, truth)]))


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def exact_sharded(query, gallery, k, shards):
    results, times = [], []
    for a, b in shards:
        res, t = timed(lambda a=a, b=b: exact_topk(query, gallery[a:b], k, "cosine", a))
        results.append(res)
        times.append(t)
    return merge_topk(results, k), times


def approximate_sharded(query, gallery, k, shards, approximate, centroids, settings):
    """Build one index per shard, search it with each setting; per setting the merged top-k."""
    build, memory, search = [], [], {s: [] for s in settings}
    per_setting = {s: [] for s in settings}
    for a, b in shards:
        index, t = timed(lambda a=a, b=b: build_shard_index(gallery[a:b], a, "cosine", approximate, centroids))
        build.append(t)
        memory.append(len(faiss.serialize_index(index)))
        for s in settings:
            if approximate.kind == "ivf":
                faiss.extract_index_ivf(index).nprobe = s
            else:
                faiss.downcast_index(index.index).hnsw.efSearch = s
            (scores, ids), t = timed(lambda index=index: index.search(query, k))
            search[s].append(t)
            per_setting[s].append((scores, ids))
        del index
    return {s: merge_topk(per_setting[s], k)[1] for s in settings}, build, memory, search


def embed_rate(batches: int = 2, batch: int = 32) -> float:
    """Images per second of a torchvision ResNet-50 (random weights) at 256 x 128 on this CPU."""
    from torchvision.models import resnet50

    model = resnet50().eval()
    images = torch.randn(batch, 3, 256, 128)
    with torch.no_grad():
        model(images[:4])
        start = time.perf_counter()
        for _ in range(batches):
            model(images)
    return batches * batch / (time.perf_counter() - start)


def report(name, truth, found, build, memory, search, num_query):
    for setting, ids in found.items():
        print(f"{name} {setting:>4}: recall@10 {recall_at(ids, truth):.4f}, search {sum(search[setting]):.2f} s for "
              f"{num_query} queries ({1e3 * sum(search[setting]) / num_query:.2f} ms/query over all shards)")
    print(f"{name} build per shard: {', '.join(f'{t:.1f}' for t in build)} s; memory per shard: "
          f"{', '.join(f'{m / 2**20:.0f}' for m in memory)} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--num", type=int, default=1_000_000, help="number of simulated gallery features (default 1,000,000)")
    parser.add_argument("--dim", type=int, default=128, help="feature dimension (default 128)")
    parser.add_argument("--queries", type=int, default=1000, help="number of queries (default 1000)")
    parser.add_argument("--shards", type=int, default=4, help="gallery shards (default 4)")
    parser.add_argument("--threads", type=int, default=2, help="FAISS/BLAS threads (default 2)")
    parser.add_argument("--hnsw-m", type=int, default=16, help="HNSW links per node (default 16)")
    parser.add_argument("--ef-construction", type=int, default=40, help="HNSW efConstruction (default 40)")
    parser.add_argument("--skip-embed", action="store_true", help="skip the backbone embedding-speed measurement")
    args = parser.parse_args()
    set_num_threads(args.threads)
    num_ids = args.num // 20
    (gallery, query), t = timed(lambda: (clustered_features(args.num, args.dim, num_ids, 0),
                                         clustered_features(args.queries, args.dim, num_ids, 1)))
    shards = split_rows(args.num, args.shards)
    print(f"{args.num:,} x {args.dim}-d gallery ({gallery.nbytes / 2**20:.0f} MiB), {args.queries} queries, "
          f"{args.shards} shards of {shards[0][1] - shards[0][0]:,}, {args.threads} threads; generated in {t:.1f} s")
    (_, exact), times = exact_sharded(query, gallery, 10, shards)
    print(f"exact: {sum(times):.2f} s for {args.queries} queries ({', '.join(f'{t:.2f}' for t in times)} s per shard)")
    nlist = int(4 * np.sqrt(args.num))
    sample = gallery[np.random.default_rng(2).choice(args.num, min(args.num, 40 * nlist), replace=False)]
    centroids, t = timed(lambda: train_quantizer(sample, "cosine", nlist))
    print(f"IVF quantiser: {nlist} lists, trained once on {len(sample):,} rows in {t:.1f} s")
    ivf = ApproximateSearch(kind="ivf", nlist=nlist)
    report("IVF-Flat nprobe", exact, *approximate_sharded(query, gallery, 10, shards, ivf, centroids, (8, 32, 128)),
           args.queries)
    hnsw = ApproximateSearch(kind="hnsw", hnsw_m=args.hnsw_m, ef_construction=args.ef_construction)
    report(f"HNSW-Flat M{args.hnsw_m} efSearch", exact,
           *approximate_sharded(query, gallery, 10, shards, hnsw, None, (32, 128)), args.queries)
    if not args.skip_embed:
        print(f"ResNet-50 embedding at 256x128 on this CPU: {embed_rate():.1f} images/s")


if __name__ == "__main__":
    main()
