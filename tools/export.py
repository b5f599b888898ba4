#!/usr/bin/env python
"""`reid-export` from a checkout (the command lives in reid_robust/cli/export.py; `--help` lists its options)."""
from reid_robust.cli.export import main

if __name__ == "__main__":
    raise SystemExit(main())
