"""Tests of the triplet loss: hand values, loop references, PML equivalence, gradcheck."""

import pytest
import torch
from losses_reference import triplet_batch_all, triplet_batch_hard, triplet_semi_hard

from reid_robust.losses import TripletLoss, build_loss


def test_batch_hard_hand_computed_on_a_line():
    # anchors 0..3 at 0, 1, 3, 5; only anchor 2 violates: d_ap = 2, d_an = 2 -> 0.3; mean over 4 anchors
    x = torch.tensor([[0.0], [1.0], [3.0], [5.0]])
    y = torch.tensor([0, 0, 1, 1])
    assert TripletLoss(margin=0.3)(x, y).item() == pytest.approx(0.075, abs=1e-6)


@pytest.mark.parametrize("mining", ["batch_hard", "batch_all", "semi_hard"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("normalize", [False, True])
def test_matches_loop_reference(mining, soft, normalize):
    torch.manual_seed(1)
    x = torch.randn(9, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])
    loss = TripletLoss(margin=0.4, mining=mining, soft=soft, normalize=normalize)(x, y)
    xr = torch.nn.functional.normalize(x, dim=1) if normalize else x
    ref = {"batch_hard": lambda: triplet_batch_hard(xr, y.tolist(), 0.4, soft),
           "batch_all": lambda: triplet_batch_all(xr, y.tolist(), 0.4, soft),
           "semi_hard": lambda: triplet_semi_hard(xr, y.tolist(), 0.4, soft)}[mining]()
    assert loss.item() == pytest.approx(ref, abs=1e-9)


def test_batch_hard_equals_pytorch_metric_learning_float64():
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    from pytorch_metric_learning.distances import LpDistance
    from pytorch_metric_learning.miners import BatchHardMiner
    from pytorch_metric_learning.reducers import MeanReducer

    torch.manual_seed(2)
    for trial in range(5):
        x = torch.randn(24, 16, dtype=torch.float64) * (1 + trial)
        y = torch.randint(0, 5, (24,))
        y[-1] = 7  # one identity with a single sample: it has no positive and must be dropped
        distance = LpDistance(normalize_embeddings=False)
        miner = BatchHardMiner(distance=distance)
        ref_loss = pml_losses.TripletMarginLoss(margin=0.3, distance=distance, reducer=MeanReducer())
        ref = ref_loss(x, y, miner(x, y))
        ours = build_loss("triplet", margin=0.3, mining="batch_hard", normalize=False)(x, y)
        assert ours.item() == pytest.approx(ref.item(), abs=1e-5)


def test_gradcheck_all_mining_modes():
    torch.manual_seed(3)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    for mining in ["batch_hard", "batch_all", "semi_hard"]:
        for soft in [False, True]:
            loss = TripletLoss(margin=0.5, mining=mining, soft=soft, normalize=True)
            x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
            assert torch.autograd.gradcheck(lambda e, f=loss: f(e, y), (x,), eps=1e-6, atol=1e-5)


def test_no_valid_triplet_gives_connected_zero():
    x = torch.randn(3, 4, requires_grad=True)
    for y in [torch.tensor([0, 1, 2]), torch.tensor([5, 5, 5])]:
        for mining in ["batch_hard", "batch_all", "semi_hard"]:
            loss = TripletLoss(mining=mining)(x, y)
            assert loss.item() == 0.0 and loss.requires_grad
            loss.backward()


def test_identical_embeddings_give_margin_and_finite_gradient():
    x = torch.ones(4, 3, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1])
    loss = TripletLoss(margin=0.3)(x, y)
    assert loss.item() == pytest.approx(0.3, abs=1e-5)
    loss.backward()
    assert torch.isfinite(x.grad).all()


def test_invalid_parameters_raise():
    with pytest.raises(ValueError, match="mining"):
        TripletLoss(mining="hardest")
    with pytest.raises(ValueError, match="margin"):
        TripletLoss(margin=-1.0)
    with pytest.raises(ValueError, match="labels"):
        TripletLoss()(torch.randn(4, 2), torch.tensor([0, 1]))
