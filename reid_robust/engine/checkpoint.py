"""Checkpoints: atomic writes (temporary file, fsync, rename) and loading.

A checkpoint is a dict with ``model`` (state dict), ``config`` (the resolved config), ``epoch`` (epochs
completed) and, for resuming, ``optimizer``, ``scheduler``, ``scaler``, ``losses`` (loss-module states),
``rng`` and ``iteration`` (batches of the epoch already trained; PK sampling is a function of seed and epoch).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """Save with ``torch.save`` to ``path`` so that a crash never leaves a truncated file there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=False)
    except Exception as exc:  # truncated or not a torch file
        raise ValueError(f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"checkpoint {path} is not a reid_robust checkpoint (expected keys 'model' and 'config')")
    return ckpt


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def state_dict_mismatch(exc: Exception) -> str:
    """The informative line of a ``load_state_dict`` error: the first 'size mismatch', else the first line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line), None)
    if detail is None:
        detail = next((line for line in lines if line.startswith(("Missing key", "Unexpected key"))),
                      lines[0] if lines else type(exc).__name__)
    return detail if len(detail) <= 300 else detail[:297] + "..."


def load_model_from_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """Rebuild the model a checkpoint was trained with and load its weights. Returns ``(model, cfg)``."""
    from reid_robust.engine.builders import build_model_from_config

    ckpt = load_checkpoint(path, device)
    cfg = ckpt["config"]
    model_cfg = dict(cfg["model"])
    cfg = {**cfg, "model": {**model_cfg, "pretrained": None}}  # weights come from the checkpoint
    model = build_model_from_config(cfg)
    try:
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
    except RuntimeError as exc:  # e.g. size mismatch: the config and the weights disagree
        raise ValueError(f"checkpoint {path} does not fit the model its config describes: "
                         f"{state_dict_mismatch(exc)}") from exc
    if missing or unexpected:
        raise ValueError(f"checkpoint {path} does not fit its model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.to(device).eval()
    return model, ckpt["config"]
