"""Per-image sample weights (``loss(x, y, sample_weight)``) for every registered loss: None is the unweighted
call, equal weights give the unweighted loss, a weight of 0 removes an image exactly, loop references with
weights, hand-computed weighted means, gradchecks, refusals and the all-zero case."""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from losses_reference import (
    circle,
    contrastive,
    multi_similarity,
    scaled,
    smoothed_ce,
    triplet_batch_all,
    triplet_batch_hard,
    triplet_semi_hard,
)
from test_losses_registry import DIM, NUM_CLASSES, make

from reid_robust.losses import LOSSES

PK_LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
# every registered loss with its defaults, plus the variants that take another weighted path
VARIANTS = [(name, {}) for name in sorted(LOSSES)] + [
    ("triplet", {"mining": "batch_all"}), ("triplet", {"mining": "semi_hard"}),
    ("triplet", {"mining": "batch_all", "soft": True}), ("multi_similarity", {"mining": False}),
    ("osm_caa", {"normalization": "pairs", "confidence_weighted_id": True}),
    ("prism", {"pair_loss": "multi_similarity"}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in p.items())}" if p else n for n, p in VARIANTS]


def primed(name: str, params: dict, dtype=torch.float64):
    """A float64 loss at progress 5/10 whose state (PRISM's memory) has seen one batch."""
    torch.manual_seed(0)
    loss_fn = make(name, **params).to(dtype)
    loss_fn.set_progress(5, 10)
    loss_fn(torch.randn(12, DIM, dtype=dtype), PK_LABELS)
    return loss_fn


