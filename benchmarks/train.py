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

from reid_robust.engine.builders import build_model_from_config  # noqa: E402
from reid_robust.engine.config import load_config  # noqa: E402
from reid_robust.engine.trainer import train  # noqa: E402


def baseline_images_per_s(cfg: dict, device: torch.device, iters: int) -> float:
    """Bare step: model forward/backward + linear CE head on random images of the config's size."""
    torch.manual_seed(0)
    model = build_model_from_config(cfg).to(device).train()
    head = torch.nn.Linear(model.out_dim, 100).to(device)
    opt = torch.optim.Adam(list(model.parameters()) + list(head.parameters()), lr=1e-4)
    s = cfg["data"]["sampler"]
    batch = s["num_identities"] * s["num_instances"]
    h, w = cfg["data"]["transforms"]["size"]
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


def trainer_images_per_s(cfg: dict, device: torch.device, iters: int, out: Path) -> float:
    cfg = {**cfg, "device": str(device), "output_dir": str(out),
           "train": {**cfg["train"], "epochs": 2, "progress": False, "warmup_epochs": 0},
           "eval": {**cfg["eval"], "every": 0, "untrained": False},
           "data": {**cfg["data"], "sampler": {**cfg["data"]["sampler"], "batches_per_epoch": iters}}}
    train(cfg)
    with open(out / "log.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["images_per_s"])  # the second epoch: workers and caches are warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=["configs/quickstart.yaml", "configs/market1501/bot_r50.yaml"],
                        help="configs to measure (Market-style configs run on the synthetic Market tree)")
    parser.add_argument("--iters", type=int, default=10, help="training iterations measured per config and device")
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
            base = baseline_images_per_s(cfg, device, args.iters)
            with tempfile.TemporaryDirectory() as tmp:
                full = trainer_images_per_s(cfg, device, args.iters, Path(tmp))
            rows.append([path, device.type, cfg["model"]["backbone"], "x".join(map(str, cfg["data"]["transforms"]["size"])),
                         f"{base:.1f}", f"{full:.1f}", f"{full / base:.2f}"])
            print(tabulate(rows[-1:], tablefmt="plain"), flush=True)
    print(f"\nmachine: {os.cpu_count()} CPUs, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print(tabulate(rows, headers=["config", "device", "backbone", "input", "bare step img/s", "trainer img/s",
                                  "trainer / bare"], tablefmt="github"))


if __name__ == "__main__":
    main()
