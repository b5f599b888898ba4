"""Optimisation pieces against hand-computed values: the learning-rate schedule (warm-up, then cosine,
multi-step or constant), the loss parameters' own learning rate, gradient clipping."""
from __future__ import annotations

import math

import pytest
import torch

from reid_robust.config import TrainConfig, load_config
from reid_robust.engine.builders import build_optimizer, build_scheduler, lr_factor
from reid_robust.engine.steps import clip_gradients


def _cfg(*overrides) -> TrainConfig:
    """The train section of the defaults with ``overrides``: the optimiser and schedule read only it."""
    return load_config(None, list(overrides)).train


def _parts():
    torch.manual_seed(0)
    return torch.nn.Linear(2, 1, bias=False), torch.nn.Linear(1, 1, bias=False)  # model, loss module (class weights)


def test_warmup_is_linear_from_warmup_factor_to_one():
    cfg = _cfg("train.warmup_epochs=2", "train.warmup_factor=0.1", "train.scheduler=constant")
    spe = 10  # steps per epoch
    assert lr_factor(cfg, 0, spe) == pytest.approx(0.1)
    assert lr_factor(cfg, 5, spe) == pytest.approx(0.1 + 0.9 * 0.25)  # a quarter of the way (epoch 0.5 of 2)
    assert lr_factor(cfg, 10, spe) == pytest.approx(0.55)
    assert lr_factor(cfg, 19, spe) == pytest.approx(0.1 + 0.9 * 1.9 / 2)
    assert lr_factor(cfg, 20, spe) == 1.0 and lr_factor(cfg, 500, spe) == 1.0  # constant after warm-up


def test_cosine_decays_from_the_end_of_warmup_to_zero_at_the_last_epoch():
    cfg = _cfg("train.epochs=10", "train.warmup_epochs=2", "train.warmup_factor=0.01", "train.scheduler=cosine")
    spe = 4
    assert lr_factor(cfg, 0, spe) == pytest.approx(0.01)
    assert lr_factor(cfg, 2 * spe, spe) == pytest.approx(1.0)  # cosine starts where warm-up ends
    assert lr_factor(cfg, 4 * spe, spe) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))  # 2 of 8 epochs
    assert lr_factor(cfg, 6 * spe, spe) == pytest.approx(0.5)
    assert lr_factor(cfg, 6 * spe + 1, spe) == pytest.approx(0.5 * (1 + math.cos(math.pi * 4.25 / 8)))
    assert lr_factor(cfg, 10 * spe, spe) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(cfg, 12 * spe, spe) == pytest.approx(0.0, abs=1e-12)  # clamped past the end


def test_cosine_without_warmup_starts_at_one():
    cfg = _cfg("train.epochs=4", "train.warmup_epochs=0", "train.scheduler=cosine")
    assert lr_factor(cfg, 0, 5) == 1.0
    assert lr_factor(cfg, 10, 5) == pytest.approx(0.5)


def test_multistep_multiplies_by_gamma_at_each_milestone_epoch():
    cfg = _cfg("train.warmup_epochs=1", "train.warmup_factor=0.5", "train.scheduler=multistep",
               "train.milestones=[3, 5]", "train.gamma=0.1")
    spe = 10
    assert lr_factor(cfg, 5, spe) == pytest.approx(0.75)  # still warming up
    assert lr_factor(cfg, 10, spe) == 1.0
    assert lr_factor(cfg, 29, spe) == 1.0  # epoch 2.9
    assert lr_factor(cfg, 30, spe) == pytest.approx(0.1)
    assert lr_factor(cfg, 49, spe) == pytest.approx(0.1)
    assert lr_factor(cfg, 50, spe) == pytest.approx(0.01)
    assert lr_factor(cfg, 1000, spe) == pytest.approx(0.01)


