"""Reading torch and numpy files without running code.

``torch.load`` on a pickle can call any function the file names; ``weights_only=True`` restricts the
unpickler to tensors, numbers, strings and plain containers (plus the globals a caller admits explicitly).
Every file this package reads goes through here: :func:`torch_load` for ``.pth`` files (checkpoints,
pretrained weights) and :func:`numpy_load` for ``.npy``/``.npz`` (never ``allow_pickle``). A file that would
need anything else is refused in one line naming the file and what it holds.
"""
from __future__ import annotations

import os
import pickle
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_BUILD = re.compile(r"but got <class '([\w.]+)'>")
_UNPICKLER_LINE = re.compile(r"WeightsUnpickler error:\s*(.+)", re.DOTALL)


def _weights_only_detail(message: str) -> tuple[bool, str]:
    """``(is code or a non-plain object, short reason)`` from torch's weights-only error message."""
    found = _GLOBAL.search(message) or _BUILD.search(message)
    if found:
        return True, found.group(1)
    tail = _UNPICKLER_LINE.search(message)
    text = tail.group(1) if tail else message
    lines = [line.strip() for line in text.splitlines() if line.strip() and "documentation" not in line]
    return False, (lines[0] if lines else type(message).__name__)[:200]


def torch_load(path: str | os.PathLike, what: str, allow: Sequence[Any] = (),
               map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with ``allow`` admitted through ``torch.serialization.safe_globals``.

    what: how the file is named in messages (e.g. "checkpoint", "pretrained weights file"). Raises
    FileNotFoundError for a missing file and ValueError, in one line, for a file that is not a torch file
    or holds pickled code or objects that are not plain data.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Weights only load failed" in message:
            is_object, detail = _weights_only_detail(message)
            if is_object:
                raise ValueError(f"{what} {path} was refused: it contains pickled code or objects that are not "
                                 f"plain data ({detail}); only tensors and plain containers are loaded") from None
            raise ValueError(f"{what} {path} cannot be read as plain data ({detail}); only tensors and "
                             "plain containers are loaded") from None
        raise ValueError(f"{what} {path} cannot be read ({type(exc).__name__}: {message.strip()[:200]})") from None
    except Exception as exc:  # truncated, empty or not a torch file
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{what} {path} cannot be read: not a torch file saved by torch.save (truncated, empty "
                         f"or another format; {type(exc).__name__}: {first})") from None


def numpy_load(path: str | os.PathLike, what: str) -> Any:
    """``np.load(path, allow_pickle=False)``: an ndarray (``.npy``) or an NpzFile (``.npz``, close it after use).

    Raises FileNotFoundError for a missing file and ValueError, in one line, for any file that is not a plain
    numpy file (object arrays, pickles, truncated or empty files).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:  # object arrays (pickles), truncated or empty files, other formats
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ValueError(f"{what} {path} cannot be read as a plain numpy file ({type(exc).__name__}: {first}); "
                         "pickled (object) arrays are never loaded") from None
