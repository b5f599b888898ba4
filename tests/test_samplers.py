"""PK and distributed PK samplers: composition, determinism, resume, rank partition."""
from collections import Counter

import numpy as np
import pytest

from reid_robust.data import DistributedPKSampler, PKSampler

# 6 identities; identity 5 has a single image (sampled with replacement), identity 4 has 3 < K
LABELS = np.array([0] * 8 + [1] * 6 + [2] * 5 + [3] * 4 + [4] * 3 + [5])


def batches(sampler, epoch=0):
    sampler.set_epoch(epoch)
    return [list(b) for b in sampler]


def test_batch_composition_p_by_k():
    sampler = PKSampler(LABELS, num_identities=3, num_instances=4, seed=0, num_batches=20)
    out = batches(sampler)
    assert len(out) == len(sampler) == 20
    for batch in out:
        assert len(batch) == 12
        counts = Counter(LABELS[batch].tolist())
        assert len(counts) == 3 and set(counts.values()) == {4}
        for ident in counts:  # distinct images; an identity with n < K images shows all n of them
            group = [i for i in batch if LABELS[i] == ident]
            assert len(set(group)) == min(int((LABELS == ident).sum()), 4)


def test_identities_visited_evenly_and_all_images_seen():
    sampler = PKSampler(LABELS, num_identities=3, num_instances=2, seed=1, num_batches=30)
    out = batches(sampler)
    visits = Counter(LABELS[i] for batch in out for i in batch[::2])
    assert set(visits.values()) == {15}  # 30 batches * 3 ids / 6 identities, round-robin passes
    assert {i for batch in out for i in batch} == set(range(len(LABELS)))


def test_default_length_covers_dataset():
    sampler = PKSampler(LABELS, num_identities=2, num_instances=2)
    assert len(sampler) == len(LABELS) // 4 == len(batches(sampler))


def test_deterministic_from_seed_and_epoch():
    a = PKSampler(LABELS, 3, 4, seed=7, num_batches=5)
    b = PKSampler(LABELS, 3, 4, seed=7, num_batches=5)
    assert batches(a, 0) == batches(b, 0)
    assert batches(a, 1) == batches(b, 1)
    assert batches(a, 0) != batches(a, 1)
    assert batches(a, 0) != batches(PKSampler(LABELS, 3, 4, seed=8, num_batches=5), 0)


def test_resume_continues_identically():
    full = batches(PKSampler(LABELS, 3, 4, seed=3, num_batches=8), epoch=2)
    first = PKSampler(LABELS, 3, 4, seed=3, num_batches=8)
    first.set_epoch(2)
    iterator = iter(first)
    seen = [next(iterator) for _ in range(3)]
    state = first.state_dict()
    assert state == {"seed": 3, "epoch": 2, "batches_done": 3}
    resumed = PKSampler(LABELS, 3, 4, seed=3, num_batches=8)
    resumed.load_state_dict(state)
    assert seen + list(resumed) == full
    assert list(resumed) == full  # afterwards the epoch starts from its beginning again


def test_resume_rejects_other_seed():
    state = PKSampler(LABELS, 3, 4, seed=3).state_dict()
    with pytest.raises(ValueError, match="seed 3"):
        PKSampler(LABELS, 3, 4, seed=4).load_state_dict(state)


def test_too_few_identities_is_an_error():
    with pytest.raises(ValueError, match="P=7 distinct identities.*only 6"):
        PKSampler(LABELS, 7, 2)


def test_distributed_ranks_partition_the_global_batch():
    world = 3
    glob = batches(PKSampler(LABELS, 6, 2, seed=5, num_batches=6))
    ranks = [batches(DistributedPKSampler(LABELS, 6, 2, seed=5, num_batches=6, rank=r, world_size=world))
             for r in range(world)]
    for step, global_batch in enumerate(glob):
        groups = [global_batch[2 * j: 2 * j + 2] for j in range(6)]  # P groups of K
        for r in range(world):
            expected = [i for g in groups[r::world] for i in g]
            assert ranks[r][step] == expected
        assert sorted(i for r in range(world) for i in ranks[r][step]) == sorted(global_batch)
        ids_per_rank = [set(LABELS[ranks[r][step]].tolist()) for r in range(world)]
        assert all(len(s) == 2 for s in ids_per_rank)
        assert not set.intersection(*ids_per_rank)


def test_distributed_requires_divisible_p():
    with pytest.raises(ValueError, match="divide evenly over 4 ranks"):
        DistributedPKSampler(LABELS, 6, 2, rank=0, world_size=4)
    with pytest.raises(ValueError, match="rank=2"):
        DistributedPKSampler(LABELS, 6, 2, rank=2, world_size=2)


def test_augmentation_seeds_belong_to_the_global_batch_not_to_the_rank():
    single = PKSampler(LABELS, num_identities=2, num_instances=4, seed=5, num_batches=4, augment_seeds=True)
    ranks = [DistributedPKSampler(LABELS, num_identities=2, num_instances=4, seed=5, num_batches=4, rank=r,
                                  world_size=2, augment_seeds=True) for r in (0, 1)]
    whole = batches(single, epoch=2)
    parts = [batches(r, epoch=2) for r in ranks]
    for b, (p0, p1) in zip(whole, zip(*parts)):
        assert sorted(b) == sorted(p0 + p1)  # same (index, seed) pairs, split over the ranks
        assert len({seed for _, seed in b}) == len(b)  # a seed per image of the batch
    plain = PKSampler(LABELS, num_identities=2, num_instances=4, seed=5, num_batches=4)
    assert [[i for i, _ in b] for b in whole] == batches(plain, epoch=2)  # same batches as without seeds
    assert batches(single, epoch=3) != whole


def test_keep_mask_leaves_dropped_images_out_and_fills_small_identities_with_replacement():
    keep = np.ones(len(LABELS), dtype=bool)
    keep[[0, 1, 2, 3, 4, 5]] = False          # identity 0 keeps 2 of its 8 images (< K = 4)
    keep[np.flatnonzero(LABELS == 3)] = False  # identity 3 loses every image: never drawn
    sampler = PKSampler(LABELS, num_identities=3, num_instances=4, seed=0, num_batches=30, keep=keep)
    drawn = [i for batch in batches(sampler) for i in batch]
    assert set(drawn) <= set(np.flatnonzero(keep).tolist())
    assert 3 not in set(LABELS[drawn].tolist())
    for batch in batches(sampler, epoch=1):
        counts = Counter(LABELS[batch].tolist())
        assert set(counts.values()) == {4}  # an under-filled identity still gives K images (with replacement)
        if 0 in counts:
            assert {i for i in batch if LABELS[i] == 0} == {6, 7}


def test_keep_all_is_the_sampler_without_a_mask():
    plain = PKSampler(LABELS, 3, 4, seed=5, num_batches=10)
    masked = PKSampler(LABELS, 3, 4, seed=5, num_batches=10, keep=np.ones(len(LABELS), dtype=bool))
    assert batches(plain, 2) == batches(masked, 2)


@pytest.mark.parametrize("keep, message", [(np.ones(3, dtype=bool), "shape"), (np.ones(len(LABELS)), "bool"),
                                           (np.zeros(len(LABELS), dtype=bool), "no image")])
def test_bad_keep_mask_is_refused(keep, message):
    with pytest.raises(ValueError, match=message):
        PKSampler(LABELS, 3, 4, keep=keep)
