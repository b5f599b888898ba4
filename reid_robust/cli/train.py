"""Train a ReID / metric-learning embedder from a YAML config, evaluate it, and write checkpoints and metrics.

Examples:
  reid-train --config configs/quickstart.yaml
  reid-train --config configs/quickstart.yaml output_dir=runs/q2 train.epochs=1
  reid-train --config configs/quickstart.yaml output_dir=runs/q_noise40 data.noise.rate=0.4
  reid-train --config configs/quickstart.yaml train.resume=runs/quickstart/checkpoints/last.pth
  torchrun --nproc_per_node 2 tools/train_reid.py --config configs/quickstart.yaml output_dir=runs/q_ddp

A folder holding an earlier run is refused unless train.resume points into it or train.overwrite=true
(which moves the earlier run to <output_dir>/previous-<UTC time>/); a folder another run is training in
(its .lock names the process) is refused.
"""
from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reid-train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every config key, its default and meaning: docs/config.md (or reid_robust/config/sections.py).")
    parser.add_argument("--config", required=True, help="YAML config file (may inherit another with _BASE_)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.epochs=5 data.noise.rate=0.2 (values are YAML)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0 done, 2 a user mistake or divergence (one ``error:`` line), 130 interrupted."""
    args = build_parser().parse_args(argv)
    from reid_robust.config import ConfigError, load_config, to_yaml

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        print(to_yaml(cfg), end="")
        return 0
    from reid_robust.engine.trainer import train

    try:
        train(cfg)
    except KeyboardInterrupt as exc:  # Ctrl-C: saved and stopped, or (twice) stopped keeping the last checkpoint
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting now: a further Ctrl-C prints no traceback
        print(f"interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except (OSError, ValueError, FloatingPointError) as exc:  # bad files or values (ConfigError too), divergence
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
