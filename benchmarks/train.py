#!/usr/bin/env python
"""Training throughput (images/s) of the full training step against a bare backbone step, same run.

For each config: (1) baseline = forward + backward of the config's model with a plain cross-entropy head on
random tensors of the config's input size (no data loading, no metric loss): the floor of any trainer;
(2) trainer = ``reid_robust.engine.trainer.train`` for a fixed number of iterations on the synthetic data
(JPEG decoding, augmentation, PK sampling, every loss term, optimiser and schedule). The ratio
trainer/baseline shows what the pipeline costs on top of the network. Runs on CPU, and on the GPU too when
one is available.

  python benchmarks/train.py                      # quickstart + ResNet-50 BoT config, CPU (and GPU if present)
  python benchmarks/train.py --iters 5 --configs configs/quickstart.yaml

The trainer runs twice per repetition, without and with ``data.cache_images`` (decoded images kept in
memory); the three measurements are interleaved ``--repeats`` times and the best of each is kept.

Measured (issue 14 target: trainer >= 0.92 x bare) with
``python benchmarks/train.py --configs configs/quickstart.yaml --iters 10 --repeats 3 --cpu-only`` on the idle
2-core development VM (load average 1.6), the quickstart loading in the main process with the cache
(``num_workers: 0``, ``cache_images: true``):

  | config                  | bare step img/s | trainer img/s | cached img/s | trainer / bare | cached / bare |
  | configs/quickstart.yaml |           272.3 |         252.2 |        264.9 |           0.93 |          0.97 |

With two loader worker processes on the same 2 cores (the quickstart's earlier ``num_workers: 2``) it was
0.64 / 0.69: the workers take cores from the two compute threads instead of overlapping with them.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
from tabulate import tabulate

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from reid_robust.config import Config, load_config, with_overrides  # noqa: E402
from reid_robust.engine.builders import build_model_from_config  # noqa: E402
from reid_robust.engine.trainer import train  # noqa: E402


def baseline_images_per_s(cfg: Config, device: torch.device, iters: int) -> float:
    """Bare step: model forward/backward + linear CE head on random images of the config's size."""
    torch.manual_seed(0)
    model = build_model_from_config(cfg.model).to(device).train()
    head = torch.nn.Linear(model.out_dim, 100).to(device)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    batch = cfg.data.sampler.num_identities * cfg.data.sampler.num_instances
    h, w = cfg.data.transforms.size
    x = torch.randn(batch, 3, h, w, device=device)
    y = torch.randint(0, 100, (batch,), device=device)

    def step():
        opt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.cross_entropy(head(model(x)["bn_feat"]), y)
        loss.backward()
        opt.step()

    step()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def trainer_images_per_s(cfg: Config, device: torch.device, iters: int, out: Path, cache: bool) -> float:
    """The trainer's images/s in its second epoch (workers started, caches filled), ``iters`` steps each."""
    cfg = with_overrides(cfg, {"device": str(device), "output_dir": str(out), "train.epochs": 2,
                               "train.progress": False, "train.warmup_epochs": 0, "eval.every": 0,
                               "eval.untrained": False, "data.sampler.batches_per_epoch": iters,
                               "data.cache_images": cache})
    train(cfg)
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["images_per_s"])


def measure(cfg: Config, device: torch.device, iters: int, repeats: int) -> dict[str, float]:
    """Best of ``repeats`` of the bare step, the trainer and the trainer with the image cache, interleaved
    (bare, trainer, cached, bare, ...) so that a busy moment on a shared machine hits all three alike."""
    best = {"bare": 0.0, "trainer": 0.0, "cached": 0.0}
    for _ in range(repeats):
        best["bare"] = max(best["bare"], baseline_images_per_s(cfg, device, iters))
        for name, cache in (("trainer", False), ("cached", True)):
            with tempfile.TemporaryDirectory() as tmp:
                best[name] = max(best[name], trainer_images_per_s(cfg, device, iters, Path(tmp), cache))
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["configs/quickstart.yaml", "configs/market1501/bot_r50.yaml"],
                        help="configs to measure (Market-style configs run on the synthetic Market tree)")
    parser.add_argument("--iters", type=int, default=10, help="training iterations measured per config and device")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the best of each is kept")
    parser.add_argument("--data-root", default="datasets/synthetic_market", help="synthetic Market tree (made if missing)")
    parser.add_argument("--cpu-only", action="store_true", help="skip the GPU even when one is available")
    args = parser.parse_args()

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    rows = []
    for path in args.configs:
        cfg = load_config(REPO / path, [f"data.root={args.data_root}", "data.dataset=synthetic_market"])
        for device in devices:
            best = measure(cfg, device, args.iters, args.repeats)
            base = best["bare"]
            rows.append([path, device.type, cfg.model.backbone, "x".join(map(str, cfg.data.transforms.size)),
                         f"{base:.1f}", f"{best['trainer']:.1f}", f"{best['cached']:.1f}",
                         f"{best['trainer'] / base:.2f}", f"{best['cached'] / base:.2f}"])
            print(tabulate(rows[-1:], tablefmt="plain"), flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(tabulate(rows, headers=["config", "device", "backbone", "input", "bare step img/s", "trainer img/s",
                                  "cached img/s", "trainer / bare", "cached / bare"], tablefmt="github"))


if __name__ == "__main__":
    main()
