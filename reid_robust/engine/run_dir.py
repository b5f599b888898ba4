"""A run's folder (``output_dir``): never destroy another run's files, one run at a time.

- ``check_reusable``: a folder holding an earlier run (checkpoints, ``metrics.json``, ``log.csv``) is refused
  unless ``train.resume`` points into it or ``train.overwrite`` is on; ``move_to_previous`` then moves the old
  outputs to ``<output_dir>/previous-<UTC time>/`` (nothing is deleted).
- ``RunLock``: ``<output_dir>/.lock`` (pid, host, start time), created atomically (``O_EXCL``) and removed
  on every exit; a lock whose process is dead (same host) is taken over with a notice.
- ``remove_stale_tmp``: temporary files of interrupted atomic writes (``reid_robust.atomic``).
- ``take``: rank 0 prepares the folder; every rank learns its verdict before any work.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from reid_robust.atomic import pid_alive, remove_stale_temporaries
from reid_robust.engine.distributed import DistInfo, broadcast_object

LOCK_NAME = ".lock"
# what a training run writes into its folder; moved as a whole by train.overwrite=true
RUN_OUTPUTS = ("checkpoints", "metrics.json", "log.csv", "train.log", "config.yaml", "noise_manifest.csv",
               "tensorboard", "audit", "cell_time.json")
_LEGACY_TMP = ("metrics.json.tmp", "config.yaml.tmp")  # fixed names of writes before the pid pattern


class RunDirError(ValueError):
    """The output folder cannot be used as asked; the message names it and the ways out."""


def earlier_run_files(out: Path) -> list[str]:
    """Files of an earlier run in ``out`` that a new run would replace or mix with: checkpoints,
    ``metrics.json`` and ``log.csv`` (relative names)."""
    found = [p for p in ("metrics.json", "log.csv") if (out / p).is_file()]
    ckpts = out / "checkpoints"
    if ckpts.is_dir():
        found += sorted(f"checkpoints/{p.name}" for p in ckpts.glob("*.pth") if p.is_file())
    return found


def _inside(path: Path, folder: Path) -> bool:
    """``path`` lies in ``folder`` (not in one of its ``previous-*`` archives)."""
    try:
        rel = path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return not rel.parts[0].startswith("previous-")


def check_reusable(out: Path, resume: str | None, overwrite: bool) -> bool:
    """Refuse (RunDirError) a folder holding an earlier run unless resumed into or ``overwrite``; returns
    whether the earlier run must be moved aside (``move_to_previous``) first."""
    resuming_here = resume is not None and _inside(Path(resume), out)
    if overwrite and resuming_here:
        raise RunDirError(f"train.overwrite=true and train.resume={resume} inside output_dir {out} contradict: "
                          "drop train.overwrite to continue that run, or drop train.resume to start afresh")
    found = earlier_run_files(out)
    if not found or resuming_here:
        return False
    if overwrite:
        return True
    shown = ", ".join(found[:4]) + (", ..." if len(found) > 4 else "")
    raise RunDirError(f"output_dir {out} holds an earlier run ({shown}); continue it with "
                      f"train.resume={out / 'checkpoints' / 'last.pth'}, or move it to {out}/previous-<time>/ "
                      "with train.overwrite=true, or choose another output_dir")


def move_to_previous(out: Path) -> Path:
    """Move the earlier run's outputs (``RUN_OUTPUTS``) into ``<out>/previous-<UTC time>/``; returns it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    target = out / f"previous-{stamp}"
    n = 1
    while target.exists():
        n += 1
        target = out / f"previous-{stamp}-{n}"
    target.mkdir()
    for name in RUN_OUTPUTS:
        if (out / name).exists():
            shutil.move(str(out / name), str(target / name))
    return target


def remove_stale_tmp(out: Path) -> list[Path]:
    """Delete the temporary files of dead processes' interrupted writes in ``out`` and ``out/checkpoints``
    (and the fixed-name ``metrics.json.tmp``/``config.yaml.tmp`` of older versions); returns them."""
    removed = [p for folder in (out, out / "checkpoints") for p in remove_stale_temporaries(folder, recursive=False)]
    for name in _LEGACY_TMP:
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(out / name)
    return removed


