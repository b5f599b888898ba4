"""Embed images with a trained checkpoint and save the features as an .npz (feats, paths, and pids/camids
where the layout gives them), the file ``reid-eval --query/--gallery`` reads.

Images: a folder (searched recursively; Market-1501-named images and <root>/<identity>/ folders give
identities), a glob in quotes, a list file (.txt, one path per line) or a labels CSV (path,pid[,camid]).
The checkpoint's own test transform is applied. Under torchrun every process embeds a consecutive share of
the images (gloo on the CPU, nccl on GPUs) and rank 0 gathers them and writes the one file, in input order.

Examples:
  reid-embed --checkpoint runs/market/checkpoints/best.pth --images my_photos/ --out my_photos.npz
  reid-embed --checkpoint best.pth --images 'shots/**/*.jpg' --out shots.npz --flip --device cuda
  reid-embed --checkpoint best.pth --images people/ --camera-pattern '_c(\\d+)' --out people.npz
  torchrun --nproc_per_node 4 tools/embed.py --checkpoint best.pth --images city/ --out city.npz --device cuda
"""
from __future__ import annotations

import argparse

from reid_robust.cli.common import add_image_options, report_errors


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reid-embed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by reid-train")
    p.add_argument("--images", required=True, metavar="SRC", help="folder, glob, list file (.txt) or labels CSV")
    p.add_argument("--out", required=True, metavar="OUT.npz", help="feature file to write (atomically)")
    add_image_options(p)
    return p


def run(args: argparse.Namespace) -> int:
    from reid_robust.data.image_list import image_list
    from reid_robust.engine.distributed import cleanup, init_distributed, resolve_device
    from reid_robust.engine.embed import Embedder
    from reid_robust.evaluation.report import check_output_path, save_features

    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    check_output_path(args.out, "--out")
    images = image_list(args.images, args.labels, args.camera_pattern)  # every input fault before the model loads
    info = init_distributed(args.device)  # one process without torchrun
    try:
        embedder = Embedder.from_checkpoint(args.checkpoint, resolve_device(args.device, info),
                                            batch_size=args.batch_size, flip=args.flip,
                                            progress=False if args.no_progress else None)
        features = embedder.embed_list_on_ranks(images, info, f"images {args.images!r}")
    finally:
        cleanup(info)
    if features is None:  # another rank than 0: its share went to rank 0, which writes the file
        return 0
    path = save_features(args.out, features)
    labels = "pids and camids" if features.camids is not None else "pids" if features.pids is not None else "no labels"
    print(f"wrote {len(features)} embeddings of dimension {features.feats.shape[1]} ({images.layout}, {labels}) "
          f"to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(lambda: run(args))