def test_loss_parameters_get_their_own_learning_rate_under_the_same_schedule():
    cfg = _cfg("train.optimizer=sgd", "train.lr=0.01", "train.loss_lr=0.5", "train.warmup_epochs=1",
               "train.warmup_factor=0.1", "train.scheduler=multistep", "train.milestones=[2]", "train.gamma=0.1")
    model, loss_module = _parts()
    optimizer = build_optimizer(cfg, model, [loss_module])
    assert [g["params"] for g in optimizer.param_groups] == [[model.weight], [loss_module.weight]]
    assert optimizer.defaults["momentum"] == 0.9 and optimizer.defaults["nesterov"]
    scheduler = build_scheduler(cfg, optimizer, steps_per_epoch=4)
    expected = {0: 0.1, 1: 0.1 + 0.9 / 4, 2: 0.55, 4: 1.0, 7: 1.0, 8: 0.1, 11: 0.1}  # step -> factor
    for step in range(12):
        if step in expected:
            lrs = [g["lr"] for g in optimizer.param_groups]
            assert lrs == pytest.approx([0.01 * expected[step], 0.5 * expected[step]]), step
        optimizer.step()
        scheduler.step()


def test_loss_parameters_default_to_the_model_learning_rate():
    cfg = _cfg("train.optimizer=adamw", "train.lr=0.002", "train.warmup_epochs=0", "train.scheduler=constant")
    model, loss_module = _parts()
    optimizer = build_optimizer(cfg, model, [loss_module])
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [g["lr"] for g in optimizer.param_groups] == [0.002, 0.002]
    assert len(build_optimizer(cfg, model, [torch.nn.Identity()]).param_groups) == 1  # no loss parameters


def _with_grads(scaler=None):
    """Gradients [[3, 0]] (model) and [[4]] (loss module) from a backward, scaled by ``scaler`` if given."""
    model, loss_module = _parts()
    cfg = _cfg("train.optimizer=sgd", "train.lr=0.01", "train.loss_lr=0.5", "train.weight_decay=0")
    optimizer = build_optimizer(cfg, model, [loss_module])
    loss = 3.0 * model.weight[0, 0] + 4.0 * loss_module.weight[0, 0]  # global gradient norm over both: 5
    (scaler.scale(loss) if scaler is not None else loss).backward()
    return model, loss_module, optimizer


def test_gradient_clipping_uses_one_norm_over_model_and_loss_parameters():
    model, loss_module, optimizer = _with_grads()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    norm = clip_gradients(optimizer, scaler, 1.0)
    assert float(norm) == pytest.approx(5.0)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.6, 0.0]]))
    torch.testing.assert_close(loss_module.weight.grad, torch.tensor([[0.8]]))


def test_gradient_clipping_off_or_below_the_threshold_leaves_the_gradients():
    model, loss_module, optimizer = _with_grads()
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert clip_gradients(optimizer, scaler, 0.0) is None
    assert clip_gradients(optimizer, scaler, 10.0) == pytest.approx(5.0)
    torch.testing.assert_close(model.weight.grad, torch.tensor([[3.0, 0.0]]))
    torch.testing.assert_close(loss_module.weight.grad, torch.tensor([[4.0]]))


def test_gradient_clipping_applies_to_unscaled_amp_gradients():
    scaler = torch.amp.GradScaler("cpu", init_scale=8.0)
    model, loss_module, optimizer = _with_grads(scaler)
    torch.testing.assert_close(loss_module.weight.grad, torch.tensor([[32.0]]))  # scaled by 8
    norm = clip_gradients(optimizer, scaler, 1.0)
    assert float(norm) == pytest.approx(5.0)  # the norm of the true gradients, not of the scaled ones
    torch.testing.assert_close(model.weight.grad, torch.tensor([[0.6, 0.0]]))
    torch.testing.assert_close(loss_module.weight.grad, torch.tensor([[0.8]]))
    before = model.weight.detach().clone()
    scaler.step(optimizer)  # does not unscale a second time: an SGD step with the clipped gradient
    torch.testing.assert_close(model.weight.detach(), before - 0.01 * 1.9 * torch.tensor([[0.6, 0.0]]))
