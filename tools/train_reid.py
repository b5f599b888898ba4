#!/usr/bin/env python
"""Train a ReID / metric-learning embedder from a YAML config, evaluate it, and write checkpoints and metrics.

Examples:
  python tools/train_reid.py --config configs/quickstart.yaml
  python tools/train_reid.py --config configs/quickstart.yaml output_dir=runs/q2 train.epochs=1
  python tools/train_reid.py --config configs/quickstart.yaml output_dir=runs/q_noise40 data.noise.rate=0.4
  python tools/train_reid.py --config configs/quickstart.yaml train.resume=runs/quickstart/checkpoints/last.pth
  torchrun --nproc_per_node 2 tools/train_reid.py --config configs/quickstart.yaml output_dir=runs/q_ddp

A folder holding an earlier run is refused unless train.resume points into it or train.overwrite=true
(which moves the earlier run to <output_dir>/previous-<UTC time>/); a folder another run is training in
(its .lock names the process) is refused.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Every config key, its default and meaning: docs/config.md (or reid_robust/engine/config.py).")
    parser.add_argument("--config", required=True, help="YAML config file (may inherit another with _BASE_)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="config overrides, e.g. train.epochs=5 data.noise.rate=0.2 (values are YAML)")
    args = parser.parse_args(argv)

    from reid_robust.engine.config import ConfigError, load_config

    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.print_config:
        import yaml
        print(yaml.safe_dump(cfg, sort_keys=False))
        return 0
    from reid_robust.engine.trainer import train

    try:
        train(cfg)
    except KeyboardInterrupt as exc:  # Ctrl-C: saved and stopped, or (twice) stopped keeping the last checkpoint
        import signal

        signal.signal(signal.SIGINT, signal.SIG_IGN)  # exiting now: a further Ctrl-C prints no traceback
        print(f"interrupted{': ' + str(exc) if str(exc) else ''}", file=sys.stderr)
        return 130
    except (OSError, ValueError, ConfigError, FloatingPointError) as exc:  # bad files or values, divergence
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
