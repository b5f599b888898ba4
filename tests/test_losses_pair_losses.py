"""Tests of contrastive, multi-similarity and circle losses: hand values, loop references, PML, gradcheck."""

import math

import pytest
import torch
from losses_reference import circle, contrastive, multi_similarity

from reid_robust.losses import CircleLoss, ContrastiveLoss, MultiSimilarityLoss, build_loss
from reid_robust.losses.multi_similarity import multi_similarity_pair_weights

# three unit vectors: S01 = 0.6, S02 = 0, S12 = 0.8
X3 = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
Y3 = torch.tensor([0, 0, 1])


def test_multi_similarity_hand_computed_without_mining():
    loss = MultiSimilarityLoss(alpha=2, beta=50, base=0.5, mining=False)(X3, Y3).item()
    pos = 0.5 * math.log1p(math.exp(-0.2))
    expected = (pos + math.log1p(math.exp(-25)) / 50          # anchor 0
                + pos + math.log1p(math.exp(15)) / 50          # anchor 1
                + math.log1p(math.exp(-25) + math.exp(15)) / 50) / 3   # anchor 2: negatives only
    assert loss == pytest.approx(expected, abs=1e-12)


def test_multi_similarity_mining_hand_computed():
    # anchor 0: min positive S = 0.6, negative S = 0 -> 0 + 0.1 > 0.6 false: negative dropped;
    # max negative S = 0 -> positive 0.6 - 0.1 < 0 false: positive dropped. Anchor 0 contributes 0.
    # anchor 1: negative 0.8 kept, positive 0.6 kept. Anchor 2 has no positive: nothing mined.
    loss = MultiSimilarityLoss(alpha=2, beta=50, base=0.5, epsilon=0.1)(X3, Y3).item()
    expected = (0.5 * math.log1p(math.exp(-0.2)) + math.log1p(math.exp(15)) / 50) / 3
    assert loss == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("mining", [False, True])
def test_multi_similarity_matches_loop_reference(mining):
    torch.manual_seed(0)
    x = torch.randn(10, 5, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 4])
    loss = MultiSimilarityLoss(alpha=2, beta=10, base=0.5, epsilon=0.1, mining=mining)(x, y)
    ref = multi_similarity(x, y.tolist(), 2, 10, 0.5, 0.1 if mining else None)
    assert loss.item() == pytest.approx(ref, abs=1e-10)


def test_multi_similarity_equals_pytorch_metric_learning_float64():
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    from pytorch_metric_learning.miners import MultiSimilarityMiner

    torch.manual_seed(1)
    for _trial in range(5):
        x = torch.randn(32, 16, dtype=torch.float64)
        y = torch.randint(0, 6, (32,))
        miner = MultiSimilarityMiner(epsilon=0.1)
        ref = pml_losses.MultiSimilarityLoss(alpha=2, beta=50, base=0.5)(x, y, miner(x, y))
        ours = build_loss("multi_similarity", alpha=2, beta=50, base=0.5, epsilon=0.1)(x, y)
        assert ours.item() == pytest.approx(ref.item(), abs=1e-5)


def test_multi_similarity_pair_weights_are_the_gradient():
    torch.manual_seed(2)
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    sim = torch.nn.functional.normalize(x, dim=1) @ torch.nn.functional.normalize(x, dim=1).t()
    sim.requires_grad_(True)
    from reid_robust.losses.multi_similarity import multi_similarity_per_anchor
    from reid_robust.losses.pairwise import negative_mask, positive_mask

    pos, neg = positive_mask(y), negative_mask(y)
    multi_similarity_per_anchor(sim, pos, neg, 2.0, 50.0, 0.5).sum().backward()
    w = multi_similarity_pair_weights(sim, pos, neg, 2.0, 50.0, 0.5)
    assert torch.allclose(sim.grad.abs(), w, atol=1e-12)


def test_circle_matches_loop_reference_and_pml():
    torch.manual_seed(3)
    x = torch.randn(12, 6, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 4, 5])
    ours = CircleLoss(m=0.25, gamma=32)(x, y).item()
    assert ours == pytest.approx(circle(x, y.tolist(), 0.25, 32), abs=1e-10)
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    # PML zeroes anchors without pairs and averages the non-zero ones: the same mean over valid anchors
    assert ours == pytest.approx(pml_losses.CircleLoss(m=0.25, gamma=32)(x, y).item(), abs=1e-8)


