"""torch.distributed helpers on 2 CPU processes (gloo): replica check, loss-gradient averaging, gathering."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from reid_robust.engine import distributed as distributed_module
from reid_robust.engine.distributed import (
    DistInfo,
    any_rank,
    backend_for,
    gather_with_grad,
    gathered_loss_factor,
    init_distributed,
    replica_divergence,
)
from reid_robust.engine.steps import average_loss_gradients


class _Term:
    def __init__(self, module: torch.nn.Module):
        self.module = module


def _gather_problem():
    torch.manual_seed(3)
    model, classifier = torch.nn.Linear(5, 4), torch.nn.Linear(4, 3, bias=False)
    return model, classifier, torch.randn(8, 5), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])


def _gather_loss(feats, labels, classifier):
    from reid_robust.losses import build_loss

    triplet = build_loss("triplet", margin=0.3)
    return triplet(feats, labels) + torch.nn.functional.cross_entropy(classifier(feats), labels)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    info = DistInfo(rank=rank, world_size=world)
    results = {}
    try:
        torch.manual_seed(0)
        layer = torch.nn.Linear(3, 2)
        results["same"] = replica_divergence([layer], info)
        if rank == 1:
            with torch.no_grad():
                layer.weight[0, 1] += 0.5
        results["perturbed"] = replica_divergence([layer], info)

        # Ctrl-C seen by one rank only: every rank stops (the trainer's per-step agreement)
        results["interrupt_on_rank0"] = any_rank(rank == 0, info)
        results["interrupt_on_rank1"] = any_rank(rank == 1, info)
        results["no_interrupt"] = any_rank(False, info)

        # loss-gradient averaging: rank 0 has a gradient of 2 for `a`, rank 1 none; `b` has none anywhere
        a = torch.nn.Parameter(torch.zeros(2))
        b = torch.nn.Parameter(torch.zeros(2))
        holder = torch.nn.Module()
        holder.a, holder.b = a, b
        if rank == 0:
            (2.0 * a.sum()).backward()
        average_loss_gradients([_Term(holder)], info)
        results["a_grad"] = a.grad.tolist()
        results["b_grad"] = None if b.grad is None else b.grad.tolist()

        # gathering keeps the gradient of the local part only
        x = torch.full((2, 1), float(rank + 1), requires_grad=True)
        g = gather_with_grad(x, info)
        g.sum().backward()
        results["gathered"] = g.detach().reshape(-1).tolist()
        results["x_grad"] = x.grad.reshape(-1).tolist()

        # DDP + a loss on gathered embeddings (a pair loss and a classifier) = one process on the global batch
        model, classifier, images, labels = _gather_problem()
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        local = slice(4 * rank, 4 * rank + 4)
        feats = gather_with_grad(ddp(images[local]), info)
        factor = gathered_loss_factor(info, gathered=True)
        (_gather_loss(feats, labels, classifier) * factor).backward()
        average_loss_gradients([_Term(classifier)], info, factor)
        results["model_grad"] = model.weight.grad.clone()
        results["classifier_grad"] = classifier.weight.grad.clone()
    finally:
        dist.destroy_process_group()
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


@pytest.mark.skipif(sys.platform == "win32", reason="file:// rendezvous and fork-free spawn tested on POSIX")
def test_two_gloo_processes(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "rendezvous"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    for r in (r0, r1):
        assert r["same"] == 0.0
        assert r["perturbed"] == pytest.approx(0.5)  # every rank learns the largest drift
        assert r["interrupt_on_rank0"] is True and r["interrupt_on_rank1"] is True
        assert r["no_interrupt"] is False
        assert r["a_grad"] == [1.0, 1.0]  # (2 + 0) / 2 on both ranks
        assert r["b_grad"] is None  # nobody had a gradient: left alone, no optimiser step
        assert r["gathered"] == [1.0, 1.0, 2.0, 2.0]
        assert r["x_grad"] == [1.0, 1.0]
    model, classifier, images, labels = _gather_problem()
    _gather_loss(model(images), labels, classifier).backward()  # one process, the global batch of 8
    for r in (r0, r1):
        torch.testing.assert_close(r["model_grad"], model.weight.grad, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["classifier_grad"], classifier.weight.grad, rtol=1e-5, atol=1e-6)


def test_single_process_is_a_no_op():
    info = DistInfo()
    layer = torch.nn.Linear(2, 2)
    assert replica_divergence([layer], info) == 0.0
    x = torch.ones(3, 2)
    assert gather_with_grad(x, info) is x
    assert any_rank(True, info) is True and any_rank(False, info) is False


def test_backend_follows_the_configured_device():
    assert backend_for("cpu") == backend_for(torch.device("cpu")) == "gloo"
    assert backend_for("cuda") == backend_for("cuda:1") == backend_for(torch.device("cuda", 0)) == "nccl"


@pytest.mark.parametrize("device, cuda, backend", [("cpu", True, "gloo"), ("auto", True, "nccl"),
                                                   ("auto", False, "gloo"), ("cuda", True, "nccl")])
def test_init_distributed_uses_the_devices_backend(monkeypatch, device, cuda, backend):
    # device=cpu under torchrun on a GPU machine must not pick nccl
    chosen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed_module.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(distributed_module.dist, "init_process_group", lambda backend: chosen.append(backend))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "set_device", lambda index: None)
    assert init_distributed(device) == DistInfo(rank=1, world_size=2, local_rank=1)
    assert chosen == [backend]


def test_init_distributed_refuses_cuda_without_cuda(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(distributed_module.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available"):
        init_distributed("cuda")