class RunLock:
    """``<out>/.lock`` held while a run trains in ``out``: ``acquire()`` or RunDirError naming the holder."""

    def __init__(self, out: Path):
        self.path = Path(out) / LOCK_NAME
        self.held = False

    def acquire(self) -> list[str]:
        """Create the lock; returns notices (a dead process's lock taken over)."""
        notices: list[str] = []
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                notices += self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}, fh)
            self.held = True
            return notices
        raise RunDirError(f"cannot take the lock {self.path}: another process keeps creating it")

    def _take_over_if_stale(self) -> list[str]:
        """Remove the lock of a dead process (with a notice); RunDirError when its holder may be alive."""
        try:
            holder = json.loads(self.path.read_text(encoding="utf-8"))
            pid, host = int(holder["pid"]), str(holder["host"])
        except FileNotFoundError:
            return []  # released meanwhile: try again
        except (OSError, ValueError, KeyError, TypeError):
            if time.time() - self.path.stat().st_mtime < 10:  # being written right now
                raise RunDirError(f"output_dir {self.path.parent} is being locked by another run "
                                  f"({self.path}); choose another output_dir") from None
            holder, pid, host = {}, -1, socket.gethostname()
        here = host == socket.gethostname()
        if not here or pid_alive(pid):
            where = f"pid {pid}" + ("" if here else f" on host {host}")
            raise RunDirError(f"output_dir {self.path.parent} is in use by another run ({where}, started "
                              f"{holder.get('started', '?')}); wait for it to end or choose another output_dir "
                              f"(if that run is dead, delete {self.path})")
        self._remove_if_still(holder)
        return [f"took over the lock {self.path} left by a dead process (pid {pid}, started "
                f"{holder.get('started', '?')})"]

    def _remove_if_still(self, holder: dict) -> None:
        """Remove the lock if it still holds ``holder`` (rename first: two runs taking over the same dead
        lock at once must not remove the lock the faster one has just created)."""
        aside = self.path.with_name(f"{LOCK_NAME}.stale.{os.getpid()}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        try:
            now = json.loads(aside.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            now = {}
        if holder and now != holder:  # a live run's fresh lock: put it back and let acquire() see it
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock if this process still holds it."""
        if not self.held:
            return
        self.held = False
        try:
            if int(json.loads(self.path.read_text(encoding="utf-8"))["pid"]) == os.getpid():
                self.path.unlink()
        except (OSError, ValueError, KeyError, TypeError):
            pass


def prepare(out: Path, resume: str | None, overwrite: bool) -> tuple[RunLock, list[str]]:
    """Take ``out`` for a run: lock it, check it may be used, move an earlier run aside (with overwrite),
    remove stale temporary files. Returns the held lock (release it on every exit) and the notices to log
    (the run's log file is opened only once the folder is taken)."""
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out)
    notices = lock.acquire()
    try:
        if check_reusable(out, resume, overwrite):
            notices.append(f"train.overwrite=true: moved the earlier run in {out} to {move_to_previous(out)}")
        removed = remove_stale_tmp(out)
        if removed:
            notices.append(f"removed {len(removed)} stale temporary file(s) of interrupted writes: "
                           + ", ".join(str(p) for p in removed))
    except BaseException:
        lock.release()
        raise
    return lock, notices


def take(out: Path, resume: str | None, overwrite: bool, info: DistInfo) -> tuple[RunLock | None, list[str]]:
    """``prepare`` on rank 0, whose verdict reaches every rank before any work: a refusal is raised on all
    of them (rank 0 raises its own error, the others a RunDirError with its message). Returns rank 0's lock
    (None elsewhere) and the notices."""
    lock: RunLock | None = None
    notices: list[str] = []
    refusal: Exception | None = None
    if info.is_main:
        try:
            lock, notices = prepare(out, resume, overwrite)
        except (OSError, ValueError) as exc:
            refusal = exc
    message = broadcast_object(None if refusal is None else str(refusal), info)
    if refusal is not None:
        raise refusal
    if message is not None:
        raise RunDirError(message)
    return lock, notices
