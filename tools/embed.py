#!/usr/bin/env python
"""`reid-embed` from a checkout (the command lives in reid_robust/cli/embed.py; `--help` lists its options)."""
from reid_robust.cli.embed import main

if __name__ == "__main__":
    raise SystemExit(main())
