#!/usr/bin/env python
"""How hard the embedded synthetic datasets are: the numbers quoted in datasets/README.md.

For each default synthetic tree (Market-1501 layout, evaluated with the Market protocol: query vs gallery
with cameras; CUB-200-2011 layout, evaluated by leave-one-out retrieval on the test classes 101-200):
  1. colour histogram: 8x8x8 RGB bins of the whole box (after resizing to the evaluation size of the
     config), square-rooted, L2-normalised, cosine;
  2. untrained resnet18: the network of the config (configs/quickstart.yaml for Market,
     configs/cub200/quickstart_cub.yaml for CUB) at initialisation, seeded as the trainer seeds it;
  3. trained resnet18: the same network trained from scratch by ``reid_robust.engine.trainer.train`` with the
     config's losses, optimiser and schedule for ``--train-batches`` PK batches of 16x4 in all (epochs x
     batches per epoch; the largest batches per epoch that divides the total and fits one pass over the data).
All three are scored with the package's evaluators (``evaluate_reid`` / ``evaluate_retrieval``; the networks
through ``reid_robust.engine.evaluate.evaluate_model``). Data loading runs in the main process.

  python benchmarks/synthetic_difficulty.py                       # seed 0, 80 batches, 1 thread
  python benchmarks/synthetic_difficulty.py --seed 1 --train-batches 0
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import albumentations as A
import numpy as np
import torch
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reid_robust.config import load_config  # noqa: E402
from reid_robust.data import build_dataset, build_transforms  # noqa: E402
from reid_robust.data.dataset import load_image  # noqa: E402
from reid_robust.engine.builders import build_model_from_config  # noqa: E402
from reid_robust.engine.evaluate import evaluate_model  # noqa: E402
from reid_robust.engine.loader import seed_everything  # noqa: E402
from reid_robust.engine.trainer import train  # noqa: E402
from reid_robust.evaluation import evaluate_reid, evaluate_retrieval, set_num_threads  # noqa: E402

# (name, config, dataset name, metrics shown)
LAYOUTS = (
    ("market", "configs/quickstart.yaml", "synthetic_market", ("mAP", "rank1")),
    ("cub", "configs/cub200/quickstart_cub.yaml", "synthetic_cub", ("recall@1", "map_at_r")),
)


def colour_histogram(records, size: tuple[int, int], bins: int = 8) -> np.ndarray:
    """[N, bins^3] square-rooted, L2-normalised joint RGB histograms of the whole (resized) images."""
    resize = A.Resize(*size)
    step = 256 // bins
    feats = np.empty((len(records), bins ** 3), dtype=np.float32)
    for i, record in enumerate(records):
        image = resize(image=load_image(record))["image"].reshape(-1, 3).astype(np.int64) // step
        counts = np.bincount((image[:, 0] * bins + image[:, 1]) * bins + image[:, 2], minlength=bins ** 3)
        feats[i] = np.sqrt(counts / counts.sum())
    return feats / np.linalg.norm(feats, axis=1, keepdims=True)


def histogram_metrics(splits, size: tuple[int, int]) -> dict:
    if splits.protocol == "cub":
        return evaluate_retrieval(colour_histogram(splits.query, size), [r.pid for r in splits.query],
                                  metric="cosine")
    qf, gf = colour_histogram(splits.query, size), colour_histogram(splits.gallery, size)
    return evaluate_reid(qf, gf, [r.pid for r in splits.query], [r.pid for r in splits.gallery],
                         [r.camid for r in splits.query], [r.camid for r in splits.gallery], metric="cosine")


def schedule(total: int, per_pass: int) -> tuple[int, int]:
    """(epochs, batches per epoch) with epochs x batches = ``total`` and batches <= one pass over the data."""
    per_epoch = max(d for d in range(1, min(total, max(per_pass, 1)) + 1) if total % d == 0)
    return total // per_epoch, per_epoch


def run_layout(name: str, config: str, dataset: str, args) -> tuple[dict[str, dict], str]:
    root = Path(args.data_root) / dataset
    overrides = [f"seed={args.seed}", f"data.root={root}", f"data.options={{seed: {args.seed}}}",
                 "data.num_workers=0", f"output_dir={Path(args.output_dir) / name}", "eval.every=0",
                 "eval.untrained=true", "train.progress=false", f"train.num_threads={args.threads}"]
    cfg = load_config(REPO / config, overrides)
    splits = build_dataset(dataset, root, seed=args.seed)  # generates the default tree on first use
    size = cfg.data.transforms.size
    rows = {"colour histogram": histogram_metrics(splits, size)}
    s = cfg.data.sampler
    if args.train_batches > 0:
        per_pass = len(splits.train) // (s.num_identities * s.num_instances)
        epochs, per_epoch = schedule(args.train_batches, per_pass)
        warmup = min(cfg.train.warmup_epochs, max(epochs - 1, 0))
        cfg = load_config(REPO / config, overrides + [f"train.epochs={epochs}", f"train.warmup_epochs={warmup}",
                                                      f"data.sampler.batches_per_epoch={per_epoch}"])
        summary = train(cfg)
        rows["untrained resnet18"] = summary["untrained"]
        rows["trained resnet18"] = summary
        note = (f"{epochs} epochs x {per_epoch} PK batches of {s.num_identities}x{s.num_instances}, "
                f"warm-up {warmup} epochs, {summary['train_time_s']:.0f} s in train()")
    else:  # the trainer's initialisation: seed, then build
        seed_everything(cfg.seed)
        model = build_model_from_config(cfg.model).eval()
        transform = build_transforms(cfg.data.transforms, train=False)
        rows["untrained resnet18"] = evaluate_model(model, splits, cfg.eval, cfg.data, transform, "cpu")
        note = "not trained (--train-batches 0)"
    return rows, f"{name}: {config}, {dataset} seed {args.seed}, input {size[0]}x{size[1]}; {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", default="runs/difficulty_data", metavar="DIR",
                        help="folder for the synthetic trees (DIR/synthetic_market, DIR/synthetic_cub); they are "
                             "generated there on first use and reused when their parameters match "
                             "(default: %(default)s)")
    parser.add_argument("--output-dir", default="runs/difficulty", metavar="OUT",
                        help="training output folders OUT/market and OUT/cub (config, log, metrics.json, "
                             "checkpoints) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="seed of the synthetic trees and of the training runs (network initialisation, "
                             "sampling, augmentation) (default: %(default)s)")
    parser.add_argument("--train-batches", type=int, default=80, metavar="N",
                        help="PK batches (16 identities x 4 images) to train each network for; 0 skips training "
                             "and evaluates only the histogram and the untrained network (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=1, metavar="N",
                        help="CPU threads for torch, numpy's BLAS and FAISS (default: %(default)s)")
    args = parser.parse_args()
    if args.train_batches < 0 or args.threads < 1:
        parser.error("--train-batches must be >= 0 and --threads >= 1")
    set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    started = time.time()

    results, notes = {}, []
    for name, config, dataset, _ in LAYOUTS:
        results[name], note = run_layout(name, config, dataset, args)
        notes.append(note)
    headers = ["model"] + [f"{name} {metric}" for name, _, _, metrics in LAYOUTS for metric in metrics]
    body = []
    for row in ("colour histogram", "untrained resnet18", "trained resnet18"):
        if row not in results["market"]:
            continue
        body.append([row] + [f"{float(results[name][row][metric]):.3f}"
                             for name, _, _, metrics in LAYOUTS for metric in metrics])
    print()
    print(tabulate(body, headers=headers, tablefmt="github"))
    for note in notes:
        print(note)
    print("command: python " + " ".join(shlex.quote(a) for a in sys.argv))
    print(f"elapsed: {time.time() - started:.0f} s ({args.threads} thread(s), torch {torch.__version__})")


if __name__ == "__main__":
    main()
