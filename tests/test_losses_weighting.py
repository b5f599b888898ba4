"""Tests of the weighting functions (reid_robust/losses/weighting.py), incl. the worked values."""

import math

import pytest
import torch

from reid_robust.losses import weighting as wt


def test_class_aware_attention_worked_values():
    a = wt.class_aware_attention(torch.tensor([1.0, 0.5, 0.0]), sigma=0.68)
    assert a.tolist() == pytest.approx([1.00, 0.76, 0.34], abs=0.005)


def test_osm_positive_weight_worked_values():
    w = wt.osm_positive_weights(torch.tensor([0.5, 1.0, 1.4]), sigma=0.8)
    assert w.tolist() == pytest.approx([0.82, 0.46, 0.22], abs=0.005)


def test_osm_negative_weights_and_pairwise_min():
    assert wt.osm_negative_weights(torch.tensor([0.2, 1.2, 1.5]), margin=1.2).tolist() == pytest.approx([1.0, 0, 0])
    assert torch.equal(wt.pairwise_min(torch.tensor([0.3, 0.9])), torch.tensor([[0.3, 0.3], [0.3, 0.9]]))


def test_weights_are_constants():
    p = torch.tensor([0.3, 0.6], requires_grad=True)
    for w in [wt.class_aware_attention(p, 0.68), wt.emphasis_density_weights(p, 1.0, 4.0),
              wt.gaussian_confidence_weights(p), wt.osm_positive_weights(p, 0.8)]:
        assert not w.requires_grad


def test_true_class_probability_without_cancellation():
    logits = torch.tensor([[30.0, 0.0, 0.0], [0.0, 1.0, 2.0]])
    p, one_minus = wt.true_class_probability(logits, torch.tensor([0, 2]))
    assert one_minus[0].item() == pytest.approx(2 * math.exp(-30), rel=1e-5)  # float32 1 - p would be 0
    assert (p + one_minus).tolist() == pytest.approx([1.0, 1.0], abs=1e-6)
    e = [math.exp(v) for v in (0.0, 1.0, 2.0)]
    assert p[1].item() == pytest.approx(e[2] / sum(e), rel=1e-6)


def test_emphasis_density_weights_modes():
    p = torch.linspace(0.01, 0.99, 99)
    for lam in [0.0, 0.5, 1.0, 2.0]:
        w = wt.emphasis_density_weights(p, lam, 8.0)
        mode = p[int(w.argmax())].item()
        assert mode == pytest.approx(lam / (lam + 1), abs=0.011)
    imae = wt.emphasis_density_weights(torch.tensor([0.5]), 1.0, 8.0)
    assert imae.item() == pytest.approx(math.exp(8 * 0.25))


def test_gradient_rescaling_coefficients_give_normalised_l1_norms():
    w = torch.tensor([1.0, 3.0])
    one_minus = torch.tensor([0.5, 0.25])
    c = wt.gradient_rescaling_coefficients(w, one_minus)
    assert (c * 2 * one_minus).tolist() == pytest.approx([0.25, 0.75])


def test_gaussian_confidence_weights_sum_to_one_and_peak_at_mean():
    w = wt.gaussian_confidence_weights(torch.tensor([0.0, 0.5, 1.0]))
    assert w.sum().item() == pytest.approx(1.0)
    assert int(w.argmax()) == 1 and w[0].item() == pytest.approx(w[2].item())


def test_proselflc_trust():
    assert wt.proselflc_global_trust(0.5, 12.0, 0.5) == pytest.approx(0.5)
    assert wt.proselflc_global_trust(0.0, 12.0, 0.5) == pytest.approx(1 / (1 + math.exp(6)))
    probs = torch.tensor([[0.25, 0.25, 0.25, 0.25], [1.0, 0.0, 0.0, 0.0]])
    assert wt.proselflc_local_trust(probs).tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_temperature_softmax_weights():
    v = torch.tensor([[1.0, 2.0, 3.0]])
    mask = torch.tensor([[True, True, False]])
    assert wt.temperature_softmax_weights(v, mask, 0.0).tolist() == [[0.5, 0.5, 0.0]]
    w = wt.temperature_softmax_weights(v, mask, 2.0)
    assert w[0, 1].item() == pytest.approx(math.exp(4) / (math.exp(2) + math.exp(4)))
