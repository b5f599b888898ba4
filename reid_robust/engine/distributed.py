"""torch.distributed helpers: process-group setup from torchrun's environment, gathering, barriers."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def backend_for(device: str | torch.device) -> str:
    """The process-group backend for the training device: nccl for CUDA, gloo for everything else (CPU)."""
    kind = device.type if isinstance(device, torch.device) else str(device).split(":", 1)[0]
    return "nccl" if kind == "cuda" else "gloo"


def requested_device(name: str | torch.device) -> torch.device:
    """The configured ``device`` (``auto``: CUDA when available, else CPU); CUDA asked for but missing is a
    ValueError. The one place that reads the setting, for the backend choice and the trainer's device."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"device {name!r} is not a device name (expected auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device '{name}' requested but CUDA is not available (use device=cpu)")
    return device


def init_distributed(device: str | torch.device = "auto") -> DistInfo:
    """Join the process group torchrun describes, with the backend of the configured ``device`` (gloo on
    CPU, nccl on CUDA; ``auto``: CUDA when available); a no-op for one process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = backend_for(requested_device(device))
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(rank, world_size, local_rank)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


def gather_with_grad(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate ``x`` [n, ...] from every rank into [world*n, ...]; gradient flows to the local part only."""
    if not info.enabled:
        return x
    parts = [torch.zeros_like(x) for _ in range(info.world_size)]
    dist.all_gather(parts, x.detach().contiguous())
    parts[info.rank] = x
    return torch.cat(parts, dim=0)


def gathered_loss_factor(info: DistInfo, gathered: bool) -> float:
    """Factor for a loss computed on embeddings gathered from every rank (``gather_with_grad``).

    Each rank then holds the loss of the global batch, but its backward reaches only its own images, so the
    DDP mean over ranks of the model gradients is ``1/world`` of the single-process gradient of that batch;
    multiplying the loss by ``world`` restores it. 1 without gathering or without DDP.
    """
    return float(info.world_size) if gathered and info.enabled else 1.0


def any_rank(flag: bool, info: DistInfo, device: str | torch.device | None = None) -> bool:
    """True on every rank when ``flag`` is true on at least one: an all-reduce (MAX) of one int.

    The trainer's Ctrl-C flag goes through this after every step, so that all ranks stop after the same
    iteration (a rank breaking alone would leave the others waiting in the next collective). ``device``:
    where the tensor lives (CUDA for nccl). ``flag`` itself without DDP.
    """
    if not info.enabled:
        return bool(flag)
    agreed = torch.tensor([int(bool(flag))], dtype=torch.int32, device=device)
    dist.all_reduce(agreed, op=dist.ReduceOp.MAX)
    return bool(agreed.item())


def broadcast_object(obj, info: DistInfo, src: int = 0):
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def replica_divergence(modules, info: DistInfo) -> float:
    """Largest absolute difference between this run's parameters and rank 0's, over all ranks.

    DDP keeps the model's parameters identical by averaging gradients; loss parameters (class weights) are
    averaged by the trainer. This checks the result: 0.0 when every replica holds rank 0's parameters.
    Buffers (BatchNorm running statistics) are local by design and are not compared.
    """
    if not info.enabled:
        return 0.0
    params = [p.detach().reshape(-1) for m in modules for p in m.parameters()]
    if not params:
        return 0.0
    flat = torch.cat(params).double()
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)
