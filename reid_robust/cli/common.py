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


def add_image_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """How images are found and embedded: ``--labels``, ``--camera-pattern``, ``--flip``, ``--batch-size``,
    ``--device``, ``--no-progress``."""
    parser.add_argument("--labels", metavar="CSV", help="labels CSV (path,pid[,camid]) giving the images' identities")
    parser.add_argument("--camera-pattern", metavar="REGEX",
                        help="identity folders: regex whose group 'cam' (or first group) in a file name is the camera")
    parser.add_argument("--flip", action="store_true", help="average each embedding with its mirror image's")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    add_device_options(parser)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def report_errors(run: Callable[[], int]) -> int:
    """``run()``, with a user mistake (ValueError, ConfigError, OSError) printed as one ``error:`` line
    (exit status 2) and warnings as ``warning:`` lines, never a traceback; log lines (progress) go to stderr."""
    from reid_robust.progress import log_to_stderr

    log_to_stderr()
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
