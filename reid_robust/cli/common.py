"""What every command shares: the ``--device`` and ``--no-progress`` options and one-line error reporting."""
from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable

DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N (default auto)"


def add_device_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--device`` (resolved by ``reid_robust.engine.distributed.requested_device``) and ``--no-progress``."""
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (on a terminal) or progress log lines (elsewhere, every ~30 s)")


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def report_errors(run: Callable[[], int]) -> int:
    """``run()``, with a user mistake (ValueError, ConfigError, OSError) printed as one ``error:`` line
    (exit status 2) and warnings as ``warning:`` lines, never a traceback."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            code = run()
        except (ValueError, OSError) as exc:  # ConfigError is a ValueError; unreadable files are OSErrors
            print(f"error: {first_line(exc)}", file=sys.stderr)
            code = 2
    for w in caught:
        if issubclass(w.category, UserWarning):
            print(f"warning: {w.message}", file=sys.stderr)
    return code
