#!/usr/bin/env python
"""`reid-audit` from a checkout (the command lives in reid_robust/cli/audit.py; `--help` lists its options)."""
from reid_robust.cli.audit import main

if __name__ == "__main__":
    raise SystemExit(main())