def test_circle_large_gamma_is_finite():
    x = torch.randn(8, 4, requires_grad=True)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = CircleLoss(m=0.25, gamma=1024)(x, y)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_contrastive_hand_computed_and_loop_reference():
    # 1-D unnormalised: positives (0,1) d=1; negatives (0,2) d=3, (1,2) d=2; margins 0.5 / 2.5
    x = torch.tensor([[0.0], [1.0], [3.0]])
    loss = ContrastiveLoss(pos_margin=0.5, neg_margin=2.5, normalize=False)(x, Y3).item()
    assert loss == pytest.approx(0.5 + 0.5, abs=1e-6)  # positive hinge 0.5; only (1,2) violates: 0.5
    torch.manual_seed(4)
    x = torch.randn(10, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 3, 3, 4])
    ours = ContrastiveLoss(pos_margin=0.1, neg_margin=1.2)(x, y).item()
    assert ours == pytest.approx(contrastive(x, y.tolist(), 0.1, 1.2), abs=1e-10)
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    ref = pml_losses.ContrastiveLoss(pos_margin=0.1, neg_margin=1.2)(x, y).item()
    assert ours == pytest.approx(ref, abs=1e-8)


@pytest.mark.parametrize("name,params", [
    ("contrastive", {"pos_margin": 0.1, "neg_margin": 1.5}),
    ("multi_similarity", {"beta": 10.0}),
])
def test_gradcheck(name, params):
    torch.manual_seed(5)
    loss = build_loss(name, **params)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), eps=1e-6, atol=1e-5)


def test_hardness_weights_favour_the_hard_pair():
    # sample 3 sits on top of class 0 although labelled 1: it is the hardest sample of the batch
    x = torch.tensor([[1.0, 0.0], [0.95, 0.1], [0.0, 1.0], [0.99, 0.05], [0.1, 0.95], [-1.0, 0.0]])
    y = torch.tensor([0, 0, 1, 1, 1, 2])
    for loss in [MultiSimilarityLoss(mining=False), CircleLoss(gamma=32), build_loss("ice"),
                 build_loss("ranked_list")]:
        loss(x, y)
        w = loss.last_sample_weights
        assert int(w.argmax()) in (0, 1, 3), (type(loss).__name__, w)
        assert w[3] > w[5]


def test_circle_gradient_treats_alpha_as_constant():
    """Circle's alphas are detached: its gradient equals that of the loss with alphas frozen at x0,
    whose own gradient is checked numerically."""
    torch.manual_seed(6)
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x0 = torch.randn(6, 3, dtype=torch.float64)
    m, gamma = 0.25, 16.0
    from reid_robust.losses.pairwise import negative_mask, positive_mask

    pos, neg = positive_mask(y), negative_mask(y)
    s0 = torch.nn.functional.normalize(x0, dim=1) @ torch.nn.functional.normalize(x0, dim=1).t()
    a_p, a_n = torch.relu(1 + m - s0), torch.relu(s0 + m)

    def frozen(x):
        xn = torch.nn.functional.normalize(x, dim=1)
        s = xn @ xn.t()
        lp = torch.where(pos, -gamma * a_p * (s - 1 + m), torch.full_like(s, -1e300))
        ln = torch.where(neg, gamma * a_n * (s - m), torch.full_like(s, -1e300))
        return torch.nn.functional.softplus(torch.logsumexp(lp, 1) + torch.logsumexp(ln, 1)).mean()

    x = x0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(frozen, (x,), eps=1e-6, atol=1e-5)
    g_ref, = torch.autograd.grad(frozen(x), x)
    g, = torch.autograd.grad(CircleLoss(m=m, gamma=gamma)(x, y), x)
    assert torch.allclose(g, g_ref, atol=1e-10)


@pytest.mark.parametrize("name,params", [
    ("contrastive", {}), ("triplet", {"normalize": True}), ("multi_similarity", {}), ("circle", {}),
    ("ranked_list", {}), ("ice", {}),
])
def test_normalised_losses_are_scale_invariant(name, params):
    torch.manual_seed(7)
    x = torch.randn(12, 8)
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    loss = build_loss(name, **params)
    assert loss(x * 1e4, y).item() == pytest.approx(loss(x, y).item(), rel=1e-4, abs=1e-6)
    assert loss(x * 1e-4, y).item() == pytest.approx(loss(x, y).item(), rel=1e-4, abs=1e-6)
