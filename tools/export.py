#!/usr/bin/env python
"""Export a trained checkpoint: its embedder as TorchScript or ONNX, or the embeddings of a dataset split.

The embedder maps normalised images [N, 3, H, W] to the test-time embedding ``bn_feat`` [N, D].  After a
TorchScript or ONNX export the exported file is run on random images and compared with the PyTorch model;
the exit status is 1 if they differ by more than --atol.  The ``npz`` format writes arrays ``feats``
[N, D] float32, ``pids`` [N], ``camids`` [N] and ``paths`` [N] (the files ``tools/eval.py --query/--gallery``
reads).

Examples:
  python tools/export.py --checkpoint runs/quickstart/checkpoints/best.pth --format onnx --out embedder.onnx
  python tools/export.py --checkpoint runs/quickstart/checkpoints/best.pth --format torchscript --out embedder.pt
  python tools/export.py --checkpoint runs/quickstart/checkpoints/best.pth --format npz --split gallery \\
      --out gallery.npz
"""
from __future__ import annotations

import argparse
import os
import sys

FORMATS = ("torchscript", "onnx", "npz")
SPLITS = ("train", "query", "gallery")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="a checkpoint written by tools/train_reid.py (e.g. <output_dir>/checkpoints/best.pth)")
    parser.add_argument("--format", required=True, choices=FORMATS,
                        help="torchscript or onnx: the embedder; npz: the embeddings of --split")
    parser.add_argument("--out", required=True, metavar="PATH",
                        help="file to write (written to a temporary name, then renamed)")
    parser.add_argument("--split", choices=SPLITS,
                        help="npz only (required there): which split of the checkpoint's dataset to embed; "
                             "train pids are the relabelled training ids 0..K-1")
    parser.add_argument("--data-root", metavar="R",
                        help="npz only: dataset root, overriding data.root of the checkpoint's config")
    parser.add_argument("--size", nargs=2, type=int, metavar=("H", "W"),
                        help="image height and width (default: data.transforms.size of the checkpoint's config); "
                             "torchscript/onnx: the export input size (ONNX fixes H and W, the batch is dynamic)")
    parser.add_argument("--batch-size", type=int, default=64, help="npz only: images per forward pass (default 64)")
    parser.add_argument("--flip", action="store_true",
                        help="npz only: average each embedding with that of the mirrored image")
    parser.add_argument("--device", default="cpu",
                        help="npz only: device for feature extraction, e.g. cpu or cuda (default cpu); "
                             "exports always run on the CPU")
    parser.add_argument("--atol", type=float, default=1e-4,
                        help="torchscript/onnx: largest accepted |exported - pytorch| difference (default 1e-4)")
    return parser


def _check_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.format == "npz" and args.split is None:
        parser.error("--format npz needs --split (train, query or gallery)")
    if args.format != "npz":
        for flag, value in (("--split", args.split), ("--data-root", args.data_root), ("--flip", args.flip)):
            if value:
                parser.error(f"{flag} only applies to --format npz")
    if args.size is not None and min(args.size) <= 0:
        parser.error(f"--size needs two positive integers, got {args.size[0]} {args.size[1]}")
    if args.batch_size <= 0:
        parser.error(f"--batch-size must be positive, got {args.batch_size}")
    if args.atol < 0:
        parser.error(f"--atol must be >= 0, got {args.atol}")
    if os.path.isdir(args.out):
        parser.error(f"--out {args.out} is a directory; give a file name")
    from reid_robust.data.files import check_output_folder

    try:
        check_output_folder(os.path.dirname(os.path.abspath(args.out)), f"--out {args.out}: its folder")
    except ValueError as exc:
        parser.error(str(exc))
    import torch

    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"--device {args.device!r} is not a device name (e.g. cpu, cuda, cuda:1)")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} asked for, but no CUDA device is available")


def export_embeddings(args: argparse.Namespace, model, cfg: dict) -> int:
    from reid_robust.engine.builders import build_dataset_from_config, build_test_transform
    from reid_robust.engine.inference import extract_features
    from reid_robust.models.export import save_embeddings_npz

    splits = build_dataset_from_config(cfg)
    records = getattr(splits, args.split)
    if not records:
        raise ValueError(f"split {args.split!r} of dataset {splits.name!r} under {cfg['data']['root']!r} is empty")
    model.to(args.device)
    feats, pids, camids = extract_features(model, records, build_test_transform(cfg), batch_size=args.batch_size,
                                           flip=args.flip, device=args.device)
    path = save_embeddings_npz(args.out, feats, pids, camids, [r.path for r in records])
    print(f"wrote {feats.shape[0]} embeddings of dimension {feats.shape[1]} ({splits.name}, {args.split}) to {path}")
    return 0


def export_embedder(args: argparse.Namespace, model, cfg: dict) -> int:
    import torch

    from reid_robust.models.export import check_export, export_onnx, export_torchscript

    height, width = (int(v) for v in cfg["data"]["transforms"]["size"])
    model.cpu().eval()
    generator = torch.Generator().manual_seed(0)
    example = torch.randn(2, 3, height, width, generator=generator)
    exporter = export_onnx if args.format == "onnx" else export_torchscript
    path = exporter(model, args.out, example)
    # a batch of another size: the ONNX batch axis must be dynamic, the traced model shape-generic
    check = check_export(model, path, torch.randn(3, 3, height, width, generator=generator), atol=args.atol,
                         fmt=args.format)
    print(f"wrote {args.format} embedder (images [N, 3, {height}, {width}] -> embeddings [N, {model.out_dim}]) "
          f"to {path}")
    print(check)
    return 0 if check.ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_arguments(parser, args)

    from reid_robust.engine.checkpoint import load_model_from_checkpoint
    from reid_robust.engine.config import require_sections

    try:
        model, cfg = load_model_from_checkpoint(args.checkpoint, device="cpu")
        require_sections(cfg, f"checkpoint {args.checkpoint}", ("data", "data.transforms"))
        cfg = {**cfg, "data": {**cfg["data"], "transforms": dict(cfg["data"]["transforms"])}}
        if args.size is not None:
            cfg["data"]["transforms"]["size"] = list(args.size)
        if args.data_root is not None:
            cfg["data"]["root"] = args.data_root
        if args.format == "npz":
            return export_embeddings(args, model, cfg)
        return export_embedder(args, model, cfg)
    except (FileNotFoundError, NotADirectoryError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
