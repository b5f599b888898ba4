"""Tests of the label-smoothed cross entropy (BoT form, eps/K over all K classes)."""

import math

import pytest
import torch
from losses_reference import smoothed_ce

from reid_robust.losses import CrossEntropyLoss, label_smoothing_cross_entropy


def test_hand_computed_uniform_logits():
    # zero logits: log p_c = -log K for every class, so the loss is log K whatever epsilon is
    logits = torch.zeros(2, 4)
    y = torch.tensor([0, 3])
    assert label_smoothing_cross_entropy(logits, y, 0.1).item() == pytest.approx(math.log(4))


def test_hand_computed_two_classes():
    # logits (log 3, 0): p = (0.75, 0.25); label 0, eps 0.2, K 2: q = (0.9, 0.1)
    logits = torch.tensor([[math.log(3.0), 0.0]], dtype=torch.float64)
    v = label_smoothing_cross_entropy(logits, torch.tensor([0]), 0.2).item()
    assert v == pytest.approx(-(0.9 * math.log(0.75) + 0.1 * math.log(0.25)))


def test_matches_loop_reference_and_torch_form():
    torch.manual_seed(0)
    logits = torch.randn(6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (6,))
    for eps in [0.0, 0.1, 0.5]:
        v = label_smoothing_cross_entropy(logits, y, eps).item()
        assert v == pytest.approx(smoothed_ce(logits, y, eps), abs=1e-10)
        # torch's label_smoothing uses the same eps/K form
        t = torch.nn.functional.cross_entropy(logits, y, label_smoothing=eps).item()
        assert v == pytest.approx(t, abs=1e-10)


def previous_label_smoothing_cross_entropy(logits, labels, epsilon):
    """The hand-written form used before torch's ``label_smoothing`` (kept as the reference)."""
    log_probs = torch.log_softmax(logits, dim=1)
    nll = -log_probs.gather(1, labels.view(-1, 1)).squeeze(1)
    if epsilon == 0:
        return nll.mean()
    uniform = -log_probs.mean(dim=1)
    return ((1.0 - epsilon) * nll + epsilon * uniform).mean()


FIXED_LOGITS = {
    "random": torch.randn(16, 7, generator=torch.Generator().manual_seed(3)) * 3,
    "confident": torch.tensor([[30.0, -30.0, 0.0], [0.0, 0.0, 80.0], [-50.0, 50.0, 49.0]]),
    "large": torch.tensor([[1e4, -1e4, 3e3], [2e3, 2e3, -2e3]]),
}
FIXED_LABELS = {"random": torch.arange(16) % 7, "confident": torch.tensor([1, 2, 0]), "large": torch.tensor([1, 0])}


@pytest.mark.parametrize("case", sorted(FIXED_LOGITS))
@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3, 0.9])
def test_value_and_gradient_equal_the_previous_form_on_fixed_float32_logits(case, eps):
    logits, labels = FIXED_LOGITS[case], FIXED_LABELS[case]
    x_new = logits.clone().requires_grad_(True)
    x_old = logits.clone().requires_grad_(True)
    new = label_smoothing_cross_entropy(x_new, labels, eps)
    old = previous_label_smoothing_cross_entropy(x_old, labels, eps)
    assert torch.isfinite(new) and abs(new.item() - old.item()) <= 1e-6 * max(1.0, abs(old.item()))
    new.backward()
    old.backward()
    assert torch.allclose(x_new.grad, x_old.grad, rtol=0, atol=1e-6)


def test_module_value_is_torchs_label_smoothed_cross_entropy_of_its_logits():
    torch.manual_seed(5)
    loss = CrossEntropyLoss(num_classes=4, embedding_dim=3, epsilon=0.1)
    x, y = torch.randn(6, 3), torch.tensor([0, 1, 2, 3, 0, 1])
    expected = previous_label_smoothing_cross_entropy(loss.classifier(x), y, 0.1)
    assert loss(x, y).item() == pytest.approx(expected.item(), abs=1e-6)


def test_module_owns_bias_free_classifier_and_gradchecks():
    torch.manual_seed(1)
    loss = CrossEntropyLoss(num_classes=3, embedding_dim=4, epsilon=0.1).double()
    assert loss.classifier.bias is None and loss.classifier.weight.shape == (3, 4)
    x = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 2, 1])
    assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,), eps=1e-6, atol=1e-6)


def test_bad_labels_and_dimension_raise():
    loss = CrossEntropyLoss(num_classes=3, embedding_dim=4)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        loss(torch.randn(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="embedding_dim=4"):
        loss(torch.randn(2, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="epsilon"):
        CrossEntropyLoss(3, 4, epsilon=1.0)
