"""PK batch sampling (Hermans et al., "In Defense of the Triplet Loss", 2017): P identities x K images.

Each batch holds P distinct identities with K images each. Identities are visited in a seeded round-robin
(a fresh permutation each pass), and each identity's images in a seeded shuffled cycle; an identity with fewer
than K images contributes all of them plus draws with replacement to fill K. The whole epoch is a function of
(seed, epoch), so `set_epoch` plus `state_dict()/load_state_dict()` let a resumed run continue with exactly the
batches it would have seen. With ``augment_seeds=True`` every index comes with its own augmentation seed, a
function of (seed, epoch, batch, position in the global batch), which `ImageDataset` uses to seed its
pipeline: augmentation then depends neither on the number of DataLoader workers nor on the number of DDP
ranks, and a run resumed mid-epoch sees the very images (augmented alike) that it would have seen.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from numpy.typing import ArrayLike


class PKSampler:
    """Batch sampler yielding lists of P*K dataset indices (use as `DataLoader(batch_sampler=...)`).

    labels: [N] identity label of each dataset index (the possibly noisy training labels).
    num_batches: batches per epoch; default N // (P*K) (at least 1), so an epoch sees about N images.
    augment_seeds: yield ``(index, seed)`` pairs instead of indices (see the module docstring).
    keep: [N] bool, the dataset indices that may be drawn (self-cleaning's ``drop``); default all. An identity
    without a kept image is never drawn; one with fewer than K kept images is filled with replacement.
    """

    def __init__(self, labels: ArrayLike, num_identities: int, num_instances: int, seed: int = 0,
                 num_batches: int | None = None, augment_seeds: bool = False, keep: ArrayLike | None = None):
        labels = np.asarray(labels)
        if labels.ndim != 1 or labels.size == 0:
            raise ValueError(f"PKSampler: labels must be a non-empty 1-D sequence, got shape {labels.shape}")
        if num_identities < 1 or num_instances < 1:
            raise ValueError(f"PKSampler: P and K must be >= 1, got P={num_identities}, K={num_instances}")
        kept = np.arange(labels.size) if keep is None else np.flatnonzero(_keep_mask(keep, labels.size))
        identities, inverse = np.unique(labels[kept], return_inverse=True)
        if len(identities) < num_identities:
            raise ValueError(
                f"PKSampler: a batch needs P={num_identities} distinct identities but the labels hold only "
                f"{len(identities)}"
            )
        self.num_identities = int(num_identities)
        self.num_instances = int(num_instances)
        self.seed = int(seed)
        self.batch_size = self.num_identities * self.num_instances
        default = max(1, kept.size // self.batch_size)
        self.num_batches = int(num_batches) if num_batches is not None else default
        if self.num_batches < 1:
            raise ValueError(f"PKSampler: num_batches must be >= 1, got {num_batches}")
        order = kept[np.argsort(inverse, kind="stable")]
        bounds = np.cumsum(np.bincount(inverse))[:-1]
        self._members = np.split(order, bounds)  # dataset indices of each identity, ascending
        self.augment_seeds = bool(augment_seeds)
        self.epoch = 0
        self._batches_done = 0  # batches already yielded in `self.epoch`
        self._skip = 0  # batches to skip on the next iteration (set by load_state_dict)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields (call once per epoch)."""
        self.epoch = int(epoch)
        self._batches_done = 0
        self._skip = 0

    def __len__(self) -> int:
        return self.num_batches

    def global_batches(self) -> Iterator[list[list[int]]]:
        """Yield this epoch's batches as P lists (one per identity) of K dataset indices."""
        rng = np.random.default_rng([self.seed, self.epoch])
        num_ids = len(self._members)
        id_queue: list[int] = []
        pools = [np.empty(0, dtype=np.int64) for _ in range(num_ids)]
        for _ in range(self.num_batches):
            chosen: list[int] = []
            while len(chosen) < self.num_identities:
                if not id_queue:
                    id_queue = rng.permutation(num_ids).tolist()
                ident = id_queue.pop()
                if ident not in chosen:  # after a refill, an id already in this batch waits for the next pass
                    chosen.append(ident)
                else:
                    id_queue.insert(0, ident)
            batch = []
            for ident in chosen:
                members = self._members[ident]
                if len(members) < self.num_instances:  # every image once, the rest drawn with replacement
                    extra = rng.choice(members, self.num_instances - len(members), replace=True)
                    batch.append(np.concatenate([rng.permutation(members), extra]).tolist())
                    continue
                if len(pools[ident]) < self.num_instances:  # next shuffled pass; leftovers first, no repeats
                    fresh = rng.permutation(members)
                    repeat = np.isin(fresh, pools[ident])
                    pools[ident] = np.concatenate([pools[ident], fresh[~repeat], fresh[repeat]])
                batch.append(pools[ident][: self.num_instances].tolist())
                pools[ident] = pools[ident][self.num_instances:]
            yield batch

    def _select(self, batch: list[list]) -> list:
        return [index for group in batch for index in group]

    def _with_seeds(self, batch: list[list[int]], position: int) -> list[list[tuple[int, int]]]:
        """Pair each index of the global batch with a seed drawn from (seed, epoch, batch position)."""
        seeds = iter(np.random.SeedSequence([self.seed, self.epoch, position]).generate_state(self.batch_size))
        return [[(index, int(next(seeds))) for index in group] for group in batch]

    def __iter__(self) -> Iterator[list]:
        skip, self._skip = self._skip, 0
        self._batches_done = skip
        for position, batch in enumerate(self.global_batches()):
            if position < skip:
                continue
            self._batches_done = position + 1
            yield self._select(self._with_seeds(batch, position) if self.augment_seeds else batch)

    def state_dict(self) -> dict:
        """{"seed", "epoch", "batches_done"}: enough to resume mid-epoch.

        `batches_done` counts batches handed out by this sampler; a DataLoader with workers prefetches ahead,
        so a trainer should overwrite it with the number of steps it actually finished in this epoch.
        """
        return {"seed": self.seed, "epoch": self.epoch, "batches_done": self._batches_done}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next iteration yields the epoch's batches after the first `batches_done`."""
        if int(state["seed"]) != self.seed:
            raise ValueError(f"PKSampler: state was saved with seed {state['seed']}, this sampler has {self.seed}")
        done = int(state["batches_done"])
        if not 0 <= done <= self.num_batches:
            raise ValueError(f"PKSampler: batches_done={done} outside 0..{self.num_batches}")
        self.epoch = int(state["epoch"])
        self._batches_done = done
        self._skip = done


def _keep_mask(keep: ArrayLike, n: int) -> np.ndarray:
    mask = np.asarray(keep)
    if mask.dtype != bool or mask.shape != (n,):
        raise ValueError(f"PKSampler: keep must be a bool mask of shape [{n}], got {mask.dtype} {mask.shape}")
    if not mask.any():
        raise ValueError("PKSampler: keep leaves no image to sample")
    return mask


class DistributedPKSampler(PKSampler):
    """PK sampling across `world_size` ranks: every rank draws the same global P x K batch (same seed) and
    rank r keeps identities r, r + world, r + 2*world, ... of it, i.e. P/world identities x K images."""

    def __init__(self, labels: ArrayLike, num_identities: int, num_instances: int, seed: int = 0,
                 num_batches: int | None = None, rank: int = 0, world_size: int = 1, augment_seeds: bool = False,
                 keep: ArrayLike | None = None):
        super().__init__(labels, num_identities, num_instances, seed, num_batches, augment_seeds, keep)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"DistributedPKSampler: need 0 <= rank < world_size, got rank={rank}, world={world_size}")
        if num_identities % world_size:
            raise ValueError(
                f"DistributedPKSampler: P={num_identities} identities must divide evenly over {world_size} ranks"
            )
        self.rank = int(rank)
        self.world_size = int(world_size)

    def _select(self, batch: list[list]) -> list:
        return [index for group in batch[self.rank:: self.world_size] for index in group]
