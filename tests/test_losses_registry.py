"""Every registered loss: build, forward, backward, edge cases; registry errors."""

import copy
import math

import pytest
import torch

from reid_robust.losses import LOSSES, build_loss

NUM_CLASSES = 6
DIM = 8


def make(name: str, **params):
    if LOSSES[name].needs_num_classes:
        params.update(num_classes=NUM_CLASSES, embedding_dim=DIM)
    return build_loss(name, **params)


def check_finite(loss_fn, x, y, sample_weight=None):
    x = x.clone().requires_grad_(True)
    loss = loss_fn(x, y, sample_weight=sample_weight)
    assert loss.dim() == 0 and loss.dtype in (torch.float32, torch.float64)
    assert torch.isfinite(loss), loss
    loss.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for p in loss_fn.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    w = loss_fn.last_sample_weights
    if sample_weight is not None and not bool((sample_weight > 0).any()):
        assert loss.item() == 0.0 and w is None  # every image removed
    elif loss_fn.weights_meaning is None:
        assert w is None
    else:
        assert w is not None and w.shape == (x.shape[0],) and not w.requires_grad
        assert torch.isfinite(w).all() and w.mean().item() == pytest.approx(1.0, abs=1e-5)
    return loss


PK_LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_build_forward_backward(name):
    torch.manual_seed(0)
    loss_fn = make(name)
    loss_fn.set_progress(5, 10)
    x = torch.randn(12, DIM)
    check_finite(loss_fn, x, PK_LABELS)
    check_finite(loss_fn, x, PK_LABELS)  # second call: stateful losses (memory) take another path


EDGE_CASES = {
    "one_per_class": (lambda: torch.randn(6, DIM), torch.arange(6)),
    "single_class": (lambda: torch.randn(5, DIM), torch.zeros(5, dtype=torch.long)),
    "identical": (lambda: torch.ones(6, DIM), torch.tensor([0, 0, 1, 1, 2, 2])),
    "zero_vectors": (lambda: torch.zeros(6, DIM), torch.tensor([0, 0, 1, 1, 2, 2])),
    "scaled_1e4": (lambda: torch.randn(6, DIM) * 1e4, torch.tensor([0, 0, 1, 1, 2, 2])),
    "scaled_1e20": (lambda: torch.randn(6, DIM) * 1e20, torch.tensor([0, 0, 1, 1, 2, 2])),  # |x|^2 overflows f32
    "scaled_1e-20": (lambda: torch.randn(6, DIM) * 1e-20, torch.tensor([0, 0, 1, 1, 2, 2])),  # |x|^2 underflows
    "single_sample": (lambda: torch.randn(1, DIM), torch.tensor([3])),
}


# losses whose every term needs an anchor with both a positive and a negative
NEED_POSITIVE_AND_NEGATIVE = {"triplet", "multi_similarity", "circle", "ice"}


@pytest.mark.parametrize("case", sorted(EDGE_CASES))
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_edge_cases_are_finite(name, case):
    torch.manual_seed(1)
    make_x, y = EDGE_CASES[case]
    loss_fn = make(name)
    loss = check_finite(loss_fn, make_x(), y)
    no_pair = case == "single_sample"
    no_triplet = case in ("one_per_class", "single_class") and name in NEED_POSITIVE_AND_NEGATIVE
    if (no_pair or no_triplet) and not LOSSES[name].needs_num_classes:
        assert loss.item() == 0.0  # no valid pair: an exact zero, still connected to the graph


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_half_inputs_under_autocast_compute_in_float32(name):
    torch.manual_seed(2)
    loss_fn = make(name)
    ref = copy.deepcopy(loss_fn)  # stateful losses (memory) must start from the same state
    x = torch.randn(12, DIM).to(torch.bfloat16).requires_grad_(True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = loss_fn(x, PK_LABELS)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad.float()).all()
    expected = ref(x.detach().float(), PK_LABELS)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4, abs=1e-5)


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as err:
        build_loss("tripplet")
    assert "tripplet" in str(err.value) and "triplet" in str(err.value) and "cross_entropy" in str(err.value)


def test_unknown_and_missing_parameters_are_named():
    with pytest.raises(ValueError, match="margn"):
        build_loss("triplet", margn=0.3)
    with pytest.raises(ValueError, match="num_classes"):
        build_loss("cross_entropy", embedding_dim=4)


def test_every_class_declares_its_needs():
    for name, cls in LOSSES.items():
        assert isinstance(cls.needs_num_classes, bool), name
        assert cls.weights_meaning in (None, "reliability", "hardness", "emphasis"), name


def test_duplicate_registration_and_non_loss_classes_are_rejected():
    from reid_robust.losses import register_loss

    with pytest.raises(ValueError, match="already registered"):
        register_loss("triplet", LOSSES["triplet"])
    with pytest.raises(TypeError, match="MetricLoss"):
        register_loss("not_a_loss", torch.nn.Linear)
    assert "not_a_loss" not in LOSSES


def test_loss_parameters_and_set_progress_validation():
    from reid_robust.losses import loss_parameters

    assert loss_parameters("triplet") == {"margin": 0.3, "mining": "batch_hard", "soft": False, "normalize": False}
    loss = build_loss("triplet")
    loss.set_progress(3, 4)
    assert loss.progress == 0.75
    with pytest.raises(ValueError, match="step"):
        loss.set_progress(-1, 4)


def test_bad_inputs_are_reported_with_the_loss_name():
    loss = build_loss("circle")
    with pytest.raises(ValueError, match=r"CircleLoss: embeddings must have shape \[N, D\]"):
        loss(torch.randn(4), torch.arange(4))
    with pytest.raises(ValueError, match="integer"):
        loss(torch.randn(4, 2), torch.zeros(4))


@pytest.mark.parametrize("name", sorted(n for n, c in LOSSES.items() if c.weights_meaning))
def test_raw_weight_mean_is_reported_beside_the_mean_one_weights(name):
    torch.manual_seed(3)
    loss_fn = make(name)
    loss_fn(torch.randn(12, DIM), PK_LABELS)
    w = loss_fn.last_sample_weights
    assert w.shape == (12,) and float(w.mean()) == pytest.approx(1.0, abs=1e-5)
    raw = loss_fn.last_raw_weight_mean
    assert raw is not None and math.isfinite(raw) and raw > 0


def test_raw_weight_mean_of_osm_caa_is_the_mean_attention():
    from reid_robust.losses.weighting import class_aware_attention, true_class_probability

    torch.manual_seed(4)
    loss_fn = make("osm_caa")
    x = torch.randn(12, DIM)
    loss_fn(x, PK_LABELS)
    p_true, _ = true_class_probability(loss_fn.logits(x, PK_LABELS), PK_LABELS)
    expected = class_aware_attention(p_true, loss_fn.sigma_caa).mean()
    assert loss_fn.last_raw_weight_mean == pytest.approx(float(expected), rel=1e-5)
