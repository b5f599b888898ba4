"""What a training run is made of: the run's fixed context (config, ranks, device, folder), its data, and the
state the loop advances and a checkpoint stores (model, loss terms, optimiser, schedule, scaler, position)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from reid_robust.cleaning.decisions import CleaningState
from reid_robust.config import Config
from reid_robust.data.records import DatasetSplits
from reid_robust.data.samplers import PKSampler
from reid_robust.engine import checkpoint as ckpt_io
from reid_robust.engine.builders import LossTerm
from reid_robust.engine.distributed import DistInfo
from reid_robust.engine.divergence import check_finite_state, kept


@dataclass(frozen=True)
class RunContext:
    """Fixed for the whole run: the (absolute-path) config, this process's rank, its device, the folder."""

    cfg: Config
    info: DistInfo
    device: torch.device
    out: Path
    started: float  # when this session began (a resumed run's TrainState counts the earlier ones too)

    @property
    def last_path(self) -> Path:
        return self.out / "checkpoints" / "last.pth"

    @property
    def best_path(self) -> Path:
        return self.out / "checkpoints" / "best.pth"

    @property
    def csv_path(self) -> Path:
        return self.out / "log.csv"


@dataclass(frozen=True)
class TrainData:
    """The splits, the training labels before and after noise (``labels``: what the losses see, renumbered
    under open-set noise), the training dataset and the test transform."""

    splits: DatasetSplits
    clean: np.ndarray
    noisy: np.ndarray
    labels: np.ndarray
    num_classes: int
    train_set: Dataset
    test_transform: Any


@dataclass
class TrainState:
    """What the loop advances and a checkpoint stores. ``epoch``: epochs completed; ``iteration``: steps done
    in epoch ``epoch`` (non-zero only in a run stopped by Ctrl-C mid-epoch)."""

    model: nn.Module
    terms: list[LossTerm]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    sampler: PKSampler
    steps_per_epoch: int
    total_steps: int
    net: nn.Module | None = None  # the model as the step calls it (DDP-wrapped under DDP)
    epoch: int = 0
    iteration: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    untrained: dict[str, Any] | None = None
    final: dict[str, Any] | None = None
    started: float = field(default_factory=time.time)  # train_time_s spans every session of a resumed run
    skipped: int = 0  # consecutive mixed-precision steps skipped for non-finite gradients
    cleaning: CleaningState | None = None  # per-image keep mask, labels and weights (``train.cleaning``)

    def modules(self) -> list[nn.Module]:
        """The model and the loss modules (class weights): everything that trains."""
        return [self.model, *(t.module for t in self.terms)]

    def train_mode(self) -> None:
        for module in self.modules():
            module.train()

    def checkpoint(self, config: dict[str, Any]) -> dict[str, Any]:
        """The plain-data checkpoint of this state (``config``: ``cfg.to_dict()``)."""
        return {"model": self.model.state_dict(), "config": config, "epoch": self.epoch,
                "iteration": self.iteration, "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                "losses": [t.module.state_dict() for t in self.terms], "rng": ckpt_io.rng_state(),
                "history": self.history, "best": self.best, "untrained": self.untrained,
                "elapsed_s": time.time() - self.started,
                "cleaning": None if self.cleaning is None else self.cleaning.to_plain()}


def make_scaler(device: torch.device, amp: bool) -> torch.amp.GradScaler:
    """Loss scaling for float16 autocast on CUDA; disabled otherwise (bfloat16 on CPU needs none)."""
    return torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda")


def save_checkpoint(state: TrainState, run: RunContext, path: Path) -> None:
    """Refuse non-finite weights (the last finite checkpoint stays), then write ``path`` atomically; a second
    Ctrl-C during the write leaves ``path`` as it was."""
    where = f"epoch {state.epoch + (state.iteration > 0)}"
    check_finite_state(state.model, state.terms, state.optimizer, where, kept(run.last_path))
    try:
        ckpt_io.atomic_save(state.checkpoint(run.cfg.to_dict()), path)
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"interrupted again while writing {path.name}: stopped without saving; "
                                f"{kept(path)}") from None
