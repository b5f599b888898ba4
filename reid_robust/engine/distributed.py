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


def resolve_device(name: str | torch.device, info: DistInfo) -> torch.device:
    """The configured device for this process; under DDP on CUDA, this rank's GPU (``cuda:<local rank>``)."""
    device = requested_device(name)
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
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


def rank_rows(num: int, info: DistInfo, batch_size: int = 1) -> tuple[int, int]:
    """This rank's consecutive share ``(start, end)`` of ``num`` rows, cut at multiples of ``batch_size`` so
    that every rank embeds exactly the batches one process would (same shapes, same kernels, same numbers);
    later ranks may get nothing. ``(0, num)`` without DDP."""
    if not info.enabled:
        return 0, num
    from reid_robust.evaluation.sharded import split_rows

    batches = split_rows(-(-num // batch_size), info.world_size) if num else []
    if info.rank >= len(batches):
        return num, num
    first, last = batches[info.rank]
    return first * batch_size, min(last * batch_size, num)


def gather_rows(local: torch.Tensor | None, info: DistInfo, dst: int = 0,
                chunk_rows: int = 16384) -> torch.Tensor | None:
    """Concatenate every rank's ``local`` [n_r, ...] in rank order onto rank ``dst``: [sum n_r, ...] there,
    None elsewhere. ``local`` None: this rank holds no rows. Each rank keeps only its own rows; the rows
    travel in padded chunks of ``chunk_rows`` (a CUDA buffer under nccl), so no rank but ``dst`` ever holds
    more than ``world x chunk_rows`` rows of another. ``local`` itself without DDP."""
    if not info.enabled:
        return local
    shape = None if local is None else (len(local), tuple(local.shape[1:]), local.dtype)
    shapes: list = [None] * info.world_size
    dist.all_gather_object(shapes, shape)
    known = [s for s in shapes if s is not None]
    if not known or any(s[1:] != known[0][1:] for s in known):
        raise ValueError(f"gather_rows: ranks hold rows of different shapes or none at all: {shapes}")
    rows = [0 if s is None else s[0] for s in shapes]
    trailing, dtype = known[0][1], known[0][2]
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    mine = local if local is not None else torch.empty((0, *trailing), dtype=dtype)
    parts: list[list[torch.Tensor]] = [[] for _ in rows]
    chunk_rows = max(1, min(chunk_rows, max(rows)))
    for start in range(0, max(rows), chunk_rows):
        piece = torch.zeros((chunk_rows, *trailing), dtype=dtype, device=device)
        sent = mine[start:start + chunk_rows]
        piece[:len(sent)] = sent.to(device)
        into = [torch.empty_like(piece) for _ in rows] if info.rank == dst else None
        dist.gather(piece, into, dst=dst)
        if into is not None:
            for r, got in enumerate(into):
                parts[r].append(got[:max(0, min(chunk_rows, rows[r] - start))].cpu())
    if info.rank != dst:
        return None
    return torch.cat([p for part in parts for p in part] or [mine.cpu()])


def broadcast_buffers(module: torch.nn.Module, info: DistInfo, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm running statistics, which DDP leaves as each rank's
    last training batch set them), so that all ranks embed with one model."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer.data, src=src)


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
