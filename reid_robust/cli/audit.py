"""Rank the training images of a run by "label probably wrong" and show the top suspects.

Scores come from the checkpoint's robust loss weights and the embedding neighbourhood only (never from file
names or clean labels). Writes suspects.csv, contact_sheet.png and audit.json to --out (default <run>/audit);
when the run's noise_manifest.csv is there, also precision at the number of wrong labels, AUROC and
precision_recall.png. Examples:
  reid-audit --checkpoint runs/q_noisy/checkpoints/last.pth
  reid-audit --config configs/quickstart.yaml --checkpoint runs/q/checkpoints/last.pth data.noise.rate=0.2 --top 24
"""
from __future__ import annotations

import argparse
import json

from reid_robust.cli.common import add_device_options, report_errors


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reid-audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=None,
                        help="training config (default: the run's config.yaml, else the checkpoint's own)")
    parser.add_argument("--checkpoint", required=True, help="checkpoint .pth of the trained model")
    parser.add_argument("--out", default=None, help="output folder (default: <run>/audit)")
    parser.add_argument("--top", type=int, default=16, help="suspects on the contact sheet (0: no sheet)")
    parser.add_argument("--k", type=int, default=10, help="nearest neighbours for the neighbourhood score")
    parser.add_argument("--passes", type=int, default=8, help="PK passes for the loss weights")
    parser.add_argument("--labels", default=None, help="audit this noisy label list instead of the run's labels")
    add_device_options(parser)
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return parser


def run(args: argparse.Namespace) -> int:
    from reid_robust.analysis.audit_run import audit_checkpoint
    from reid_robust.data.files import check_output_folder

    if args.out is not None:
        check_output_folder(args.out, "--out")
    summary = audit_checkpoint(args.checkpoint, args.config, args.overrides, args.out, top=args.top, k=args.k,
                               passes=args.passes, labels_list=args.labels, device=args.device,
                               progress=False if args.no_progress else None)
    print(json.dumps(summary, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return report_errors(lambda: run(args))
