"""Export a trained checkpoint: its embedder as TorchScript or ONNX, or the embeddings of a dataset split.

The embedder maps normalised images [N, 3, H, W] to the test-time embedding ``bn_feat`` [N, D].  After a
TorchScript or ONNX export the exported file is run on random images and compared with the PyTorch model;
the exit status is 1 if they differ by more than --atol.  The ``npz`` format writes arrays ``feats``
[N, D] float32, ``pids`` [N], ``camids`` [N] and ``paths`` [N] (the files ``reid-eval --query/--gallery``
reads; ``reid-embed`` writes the same for your own images).

Examples:
  reid-export --checkpoint runs/quickstart/checkpoints/best.pth --format onnx --out embedder.onnx
  reid-export --checkpoint runs/quickstart/checkpoints/best.pth --format torchscript --out embedder.pt
  reid-export --checkpoint runs/quickstart/checkpoints/best.pth --format npz --split gallery --out gallery.npz
"""
from __future__ import annotations

import argparse
import os

from reid_robust.cli.common import DEVICE_HELP, report_errors

FORMATS = ("torchscript", "onnx", "npz")
SPLITS = ("train", "query", "gallery")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reid-export", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, metavar="CKPT",
                        help="a checkpoint written by reid-train (e.g. <output_dir>/checkpoints/best.pth)")
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
    parser.add_argument("--device", default="auto", help=f"npz only: {DEVICE_HELP}; exports always run on the CPU")
    parser.add_argument("--no-progress", action="store_true", help="npz only: no progress bar or log lines")
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
    from reid_robust.engine.distributed import requested_device

    try:
        check_output_folder(os.path.dirname(os.path.abspath(args.out)), f"--out {args.out}: its folder")
        requested_device(args.device)
    except ValueError as exc:
        parser.error(str(exc))


def export_embeddings(args: argparse.Namespace) -> int:
    from reid_robust.engine.builders import build_dataset_from_config
    from reid_robust.engine.embed import Embedder, transform_of
    from reid_robust.evaluation.report import save_features

    embedder = Embedder.from_checkpoint(args.checkpoint, args.device, batch_size=args.batch_size, flip=args.flip,
                                        progress=False if args.no_progress else None)
    cfg = _with_options(embedder.config, args)
    embedder.transform = transform_of(cfg)
    splits = build_dataset_from_config(cfg.data)
    records = getattr(splits, args.split)
    if not records:
        raise ValueError(f"split {args.split!r} of dataset {splits.name!r} under {cfg.data.root!r} is empty")
    features = embedder.embed_records(records, f"{splits.name} {args.split}")
    path = save_features(args.out, features)
    print(f"wrote {len(features)} embeddings of dimension {features.feats.shape[1]} ({splits.name}, {args.split}) "
          f"to {path}")
    return 0


def _with_options(cfg, args: argparse.Namespace):
    """The checkpoint's config with --size and --data-root applied (checked like any config)."""
    from reid_robust.config import with_overrides

    overrides: dict = {}
    if args.size is not None:
        overrides["data.transforms.size"] = list(args.size)
    if args.data_root is not None:
        overrides["data.root"] = args.data_root
    return with_overrides(cfg, overrides, "command line") if overrides else cfg


def export_embedder(args: argparse.Namespace) -> int:
    import torch

    from reid_robust.engine.checkpoint import load_model_from_checkpoint
    from reid_robust.models.export import check_export, export_onnx, export_torchscript

    model, cfg = load_model_from_checkpoint(args.checkpoint, "cpu")
    height, width = _with_options(cfg, args).data.transforms.size
    model.eval()
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
    return report_errors(lambda: export_embeddings(args) if args.format == "npz" else export_embedder(args))
