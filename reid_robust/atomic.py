"""One atomic write: a temporary file next to the target, flushed and fsynced, then renamed over it, so that a
crash, a kill or a full disk leaves either the old file or the new one, never a truncated one.

The temporary file is ``.<name>.<pid>.tmp`` in the target's folder; :func:`remove_stale_temporaries` deletes
those that a killed process left behind. A full disk is reported as one line naming the path.
"""
from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

TEMPORARY = re.compile(r"^\..+\.(\d+)\.tmp$")


def temporary_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}.tmp")


def is_disk_full(exc: BaseException) -> bool:
    """An ENOSPC / EDQUOT OSError, or torch's zip writer failing the same way (it raises RuntimeError)."""
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("no space left" in text or "file write failed" in text
                                              or "inline_container" in text)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any]) -> None:
    """Call ``write(fh)`` on a temporary file, then move it to ``path`` (creating the parent folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        if is_disk_full(exc):
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path} "
                                        "(the previous version of the file is unchanged)") from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


def remove_stale_temporaries(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Delete ``.<name>.<pid>.tmp`` files of processes that no longer run; returns what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for candidate in folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp"):
        match = TEMPORARY.match(candidate.name)
        if match and candidate.is_file() and not pid_alive(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (another user's counts); this process's own pid counts as dead."""
    if pid == os.getpid():
        return False  # our own leftovers from before a restart under the same pid are stale too
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
