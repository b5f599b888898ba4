"""Progress of long steps: tqdm's auto bar on a terminal or in a notebook; elsewhere (a batch job, a log file)
one log line about every 30 s; nothing with ``enabled=False``."""
from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("reid_robust")
LOG_INTERVAL_S = 30.0


class _Stderr(logging.StreamHandler):
    """A handler writing to the current ``sys.stderr`` (looked up at each record, so a replaced stream works)."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def log_to_stderr() -> None:
    """For the commands: the ``reid_robust`` logger's INFO lines (progress without a terminal, notices) on
    stderr, as plain messages. Without it they would go nowhere (Python shows only warnings by default).
    Added once; the trainer's own logging (engine/logs.setup_logging) replaces it."""
    if not any(isinstance(h, _Stderr) for h in log.handlers):
        log.addHandler(_Stderr())
    if log.level == logging.NOTSET or log.level > logging.INFO:
        log.setLevel(logging.INFO)


def interactive() -> bool:
    """True on a terminal (stderr is a tty) or inside a Jupyter kernel, where a live bar is seen."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress(iterable: Iterable[T], total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool | None = None, interval_s: float | None = None) -> Iterator[T]:
    """Yield the items of ``iterable`` while showing progress.

    enabled: None = automatic (a tqdm bar when :func:`interactive`, else a log line about every
    ``interval_s`` seconds, default ``LOG_INTERVAL_S``, and one at the end), True = the same, False = silent.
    """
    if enabled is False:
        yield from iterable
        return
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if interactive():
        from tqdm.auto import tqdm

        yield from tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
        return
    yield from _logged(iterable, total, desc, unit, LOG_INTERVAL_S if interval_s is None else interval_s)


def _logged(iterable: Iterable[T], total: int | None, desc: str, unit: str, interval_s: float) -> Iterator[T]:
    """The items, with a log line every ``interval_s`` seconds and a last one when more than one was written."""
    start = last = time.monotonic()
    done, lines = 0, 0
    of = f"/{total}" if total is not None else ""
    for item in iterable:
        yield item
        done += 1
        now = time.monotonic()
        if now - last >= interval_s:
            log.info("%s: %d%s %s (%.1f %s/s)", desc, done, of, unit, done / (now - start), unit)
            last, lines = now, lines + 1
    if lines:
        log.info("%s: done, %d %s in %.0f s", desc, done, unit, time.monotonic() - start)
