#!/usr/bin/env python
"""`reid-sweep` from a checkout (the command lives in reid_robust/cli/sweep.py; `--help` lists its options)."""
from reid_robust.cli.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
