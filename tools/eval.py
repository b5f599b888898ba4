#!/usr/bin/env python
"""`reid-eval` from a checkout (the command lives in reid_robust/cli/eval.py; `--help` lists its options)."""
from reid_robust.cli.eval import main

if __name__ == "__main__":
    raise SystemExit(main())
