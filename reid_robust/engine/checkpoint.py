"""Checkpoints: atomic writes (temporary file, fsync, rename) and loading that never runs code.

A checkpoint is a dict with ``model`` (state dict), ``config`` (the resolved config as a plain mapping,
``Config.to_dict()``; read back with :func:`checkpoint_config`), ``epoch`` (epochs
completed) and, for resuming, ``optimizer``, ``scheduler``, ``scaler``, ``losses`` (loss-module states),
``rng`` and ``iteration`` (batches of the epoch already trained; PK sampling is a function of seed and epoch).
Everything in it is plain data (tensors, numbers, strings, None, lists, tuples and dicts of them), so it is
read with ``torch.load(weights_only=True)``; :func:`atomic_save` refuses to write anything else. Checkpoints
of reid_robust 0.1 hold numpy's RNG state as a numpy array: exactly the numpy globals that state needs
(``LEGACY_RNG_GLOBALS``) are admitted, and the state is converted to the plain form on loading.
"""
from __future__ import annotations

import logging
import os
import random
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from reid_robust.atomic import atomic_write
from reid_robust.config import Config, config_from_mapping
from reid_robust.safe_load import torch_load

if TYPE_CHECKING:
    from reid_robust.models import ReIDModel

try:  # numpy >= 2 (numpy.core is an alias that warns)
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# what a pickled uint32 ndarray (numpy's MT19937 key in np.random.get_state()) needs, under the names numpy 1.x
# and numpy 2.x write; a dtype other than uint32 stays refused
LEGACY_RNG_GLOBALS = (
    (_reconstruct, "numpy.core.multiarray._reconstruct"),
    (_reconstruct, "numpy._core.multiarray._reconstruct"),
    np.ndarray,
    np.dtype,
    type(np.dtype(np.uint32)),  # numpy.dtypes.UInt32DType on numpy >= 1.25
)
log = logging.getLogger("reid_robust")
_PLAIN_SCALARS = (bool, int, float, complex, str, bytes, type(None), torch.Tensor, torch.Size, torch.dtype,
                  torch.device)


def check_plain(obj: Any, where: str = "checkpoint") -> None:
    """Raise TypeError naming the first entry of ``obj`` that ``torch.load(weights_only=True)`` would refuse."""
    if isinstance(obj, _PLAIN_SCALARS):
        return
    if type(obj) in (dict, OrderedDict):
        for key, value in obj.items():
            if not isinstance(key, (str, int, float, bool, type(None))):
                raise TypeError(f"{where} has a key of type {type(key).__name__}: a checkpoint holds plain data only")
            check_plain(value, f"{where}[{key!r}]")
        return
    if type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            check_plain(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: a checkpoint holds only "
                    "tensors, numbers, strings, None and lists, tuples and dicts of them")


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Save with ``torch.save`` to ``path`` so that a crash never leaves a truncated file there
    (:func:`reid_robust.atomic.atomic_write`; a full disk is one OSError naming the path).

    ``obj`` must be plain data (see :func:`check_plain`): what is written can always be read back safely."""
    check_plain(obj)
    atomic_write(path, lambda fh: torch.save(obj, fh))


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a reid_robust checkpoint without running code (``torch.load(weights_only=True)``).

    Raises FileNotFoundError if it is missing, ValueError (one line naming the file) if it cannot be read,
    holds pickled code or objects, or is not a dict with a ``model`` state dict and a ``config`` mapping.
    """
    path = Path(path)
    ckpt = torch_load(path, "checkpoint", allow=LEGACY_RNG_GLOBALS, map_location=device)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise ValueError(f"checkpoint {path} is not a reid_robust checkpoint (expected a dict with keys 'model' "
                         f"and 'config'; found {found})")
    if not isinstance(ckpt["config"], Mapping):
        raise ValueError(f"checkpoint {path} was refused: its 'config' is a {type(ckpt['config']).__name__}, "
                         "not a mapping of config sections")
    model = ckpt["model"]
    if not isinstance(model, Mapping) or not all(isinstance(v, torch.Tensor) for v in model.values()):
        raise ValueError(f"checkpoint {path} was refused: its 'model' is not a state dict (a mapping of names to "
                         "tensors)")
    if ckpt.get("rng"):
        ckpt["rng"] = _plain_rng_state(ckpt["rng"], path)
    _check_no_arrays(ckpt, path)
    return ckpt


