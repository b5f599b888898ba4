"""Loss x noise-rate sweep: train and evaluate every cell, then write results.csv, results.md, noise_curves.png.

Each loss replaces the config's metric term; the cross-entropy term, backbone, epochs and schedule stay the
same for every loss (see reid_robust/analysis/sweep.py). Finished cells (metrics.json present) are skipped, so
a stopped sweep continues where it was; a cell folder trained with another config (another base config or
override into the same --out) is refused, naming the keys. Examples:
  reid-sweep --config configs/sweep_synthetic.yaml --losses triplet,osm_caa,ranked_list \\
      --rates 0,0.2,0.4 --modes symmetric --seeds 0,1,2
  reid-sweep --config configs/sweep_synthetic.yaml --losses osm_caa --rates 0,0.2,0.4 --modes symmetric \\
      --seeds 0,1,2 --cleaning off,drop,relabel,oracle
  reid-sweep --config configs/market1501/bot_r50.yaml --losses triplet,osm_caa \\
      --rates 0,0.2,0.5 --modes symmetric,pattern --seeds 0 --out runs/sweep_market data.root=/data/market
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reid_robust.cli.common import report_errors


def _list(kind):
    def parse(text: str):
        try:
            return [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a comma-separated list of {kind.__name__}: {text!r}") from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reid-sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True,
                        help="base YAML config; its sweep.presets section holds each swept loss's parameters")
    parser.add_argument("--losses", type=_list(str), default="triplet,multi_similarity,osm_caa,ranked_list,ice",
                        help="comma-separated loss names; each replaces the config's metric term (default: %(default)s)")
    parser.add_argument("--rates", type=_list(float), default="0,0.1,0.2,0.4",
                        help="comma-separated noise rates, share of wrong labels per identity (default: %(default)s)")
    parser.add_argument("--modes", type=_list(str), default="symmetric,pattern",
                        help="comma-separated noise modes: symmetric, pair, pattern, open_set (default: %(default)s)")
    parser.add_argument("--seeds", type=_list(int), default="0,1,2",
                        help="comma-separated seeds; each sets the training seed and the noise seed (default: %(default)s)")
    parser.add_argument("--cleaning", type=_list(str), default="off",
                        help="comma-separated self-cleaning settings per cell: off, drop, relabel, weight (the other "
                             "train.cleaning keys come from the config), oracle (trains without the injected wrong "
                             "labels: an upper bound that reads the truth, not a method); off cells keep the folders "
                             "of a sweep without cleaning (default: %(default)s)")
    parser.add_argument("--out", default=None, help="output folder (default: <output_dir of the config>/sweep)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells trained at once, in worker processes sharing the cores (default: %(default)s); "
                             "on a CPU, 2-3 parallel cells beat one cell with all threads")
    parser.add_argument("--collect-only", action="store_true",
                        help="train nothing: write the results files from the cells finished so far")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar over the cells")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides applied to every cell")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return report_errors(lambda: run(args))
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue (finished cells are kept)", file=sys.stderr)
        return 130


def run(args: argparse.Namespace) -> int:
    from reid_robust.analysis.sweep import build_cells, collect_results, run_sweep, write_results
    from reid_robust.config import load_config
    from reid_robust.data.files import check_output_folder

    base = load_config(args.config, args.overrides)
    out = Path(args.out or f"{base.output_dir}/sweep")
    check_output_folder(out, "--out" if args.out else "the sweep folder (output_dir/sweep)")
    if args.collect_only:
        rows = collect_results(out, build_cells(args.losses, args.rates, args.modes, args.seeds, args.cleaning))
        out.mkdir(parents=True, exist_ok=True)
        write_results(rows, out, plot=bool(rows), loss_order=args.losses)
    else:
        rows = run_sweep(base, args.losses, args.rates, args.modes, args.seeds, out,
                         progress=not args.no_progress, jobs=args.jobs, cleanings=args.cleaning)
    if not rows:
        print(f"no finished cells in {out}")
        return 0
    print((out / "results.md").read_text(encoding="utf-8"))
    print(f"{len(rows)} finished cells; wrote {out / 'results.csv'}, {out / 'results.md'} and "
          f"{out / 'noise_curves.png'}")
    return 0

