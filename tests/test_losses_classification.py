"""Noise-robust classification baselines MAE, GCE and SCE: hand-computed values, limits, gradients, errors."""

import math

import pytest
import torch
from losses_reference import smoothed_ce

from reid_robust.losses import build_loss, generalized_cross_entropy, mean_absolute_error, symmetric_cross_entropy

# logits (log 3, 0) with label 0: p_y = 3/4; logits (0, 0) with label 1: p_y = 1/2
LOGITS = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]], dtype=torch.float64)
LABELS = torch.tensor([0, 1])


def with_identity_classifier(name: str, **params):
    """The loss with classifier W = I (2 classes, dimension 2): its logits are the embeddings themselves."""
    loss = build_loss(name, num_classes=2, embedding_dim=2, **params).double()
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.eye(2))
    return loss


def test_mae_by_hand():
    # 2 - 2 p_y: 2 - 1.5 = 0.5 and 2 - 1 = 1; mean 0.75
    assert mean_absolute_error(LOGITS, LABELS).item() == pytest.approx(0.75, abs=1e-12)
    assert with_identity_classifier("mae")(LOGITS, LABELS).item() == pytest.approx(0.75, abs=1e-12)


def test_gce_by_hand_and_its_limits():
    # 0.75^0.7 = 0.817604, 0.5^0.7 = 0.615572: rows (1 - 0.817604) / 0.7 = 0.260566 and 0.549183
    expected = ((1 - 0.75 ** 0.7) / 0.7 + (1 - 0.5 ** 0.7) / 0.7) / 2
    assert expected == pytest.approx((0.260566 + 0.549183) / 2, abs=1e-6)
    assert with_identity_classifier("gce")(LOGITS, LABELS).item() == pytest.approx(expected, abs=1e-12)
    # q = 1 is MAE / 2; q -> 0 tends to cross entropy
    assert generalized_cross_entropy(LOGITS, LABELS, 1.0).item() == pytest.approx(
        mean_absolute_error(LOGITS, LABELS).item() / 2, abs=1e-12)
    assert generalized_cross_entropy(LOGITS, LABELS, 1e-6).item() == pytest.approx(
        smoothed_ce(LOGITS, LABELS, 0.0), abs=1e-5)


def test_sce_by_hand():
    # alpha CE + beta RCE, RCE = -A (1 - p_y) = 4 (1 - p_y): row 0 0.1 log(4/3) + 1, row 1 0.1 log 2 + 2
    expected = (0.1 * math.log(4 / 3) + 4 * 0.25 + 0.1 * math.log(2.0) + 4 * 0.5) / 2
    assert expected == pytest.approx(1.5490414, abs=1e-7)
    assert with_identity_classifier("sce")(LOGITS, LABELS).item() == pytest.approx(expected, abs=1e-12)
    # alpha 1, beta 0 is cross entropy; the authors' code clamps the label at 1e-4 (A = log 1e-4)
    assert symmetric_cross_entropy(LOGITS, LABELS, 1.0, 0.0, -4.0).item() == pytest.approx(
        smoothed_ce(LOGITS, LABELS, 0.0), abs=1e-12)
    code = symmetric_cross_entropy(LOGITS, LABELS, 0.0, 1.0, math.log(1e-4)).item()
    assert code == pytest.approx(-math.log(1e-4) * 0.375, abs=1e-12)


@pytest.mark.parametrize("name", ["mae", "gce", "sce"])
def test_float64_gradcheck_through_the_classifier(name):
    torch.manual_seed(0)
    loss = build_loss(name, num_classes=3, embedding_dim=4).double()
    torch.nn.init.normal_(loss.classifier.weight, std=1.0)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 2, 1])
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), eps=1e-6, atol=1e-6)
    assert loss.classifier.bias is None and not loss.needs_positives


def test_mae_gradient_is_cross_entropy_gradient_scaled_by_two_p():
    """MAE's logit gradient is CE's scaled by 2 p_y: a confidently mislabeled row (p_y ~ 0) barely moves."""
    z = torch.tensor([[6.0, 0.0, 0.0], [0.5, 0.0, 0.0]], dtype=torch.float64, requires_grad=True)
    y = torch.tensor([1, 0])
    mean_absolute_error(z, y).backward()
    z_ce = z.detach().clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(z_ce, y).backward()
    p_y = torch.softmax(z.detach(), dim=1).gather(1, y.view(-1, 1))
    assert torch.allclose(z.grad, 2 * p_y * z_ce.grad, atol=1e-12)


def test_bad_parameters_are_refused():
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        build_loss("gce", num_classes=2, embedding_dim=2, q=0.0)
    with pytest.raises(ValueError, match="alpha and beta"):
        build_loss("sce", num_classes=2, embedding_dim=2, alpha=0.0, beta=0.0)
    with pytest.raises(ValueError, match="log_zero must be < 0"):
        build_loss("sce", num_classes=2, embedding_dim=2, log_zero=0.0)
    with pytest.raises(ValueError, match="gce: q must be finite, got nan"):
        build_loss("gce", num_classes=2, embedding_dim=2, q=float("nan"))
