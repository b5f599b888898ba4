"""Tests of the shared pairwise core (reid_robust/losses/pairwise.py)."""

import math

import pytest
import torch
from losses_reference import cos, dist

from reid_robust.losses import pairwise as pw


def test_distances_and_similarities_match_loops():
    torch.manual_seed(0)
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(4, 3, dtype=torch.float64)
    d = pw.euclidean_distance_matrix(x, y)
    d2 = pw.squared_euclidean_distance_matrix(x, y)
    s = pw.cosine_similarity_matrix(x, y)
    for i in range(5):
        for j in range(4):
            assert d[i, j].item() == pytest.approx(dist(x[i], y[j]), abs=1e-10)
            assert d2[i, j].item() == pytest.approx(dist(x[i], y[j]) ** 2, abs=1e-10)
            assert s[i, j].item() == pytest.approx(cos(x[i], y[j]), abs=1e-10)


def test_self_distance_diagonal_is_clamped_and_gradient_finite():
    x = torch.tensor([[1.0, 2.0], [1.0, 2.0], [0.0, 0.0]], requires_grad=True)
    d = pw.euclidean_distance_matrix(x)
    assert torch.allclose(torch.diagonal(d), torch.full((3,), 1e-6))
    assert d[0, 1].item() == pytest.approx(1e-6)  # identical rows
    d.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_zero_vectors_have_zero_cosine_and_finite_gradient():
    x = torch.zeros(3, 4, requires_grad=True)
    s = pw.cosine_similarity_matrix(x)
    assert torch.equal(s, torch.zeros(3, 3))
    s.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_masks_exclude_self_pairs():
    labels = torch.tensor([0, 0, 1, 2])
    pos = pw.positive_mask(labels)
    neg = pw.negative_mask(labels)
    assert pos.tolist() == [[False, True, False, False], [True, False, False, False],
                            [False] * 4, [False] * 4]
    assert not torch.diagonal(neg).any()
    assert neg[0].tolist() == [False, False, True, True]
    assert not (pos & neg).any()


def test_masked_reductions_on_empty_rows():
    x = torch.tensor([[1.0, 5.0, -2.0], [3.0, 4.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[True, False, True], [False, False, False]])
    assert pw.masked_sum(x, mask, 1).tolist() == [-1.0, 0.0]
    assert pw.masked_mean(x, mask, 1).tolist() == [-0.5, 0.0]
    assert pw.masked_max(x, mask, 1).tolist() == [1.0, 0.0]
    assert pw.masked_min(x, mask, 1).tolist() == [-2.0, 0.0]
    lse = pw.masked_logsumexp(x, mask, 1)
    assert lse[0].item() == pytest.approx(math.log(math.exp(1) + math.exp(-2)), abs=1e-6)
    assert lse[1].item() == float("-inf")
    lse1 = pw.masked_logsumexp(x, mask, 1, add_zero=True)
    assert lse1[0].item() == pytest.approx(math.log(1 + math.exp(1) + math.exp(-2)), abs=1e-6)
    assert lse1[1].item() == 0.0
    sm = pw.masked_softmax(x, mask, 1)
    assert sm[0].sum().item() == pytest.approx(1.0)
    assert sm[0, 1].item() == 0.0 and sm[1].abs().sum().item() == 0.0
    (lse[0] + lse1.sum() + sm.sum() + pw.masked_max(x, mask, 1).sum()).backward()
    assert torch.isfinite(x.grad).all()


def test_masked_logsumexp_is_stable_for_large_exponents():
    x = torch.tensor([[800.0, 790.0, -900.0]], requires_grad=True)
    mask = torch.tensor([[True, True, True]])
    v = pw.masked_logsumexp(x, mask, 1, add_zero=True)
    assert v.item() == pytest.approx(800 + math.log1p(math.exp(-10)), rel=1e-6)
    v.backward()
    assert torch.isfinite(x.grad).all()


def test_normalize_to_mean_one_and_pair_weights():
    w = pw.normalize_to_mean_one(torch.tensor([1.0, 3.0]))
    assert w.tolist() == [0.5, 1.5]
    assert pw.normalize_to_mean_one(torch.zeros(3)).tolist() == [1.0, 1.0, 1.0]
    pair = torch.tensor([[0.0, 2.0], [0.0, 0.0]])
    assert pw.pair_weights_to_sample_weights(pair).tolist() == [1.0, 1.0]


def test_zero_loss_is_connected_to_graph():
    x = torch.randn(3, 2, requires_grad=True)
    z = pw.zero_loss(x)
    assert z.item() == 0.0 and z.requires_grad
    z.backward()
    assert torch.equal(x.grad, torch.zeros(3, 2))


def test_gram_matrix_gradient_and_double_backward():
    torch.manual_seed(5)
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(pw.gram_matrix, (x,))
    assert torch.autograd.gradgradcheck(pw.gram_matrix, (x,))
    assert torch.allclose(pw.gram_matrix(x), x @ x.t())


def test_gram_matrix_under_autocast_backpropagates_in_input_dtype():
    x = torch.randn(4, 3, requires_grad=True)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        g = pw.gram_matrix(x)
    g.float().sum().backward()
    assert x.grad.dtype == torch.float32 and torch.isfinite(x.grad).all()


def test_euclidean_rescaling_is_exact_and_keeps_huge_embeddings_finite():
    torch.manual_seed(4)
    x, y = torch.randn(7, 5) * 3.0, torch.randn(4, 5) * 3.0
    plain = pw.squared_euclidean_distance_matrix(x, y).clamp_min(pw.DISTANCE_EPS).sqrt()
    assert torch.equal(pw.euclidean_distance_matrix(x, y), plain)  # power-of-two scaling: bit for bit
    big = (x * 1e20).requires_grad_(True)
    d = pw.euclidean_distance_matrix(big)
    assert torch.isfinite(d).all()
    torch.testing.assert_close(d / 1e20, pw.euclidean_distance_matrix(x), rtol=1e-5, atol=1e-5)
    d.sum().backward()
    assert torch.isfinite(big.grad).all()


def test_tiny_embeddings_sit_at_the_distance_floor():
    torch.manual_seed(5)
    tiny = (torch.randn(6, 5) * 1e-20).requires_grad_(True)
    d = pw.euclidean_distance_matrix(tiny)
    # every distance is far below sqrt(eps): all of them equal the floor, finitely
    torch.testing.assert_close(d, torch.full((6, 6), pw.DISTANCE_EPS**0.5), rtol=1e-5, atol=0.0)
    d.sum().backward()
    assert torch.isfinite(tiny.grad).all()
