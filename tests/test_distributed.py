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


def test_rank_rows_cut_whole_batches_in_order():
    from reid_robust.engine.distributed import rank_rows

    assert rank_rows(10, DistInfo(), 3) == (0, 10)
    assert [rank_rows(10, DistInfo(r, 2), 3) for r in (0, 1)] == [(0, 6), (6, 10)]  # batches 0-1 | 2-3
    assert [rank_rows(2, DistInfo(r, 3), 4) for r in (0, 1, 2)] == [(0, 2), (2, 2), (2, 2)]  # one batch
    assert [rank_rows(0, DistInfo(r, 2), 4) for r in (0, 1)] == [(0, 0), (0, 0)]


def _eval_worker(rank: int, world: int, init_file: str, ckpt: str, root: str, out_dir: str) -> None:
    from reid_robust.data import build_dataset, build_transforms
    from reid_robust.engine.checkpoint import load_model_from_checkpoint
    from reid_robust.engine.evaluate import evaluate_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        model, cfg = load_model_from_checkpoint(ckpt)
        if rank == 1:  # DDP leaves each rank its own BatchNorm statistics: rank 0's must be used everywhere
            for name, buffer in model.named_buffers():
                if name.endswith("running_mean"):
                    buffer.add_(0.5)
        seen = []
        model.register_forward_hook(lambda module, inputs, output: seen.append(len(inputs[0])))
        splits = build_dataset("market1501", root)
        metrics = evaluate_model(model, splits, cfg.eval, cfg.data, build_transforms(cfg.data.transforms, train=False),
                                 "cpu", progress=False, info=DistInfo(rank, world))
    finally:
        dist.destroy_process_group()
    torch.save({"metrics": metrics, "embedded": sum(seen)}, Path(out_dir) / f"eval{rank}.pt")


@pytest.mark.skipif(sys.platform == "win32", reason="file:// rendezvous and fork-free spawn tested on POSIX")
def test_evaluation_on_two_ranks_equals_one_process(tmp_path):
    """Each rank embeds a share of query and gallery, rank 0 evaluates; every rank gets the metrics of one
    process evaluating rank 0's model (the trainer's evaluation under DDP)."""
    from test_embed import make_checkpoint

    from reid_robust.data import build_dataset, build_transforms
    from reid_robust.engine.checkpoint import load_model_from_checkpoint
    from reid_robust.engine.evaluate import evaluate_model

    ckpt, root, _ = make_checkpoint(tmp_path, num_identities=4, dim=8)
    mp.spawn(_eval_worker, args=(2, str(tmp_path / "rendezvous"), str(ckpt), str(root), str(tmp_path)), nprocs=2,
             join=True)
    model, cfg = load_model_from_checkpoint(ckpt)
    splits = build_dataset("market1501", root)
    alone = evaluate_model(model, splits, cfg.eval, cfg.data, build_transforms(cfg.data.transforms, train=False),
                           "cpu", progress=False)
    total = len(splits.query) + len(splits.gallery)
    r0, r1 = (torch.load(tmp_path / f"eval{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["embedded"] + r1["embedded"] == total and 0 < r1["embedded"] < total  # a share each
    for r in (r0, r1):
        assert r["metrics"].keys() == alone.keys()
        for key, value in alone.items():
            assert r["metrics"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key


@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's rendezvous is tested on POSIX")
def test_torchrun_embedding_gathers_one_npz_in_input_order(tmp_path):
    """reid-embed under torchrun with 2 gloo processes: one .npz, the images in input order, features within
    1e-5 of one process embedding them."""
    import subprocess

    import numpy as np
    from test_embed import make_checkpoint

    from reid_robust.engine.embed import Embedder
    from reid_robust.evaluation.report import load_features

    ckpt, root, _ = make_checkpoint(tmp_path, num_identities=4, dim=8)
    listing = tmp_path / "list.txt"
    paths = sorted(str(p) for p in (root / "bounding_box_test").glob("*.jpg"))[::-1]  # not sorted: order kept
    listing.write_text("\n".join(paths))
    out = tmp_path / "gallery.npz"
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo)}
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(repo / "tools" / "embed.py"), "--checkpoint", str(ckpt), "--images", str(listing),
                          "--out", str(out), "--device", "cpu", "--batch-size", "3", "--no-progress"],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert res.stdout.count("wrote ") == 1  # rank 0 writes the one file
    saved = load_features(out)
    assert saved.paths == paths and len(paths) > 6
    alone = Embedder.from_checkpoint(ckpt, "cpu", batch_size=3, progress=False).embed(paths)
    np.testing.assert_allclose(saved.feats, alone.feats, rtol=0, atol=1e-5)
