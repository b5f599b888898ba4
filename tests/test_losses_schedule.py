"""Schedule-dependent losses get their schedule: the trainer must call ``set_progress`` every step.

Without it ProSelfLC's global trust stays at g(0) = sigmoid(-B tau) ~ 0.002 and the loss silently becomes
plain cross entropy (and PRISM's warm-up never ends when driven by steps); no value test would notice.
"""
from __future__ import annotations

import math

import pytest
from conftest import REPO, tiny_overrides

from reid_robust.engine.config import load_config
from reid_robust.engine.trainer import train
from reid_robust.losses import ProSelfLCLoss, build_loss


def test_trainer_calls_set_progress_every_step_with_increasing_steps(tiny_market_root, tmp_path, monkeypatch):
    calls: list[tuple[int, int]] = []
    original = ProSelfLCLoss.set_progress

    def spy(self, step: int, total_steps: int) -> None:
        calls.append((step, total_steps))
        original(self, step, total_steps)

    monkeypatch.setattr(ProSelfLCLoss, "set_progress", spy)
    cfg = load_config(REPO / "configs" / "quickstart.yaml", tiny_overrides(tiny_market_root, tmp_path / "run") + [
        "train.epochs=2", "loss.terms=[{name: proselflc, weight: 1.0, input: bn_feat}]"])
    train(cfg)
    steps = [step for step, _ in calls]
    totals = {total for _, total in calls}
    assert len(calls) == 4, calls  # 2 epochs x 2 batches, one call before each forward
    assert steps == sorted(set(steps)) and steps[0] == 0, steps  # strictly increasing from the first step
    assert totals == {4}, totals


def test_progress_changes_the_proselflc_target():
    """The spy above would be pointless if progress did not matter: late in training the target moves."""
    import torch

    torch.manual_seed(0)
    loss = build_loss("proselflc", num_classes=4, embedding_dim=5)
    torch.nn.init.normal_(loss.classifier.weight, std=1.0)
    x, y = torch.randn(8, 5), torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    ce = torch.nn.functional.cross_entropy(loss.classifier(x), y).item()
    assert loss(x, y).item() == pytest.approx(ce, rel=0.01)          # progress 0: ~ cross entropy
    loss.set_progress(100, 100)
    assert not math.isclose(loss(x, y).item(), ce, rel_tol=0.01)     # progress 1: the corrected target
