"""Stopping a run: Ctrl-C finishes the step and saves (twice: stops without saving), SIGTERM exits through
every ``finally`` (the run folder's lock is released, the last checkpoint kept)."""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("reid_robust")


def in_main_thread() -> bool:
    """Signal handlers can be installed only from the main thread (a sweep may train in another)."""
    return threading.current_thread() is threading.main_thread()


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """SIGTERM (kill, torchrun stopping its workers) exits through every ``finally`` (the lock is released,
    a checkpoint being written is abandoned and the last one kept) with code 143."""
    if not in_main_thread():
        yield
        return

    def on_sigterm(signum: int, frame: Any) -> None:
        log.warning("terminated (SIGTERM): stopping without saving; the last checkpoint is kept as it was")
        raise SystemExit(128 + signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class CtrlC:
    """The first SIGINT sets ``requested`` (the loop saves after the current step and stops); a second one
    raises KeyboardInterrupt with ``again()``'s message (stopped without saving)."""

    def __init__(self, again: Callable[[], str]):
        self.requested = False
        self.again = again

    def __call__(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt(self.again())
        self.requested = True
        log.warning("interrupt received: saving a checkpoint after this step (Ctrl-C again to abort)")

    @contextmanager
    def installed(self) -> Iterator[CtrlC]:
        """This handler for SIGINT while the block runs (main thread only); the previous one after."""
        if not in_main_thread():
            yield self
            return
        previous = signal.signal(signal.SIGINT, self)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)