def _check_no_arrays(obj: Any, path: Path) -> None:
    """The numpy globals admitted for the legacy RNG state may build uint32 arrays anywhere: refuse those."""
    if isinstance(obj, np.ndarray):
        raise ValueError(f"checkpoint {path} was refused: it holds a numpy array outside the RNG state; only "
                         "tensors and plain containers are loaded")
    if isinstance(obj, Mapping):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for value in obj:
            _check_no_arrays(value, path)


def rng_state() -> dict[str, Any]:
    """The python, numpy, torch (and CUDA) generator states as plain data: tensors, ints, floats and strings."""
    version, internal, gauss_next = random.getstate()
    name, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss_next},
        "numpy": {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key, dtype=np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators from :func:`rng_state` (tensors may sit on any device: ``map_location``)."""
    py, npy = state["python"], state["numpy"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    np.random.set_state((npy["bit_generator"], npy["key"].cpu().numpy().astype(np.uint32), npy["pos"],
                         npy["has_gauss"], npy["cached_gaussian"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def _plain_rng_state(state: Any, path: Path) -> dict[str, Any]:
    """A checkpoint's ``rng`` entry in the plain form of :func:`rng_state`; reid_robust 0.1 stored python's
    ``random.getstate()`` and numpy's ``np.random.get_state()`` tuples (the latter with a uint32 array)."""
    try:
        py, npy = state["python"], state["numpy"]
        if isinstance(py, tuple):
            version, internal, gauss_next = py
            py = {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                  "gauss_next": gauss_next}
        if isinstance(npy, tuple):
            name, key, pos, has_gauss, cached_gaussian = npy
            npy = {"bit_generator": str(name), "key": torch.from_numpy(np.asarray(key).astype(np.int64)),
                   "pos": int(pos), "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)}
        valid = (isinstance(py["state"], torch.Tensor) and isinstance(npy["key"], torch.Tensor)
                 and isinstance(state["torch"], torch.Tensor)
                 and (py["gauss_next"] is None or isinstance(py["gauss_next"], float)))
    except (KeyError, TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(f"checkpoint {path} was refused: its 'rng' entry is not a random-generator state "
                         "(python, numpy and torch states)")
    return {**state, "python": py, "numpy": npy}


def state_dict_mismatch(exc: Exception) -> str:
    """The informative line of a ``load_state_dict`` error: the first 'size mismatch', else the first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line), None)
    if detail is None:
        detail = next((line for line in lines if line.startswith(("Missing key", "Unexpected key"))),
                      lines[0] if lines else type(exc).__name__)
    return detail if len(detail) <= 300 else detail[:297] + "..."


def checkpoint_config(ckpt: Mapping[str, Any], path: str | os.PathLike) -> Config:
    """The config stored in a loaded checkpoint (a plain mapping, also from older versions), through the same
    checks as a config file: keys added since take their defaults, keys removed since are dropped with a notice
    on the ``reid_robust`` logger; a missing ``model`` or ``data`` section is one ConfigError naming the file."""
    return config_from_mapping(ckpt["config"], f"checkpoint {path}", log.warning)


def model_from_checkpoint(ckpt: Mapping[str, Any], path: str | os.PathLike, device: str | torch.device = "cpu",
                          cfg: Config | None = None) -> ReIDModel:
    """Rebuild the model of a loaded checkpoint (:func:`load_checkpoint`) and load its weights, in eval mode;
    ``cfg``: the checkpoint's config when already read (:func:`checkpoint_config`)."""
    from reid_robust.engine.builders import build_model_from_config

    cfg = cfg if cfg is not None else checkpoint_config(ckpt, path)
    model = build_model_from_config(replace(cfg.model, pretrained=None))  # the weights come from the checkpoint
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # e.g. size mismatch: the config and the weights disagree
        raise ValueError(f"checkpoint {path} does not fit the model its config describes: "
                         f"{state_dict_mismatch(exc)}") from exc
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit its model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device).eval()


def load_model_from_checkpoint(path: str | os.PathLike,
                               device: str | torch.device = "cpu") -> tuple[ReIDModel, Config]:
    """Rebuild the model a checkpoint was trained with and load its weights. Returns ``(model, config)``."""
    ckpt = load_checkpoint(path, device)
    cfg = checkpoint_config(ckpt, path)
    return model_from_checkpoint(ckpt, path, device, cfg), cfg
