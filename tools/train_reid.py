#!/usr/bin/env python
"""`reid-train` from a checkout (the command lives in reid_robust/cli/train.py; `--help` lists its options)."""
from reid_robust.cli.train import main

if __name__ == "__main__":
    raise SystemExit(main())
