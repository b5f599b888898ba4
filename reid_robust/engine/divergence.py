"""NaN never hides in training: a non-finite loss, gradient norm or weight stops the run in one line naming
what diverged (the loss term, the parameter) and what is kept (the last checkpoint, as it was)."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from reid_robust.engine.builders import LossTerm
from reid_robust.engine.distributed import DistInfo

MAX_SKIPPED_STEPS = 20  # consecutive mixed-precision steps skipped for non-finite gradients: divergence
ADVICE = "lower train.lr or set train.grad_clip"


def kept(path: Path) -> str:
    """What a diverged or aborted run leaves: the last checkpoint as it was."""
    return f"{path} is kept as it was" if path.is_file() else "no checkpoint was written"


def diverged(epoch: int, it: int, what: str, kept_line: str) -> str:
    return f"training diverged at epoch {epoch + 1}, step {it + 1}: {what}; {kept_line} ({ADVICE})"


def nonfinite_loss(parts: dict[str, float], outputs: dict[str, torch.Tensor], info: DistInfo) -> str:
    """Which loss terms (and which embeddings) are not finite, e.g. "loss term triplet = nan (feat non-finite)"."""
    bad = [f"{name} = {value}" for name, value in parts.items() if not math.isfinite(value)]
    if not bad:
        return "the loss is non-finite on another rank"
    inputs = [name for name, x in outputs.items() if not bool(torch.isfinite(x.detach()).all())]
    return f"loss term {', '.join(bad)}" + (f" (embeddings {', '.join(inputs)} non-finite)" if inputs else "")


def check_gradients(optimizer: torch.optim.Optimizer, scaler: torch.amp.GradScaler, norm: torch.Tensor | None,
                    skipped: int, epoch: int, it: int, kept_line: str) -> int:
    """FloatingPointError when the gradient norm is not finite, or, with a mixed-precision scaler (which skips
    such steps and lowers its scale), after ``MAX_SKIPPED_STEPS`` consecutive skipped steps. Returns the
    number of consecutive skipped steps."""
    if norm is None:
        grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else torch.zeros(())
    if math.isfinite(float(norm)):
        return 0
    if not scaler.is_enabled():
        raise FloatingPointError(diverged(epoch, it, f"the gradient norm is {float(norm)}", kept_line))
    skipped += 1
    if skipped >= MAX_SKIPPED_STEPS:
        raise FloatingPointError(diverged(epoch, it, f"the gradients were non-finite in {skipped} consecutive "
                                          f"steps (mixed-precision scale now {scaler.get_scale():g})", kept_line))
    return skipped


def check_finite_state(model: torch.nn.Module, terms: Sequence[LossTerm], optimizer: torch.optim.Optimizer,
                       where: str, kept_line: str) -> None:
    """FloatingPointError naming the first non-finite parameter, buffer or optimiser state (nothing is saved)."""
    named = [(f"model.{k}", v) for k, v in model.state_dict().items()]
    named += [(f"loss {t.name}.{k}", v) for t in terms for k, v in t.module.state_dict().items()]
    named += [(f"optimizer state {k}", v) for st in optimizer.state.values() for k, v in st.items()]
    for name, value in named:
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise FloatingPointError(f"training diverged before the checkpoint of {where}: {name} is not finite; "
                                     f"not saving, {kept_line} ({ADVICE})")