def batch(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(12, DIM, generator=gen, dtype=torch.float64)
    w = 0.2 + torch.rand(12, generator=gen, dtype=torch.float64)
    return x, w


def value_and_grads(loss_fn, x, y, w=None):
    """Loss value, gradient w.r.t. x and the parameters' gradients (a fresh copy of the loss and its state)."""
    loss_fn = copy.deepcopy(loss_fn)
    x = x.clone().requires_grad_(True)
    loss = loss_fn(x, y) if w is None else loss_fn(x, y, sample_weight=w)
    loss.backward()
    params = [p.grad if p.grad is not None else torch.zeros_like(p) for p in loss_fn.parameters()]
    return loss.detach(), x.grad, params


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_none_is_the_unweighted_call_bit_for_bit(name, params):
    loss_fn = primed(name, params, torch.float32)
    x = torch.randn(12, DIM)
    a, b = value_and_grads(loss_fn, x, PK_LABELS), value_and_grads(loss_fn, x, PK_LABELS, None)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert all(torch.equal(p, q) for p, q in zip(a[2], b[2]))


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
@pytest.mark.parametrize("c", [1e-3, 1.0, 7.5, 1e30])
def test_equal_weights_give_the_unweighted_loss(name, params, c):
    loss_fn = primed(name, params)
    x, _ = batch()
    ref = value_and_grads(loss_fn, x, PK_LABELS)
    got = value_and_grads(loss_fn, x, PK_LABELS, torch.full((12,), c, dtype=torch.float64))
    assert got[0].item() == pytest.approx(ref[0].item(), rel=1e-9, abs=1e-12)
    assert torch.allclose(got[1], ref[1], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
@pytest.mark.parametrize("removed", [0, 7])
def test_a_zero_weight_removes_the_image_exactly(name, params, removed):
    """w_i = 0 gives the loss, and the other rows' gradients, of the batch without image i (same state);
    image i's own gradient is exactly 0."""
    loss_fn = primed(name, params)
    x, w = batch(2)
    w[removed] = 0.0
    keep = torch.arange(12) != removed
    got = value_and_grads(loss_fn, x, PK_LABELS, w)
    ref = value_and_grads(loss_fn, x[keep], PK_LABELS[keep], w[keep])
    assert got[0].item() == pytest.approx(ref[0].item(), rel=1e-9, abs=1e-12)
    assert torch.allclose(got[1][keep], ref[1], rtol=1e-8, atol=1e-12)
    assert torch.count_nonzero(got[1][removed]) == 0
    for p, q in zip(got[2], ref[2]):
        assert torch.allclose(p, q, rtol=1e-8, atol=1e-12)


# losses whose own weights are stop-gradient factors (circle's alphas, OSM/CAA, RLL softmax weights, DM/IMAE
# rescaling): their backward is by design not the numerical derivative, with or without sample weights
STOP_GRADIENT = {"circle", "osm_caa", "ranked_list", "dm", "imae"}


@pytest.mark.parametrize("name,params", [v for v in VARIANTS if v[0] not in STOP_GRADIENT],
                         ids=[i for i, v in zip(IDS, VARIANTS) if v[0] not in STOP_GRADIENT])
def test_gradcheck_with_weights(name, params):
    assert STOP_GRADIENT <= set(LOSSES)
    loss_fn = primed(name, params).eval()  # eval: PRISM's memory and window stay fixed between evaluations
    x, w = batch(3)
    w[5] = 0.0
    x = x.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss_fn(e, PK_LABELS, sample_weight=w), (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("name,params", VARIANTS, ids=IDS)
def test_weights_change_the_loss(name, params):
    """The weights are used: uneven weights give another value than the unweighted loss."""
    loss_fn = primed(name, params)
    x, w = batch(4)
    w[:6] = 0.05
    assert value_and_grads(loss_fn, x, PK_LABELS, w)[0].item() != pytest.approx(
        value_and_grads(loss_fn, x, PK_LABELS)[0].item(), rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_all_zero_weights_give_an_exact_zero_and_touch_no_state(name):
    loss_fn = primed(name, {})
    state = copy.deepcopy(loss_fn.state_dict())
    x = batch()[0].requires_grad_(True)
    loss = loss_fn(x, PK_LABELS, sample_weight=torch.zeros(12))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.count_nonzero(x.grad) == 0
    assert all(p.grad is None or torch.count_nonzero(p.grad) == 0 for p in loss_fn.parameters())
    assert all(torch.equal(v, state[k]) for k, v in loss_fn.state_dict().items() if isinstance(v, torch.Tensor))
    assert loss_fn.last_sample_weights is None


BAD_WEIGHTS = [
    (torch.ones(11), r"sample_weight must have shape \[N\] = \[12\], got \(11,\)"),
    (torch.ones(12, 1), r"sample_weight must have shape \[N\] = \[12\], got \(12, 1\)"),
    (torch.tensor([1.0] * 11 + [-0.5]), r"sample_weight must be >= 0, got -0.5 at index 11"),
    (torch.tensor([1.0, float("nan")] + [1.0] * 10), r"sample_weight must be finite, got nan at index 1"),
    (torch.tensor([float("inf")] + [1.0] * 11), r"sample_weight must be finite, got inf at index 0"),
    (torch.ones(12, dtype=torch.bool), r"sample_weight must be real numbers, got torch.bool"),
]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_bad_weights_are_refused_in_one_line(name):
    loss_fn = make(name)
    cls = LOSSES[name].__name__
    for weights, message in BAD_WEIGHTS:
        with pytest.raises(ValueError, match=rf"^{cls}: {message}$"):
            loss_fn(torch.randn(12, DIM), PK_LABELS, sample_weight=weights)
    with pytest.raises(TypeError, match=rf"^{cls}: sample_weight must be a tensor"):
        loss_fn(torch.randn(12, DIM), PK_LABELS, sample_weight=[1.0] * 12)


def test_integer_weights_and_weights_on_the_embeddings_device_are_accepted():
    x = torch.randn(12, DIM)
    loss_fn = make("triplet")
    assert loss_fn(x, PK_LABELS, sample_weight=torch.ones(12, dtype=torch.long)).item() == pytest.approx(
        loss_fn(x, PK_LABELS).item(), rel=1e-6)


# ---- loop references with weights (tests/losses_reference.py) ----

LABELS9 = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 3])


def ref_batch(seed: int):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 4, generator=gen, dtype=torch.float64)
    w = 0.1 + 2.0 * torch.rand(9, generator=gen, dtype=torch.float64)
    w[4] = 0.0
    return x, w


@pytest.mark.parametrize("mining", ["batch_hard", "batch_all", "semi_hard"])
@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_triplet_matches_the_weighted_loop_reference(mining, soft, seed):
    x, w = ref_batch(seed)
    ref = {"batch_hard": triplet_batch_hard, "batch_all": triplet_batch_all, "semi_hard": triplet_semi_hard}[mining]
    got = make("triplet", margin=0.4, mining=mining, soft=soft)(x, LABELS9, sample_weight=w)
    assert got.item() == pytest.approx(ref(x, LABELS9.tolist(), 0.4, soft, w.tolist()), abs=1e-10)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pair_losses_match_the_weighted_loop_references(seed):
    x, w = ref_batch(seed)
    y, wl = LABELS9.tolist(), w.tolist()
    got = make("contrastive", pos_margin=0.1, neg_margin=1.2)(x, LABELS9, sample_weight=w)
    assert got.item() == pytest.approx(contrastive(x, y, 0.1, 1.2, weights=wl), abs=1e-10)
    for mining in (False, True):
        got = make("multi_similarity", beta=10.0, mining=mining)(x, LABELS9, sample_weight=w)
        ref = multi_similarity(x, y, 2.0, 10.0, 0.5, 0.1 if mining else None, weights=wl)
        assert got.item() == pytest.approx(ref, abs=1e-10)
    got = make("circle", m=0.25, gamma=32.0)(x, LABELS9, sample_weight=w)
    assert got.item() == pytest.approx(circle(x, y, 0.25, 32.0, weights=wl), abs=1e-10)


# ---- classification losses: hand-computed weighted means of per-sample losses ----

def per_sample(name: str, logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Each sample's loss, written from the formulas in docs/losses.md, one sample at a time."""
    out = []
    for z, y in zip(logits, labels.tolist()):
        p = torch.softmax(z, dim=0)[y].item()
        if name == "cross_entropy":
            out.append(smoothed_ce(z.view(1, -1), torch.tensor([y]), 0.1))
        elif name == "mae":
            out.append(2.0 - 2.0 * p)
        elif name == "gce":
            out.append((1.0 - p ** 0.7) / 0.7)
        else:  # sce, alpha 0.1, beta 1, log 0 = -4
            out.append(0.1 * -math.log(p) + 1.0 * 4.0 * (1.0 - p))
    return out


@pytest.mark.parametrize("name", ["cross_entropy", "mae", "gce", "sce"])
def test_classification_losses_are_the_weighted_mean(name):
    loss_fn = primed(name, {})
    x, w = batch(5)
    w[3] = 0.0
    logits = loss_fn.logits(x, PK_LABELS).detach()
    values = per_sample(name, logits, PK_LABELS)
    expected = sum(a * b for a, b in zip(w.tolist(), values)) / w.sum().item()
    assert loss_fn(x, PK_LABELS, sample_weight=w).item() == pytest.approx(expected, abs=1e-10)


def test_proselflc_is_the_weighted_mean_of_its_corrected_terms():
    loss_fn = primed("proselflc", {})
    x, w = batch(6)
    logits = loss_fn.logits(x, PK_LABELS).detach()
    probs = torch.softmax(logits, dim=1)
    eps = loss_fn.trust(probs)
    target = (1 - eps[:, None]) * F.one_hot(PK_LABELS, NUM_CLASSES) + eps[:, None] * probs
    terms = -(target * torch.log_softmax(logits, dim=1)).sum(dim=1)
    expected = (w * terms).sum() / w.sum()
    assert loss_fn(x, PK_LABELS, sample_weight=w).item() == pytest.approx(expected.item(), abs=1e-10)


@pytest.mark.parametrize("name", ["dm", "imae"])
def test_example_weighting_multiplies_its_weights_by_the_sample_weights(name):
    """Each example's logit-gradient L1 norm is w_i DM_i / sum_j w_j DM_j."""
    from reid_robust.losses.weighting import emphasis_density_weights, true_class_probability

    loss_fn = primed(name, {})
    x, w = batch(7)
    logits = loss_fn.logits(x, PK_LABELS).detach().requires_grad_(True)
    p_true, _ = true_class_probability(logits, PK_LABELS)
    dm = emphasis_density_weights(p_true, loss_fn.lam, loss_fn.beta)
    from reid_robust.losses.example_weighting import gradient_rescaled_cross_entropy

    scaled_w = torch.tensor(scaled(w.tolist(), 12), dtype=torch.float64)
    gradient_rescaled_cross_entropy(logits, PK_LABELS, dm * scaled_w).backward()
    expected = dm * w / (dm * w).sum()
    assert torch.allclose(logits.grad.abs().sum(dim=1), expected, atol=1e-9)
    # the module applies the same combination to its own logits
    a = loss_fn(x, PK_LABELS, sample_weight=w)
    b = gradient_rescaled_cross_entropy(loss_fn.logits(x, PK_LABELS), PK_LABELS, dm * scaled_w)
    assert a.item() == pytest.approx(b.item(), abs=1e-12)


def test_prism_weight_zero_images_never_enter_the_memory():
    loss_fn = primed("prism", {})
    before = int(loss_fn.memory_ptr)
    x, w = batch(8)
    w[:4] = 0.0
    loss_fn(x, PK_LABELS, sample_weight=w)
    entered = int(loss_fn.memory_ptr) - before
    assert entered == int(loss_fn.last_kept_mask.sum()) and not bool(loss_fn.last_kept_mask[:4].any())
