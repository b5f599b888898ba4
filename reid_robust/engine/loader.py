"""The training batches: a PK sampler (distributed under DDP), per-epoch seeds that a resumed run re-derives,
DataLoader workers that leave Ctrl-C to the main process, and worker errors as the one line they are."""
from __future__ import annotations

import random
import re
import signal
from collections.abc import Generator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from reid_robust.config import SamplerConfig
from reid_robust.data.samplers import DistributedPKSampler, PKSampler
from reid_robust.engine.distributed import DistInfo


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The RNG seed of one epoch on one rank: a resumed run re-derives exactly the same streams."""
    return (seed * 1_000_003 + epoch * 1009 + rank) % 2**31


def steps_per_epoch(sampler: SamplerConfig, num_images: int) -> int:
    """``batches_per_epoch``, or one pass over the training images (at least one step)."""
    return sampler.batches_per_epoch or max(1, num_images // (sampler.num_identities * sampler.num_instances))


def build_sampler(labels: np.ndarray, sampler: SamplerConfig, seed: int, num_batches: int,
                  info: DistInfo, keep: np.ndarray | None = None) -> PKSampler:
    """P identities x K images per batch, ``num_batches`` per epoch; each rank draws its own under DDP.
    ``keep``: the images that may be drawn (self-cleaning's ``drop``; default all)."""
    p, k = sampler.num_identities, sampler.num_instances
    if info.enabled:
        return DistributedPKSampler(labels, p, k, seed=seed, num_batches=num_batches, rank=info.rank,
                                    world_size=info.world_size, augment_seeds=True, keep=keep)
    return PKSampler(labels, p, k, seed=seed, num_batches=num_batches, augment_seeds=True, keep=keep)


def epoch_loader(dataset: Dataset, sampler: PKSampler, seed: int, epoch: int, skip: int, info: DistInfo,
                 num_workers: int, pin_memory: bool) -> DataLoader:
    """The loader of ``epoch`` with every RNG seeded for it; ``skip`` batches already trained (a run resumed
    mid-epoch after Ctrl-C) are not drawn again."""
    seed_everything(epoch_seed(seed, epoch, info.rank))
    generator = torch.Generator()
    generator.manual_seed(epoch_seed(seed, epoch, info.rank))
    sampler.set_epoch(epoch)
    if skip:
        sampler.load_state_dict({"seed": seed, "epoch": epoch, "batches_done": skip})
    return DataLoader(dataset, batch_sampler=sampler, num_workers=num_workers, worker_init_fn=worker_init,
                      generator=generator, pin_memory=pin_memory)


def worker_init(worker_id: int) -> None:
    """Seed a DataLoader worker and make it ignore SIGINT: a terminal's Ctrl-C reaches every process of the
    group, and only the main process handles it (it finishes the step, saves and stops the workers); a
    worker would otherwise run the trainer's handler it inherited and report the interrupt once more."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the trainer's handler: the main process stops them
    s = torch.initial_seed() % 2**32
    random.seed(s)
    np.random.seed(s)


def batches(loader: DataLoader) -> Generator[dict[str, Any], None, None]:
    """Iterate ``loader``; an error re-raised from a DataLoader worker (its message holds the worker's whole
    traceback) becomes the one-line error it is with ``num_workers=0``. Closing stops the workers."""
    iterator = iter(loader)
    try:
        while True:
            try:
                batch = next(iterator)
            except StopIteration:
                return
            except Exception as exc:
                raise unwrap_worker_error(exc) from None
            yield batch
    finally:
        # join the workers now: an error's traceback keeps the iterator alive until interpreter exit, where
        # multiprocessing's atexit join met torch's SIGCHLD handler and printed a traceback after the one line
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        del iterator


def unwrap_worker_error(exc: Exception) -> Exception:
    """``Caught ImageReadError in DataLoader worker process 0. Original Traceback ... ImageReadError: msg``
    -> ``ImageReadError(msg)``; any other exception unchanged."""
    text = str(exc)
    if not re.match(r"Caught \w+ in DataLoader worker process", text):
        return exc
    last = [line for line in text.splitlines() if line.strip()][-1]
    match = re.match(r"^[\w.]+: (.*)$", last)
    message = match.group(1) if match else last
    try:
        return type(exc)(message)
    except Exception:
        return RuntimeError(message)
