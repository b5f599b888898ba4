"""Tests of the robust losses: loop references, gradients, DM's gradient norms, planted-mislabel behaviour."""

import copy
import math

import pytest
import torch
from losses_reference import ice, osm_caa_wcl, proselflc, ranked_list

from reid_robust.losses import LOSSES, build_loss, label_smoothing_cross_entropy
from reid_robust.losses.example_weighting import gradient_rescaled_cross_entropy
from reid_robust.losses.weighting import true_class_probability

PK = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])


def value_and_grad(fn, x):
    x = x.clone().requires_grad_(True)
    v = fn(x)
    g, = torch.autograd.grad(v, x)
    return v.item(), g


def test_osm_caa_matches_loop_reference_value_and_gradient():
    torch.manual_seed(0)
    loss = build_loss("osm_caa", num_classes=4, embedding_dim=5, id_weight=0.0).double()
    torch.nn.init.normal_(loss.classifier.weight, std=1.0)
    x = torch.randn(10, 5, dtype=torch.float64)
    p, _ = true_class_probability(x @ loss.classifier.weight.t(), PK)
    ours = value_and_grad(lambda e: loss(e, PK), x)
    ref = value_and_grad(lambda e: osm_caa_wcl(e, PK.tolist(), p.tolist(), 1.2, 0.8, 0.68), x)
    assert ours[0] == pytest.approx(ref[0], abs=1e-10)
    assert torch.allclose(ours[1], ref[1], atol=1e-10)
    expected_att = torch.exp(-(1 - p) ** 2 / (2 * 0.68 ** 2))
    assert torch.allclose(loss.last_sample_weights.double(), expected_att / expected_att.mean(), atol=1e-6)


def test_osm_caa_id_term_is_cross_entropy():
    torch.manual_seed(1)
    full = build_loss("osm_caa", num_classes=4, embedding_dim=5)
    metric = copy.deepcopy(full)
    metric.id_weight = 0.0
    x = torch.randn(10, 5)
    ce = label_smoothing_cross_entropy(full.classifier(x), PK, 0.0)
    assert full(x, PK).item() == pytest.approx(metric(x, PK).item() + ce.item(), rel=1e-5)


def _osm_caa_three_points(**params):
    """Unit vectors e_0, e_1 (label 0) and (e_0 + e_1)/sqrt(2) (label 1); a zero classifier (p = 1/2 everywhere,
    so the attention is uniform and the ID term is exactly log 2)."""
    loss = build_loss("osm_caa", num_classes=2, embedding_dim=2, **params).double()
    torch.nn.init.zeros_(loss.classifier.weight)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2 ** -0.5, 2 ** -0.5]], dtype=torch.float64)
    return loss, x, torch.tensor([0, 0, 1])


@pytest.mark.parametrize("id_weight", [0.0, 1.0])
def test_osm_caa_both_normalisations_by_hand(id_weight):
    # one positive pair, d^2 = 2 (its normalised weight is 1 whatever sigma_osm);
    # two negative pairs at d = sqrt(2 - sqrt 2) ~ 0.765 < margin 1.2, equal weights 1/2 each
    wcl = 0.25 * (2.0 + (1.2 - math.sqrt(2.0 - math.sqrt(2.0))) ** 2)
    assert wcl == pytest.approx(0.5472265, abs=1e-7)
    expected = {"weights": wcl, "pairs": wcl / 3.0}  # N(N-1)/2 = 3 unordered pairs
    for normalization, value in expected.items():
        loss, x, y = _osm_caa_three_points(id_weight=id_weight, normalization=normalization)
        # abs 1e-10: the official layer's "+ 1e-12" in each weight normaliser shifts the value by ~1e-12
        assert loss(x, y).item() == pytest.approx(value + id_weight * math.log(2.0), abs=1e-10)


def test_osm_caa_pairs_normalisation_scales_the_metric_gradient_by_the_pair_count_and_gradchecks():
    torch.manual_seed(12)
    x = torch.randn(10, 5, dtype=torch.float64)
    by_weights = build_loss("osm_caa", num_classes=4, embedding_dim=5, id_weight=0.0).double()
    by_pairs = copy.deepcopy(by_weights)
    by_pairs.normalization = "pairs"
    v_w, g_w = value_and_grad(lambda e: by_weights(e, PK), x)
    v_p, g_p = value_and_grad(lambda e: by_pairs(e, PK), x)
    assert v_p == pytest.approx(v_w / 45, rel=1e-12) and torch.allclose(g_p, g_w / 45, rtol=1e-12, atol=0)
    with pytest.raises(ValueError, match="normalization must be one of"):
        build_loss("osm_caa", num_classes=4, embedding_dim=5, normalization="pair")


def test_ranked_list_matches_loop_reference_value_and_gradient():
    torch.manual_seed(2)
    x = torch.randn(10, 4, dtype=torch.float64)
    for t_pos in [0.0, 5.0]:
        loss = build_loss("ranked_list", margin=0.4, boundary=1.2, neg_temperature=10.0, pos_temperature=t_pos,
                          neg_weight=0.7)
        ours = value_and_grad(lambda e, f=loss: f(e, PK), x)
        ref = value_and_grad(lambda e, t=t_pos: ranked_list(e, PK.tolist(), 0.4, 1.2, 10.0, t, 0.7), x)
        assert ours[0] == pytest.approx(ref[0], abs=1e-10)
        assert torch.allclose(ours[1], ref[1], atol=1e-10)


def test_ice_matches_loop_reference_gradcheck_and_pml_ntxent():
    torch.manual_seed(3)
    x = torch.randn(10, 4, dtype=torch.float64)
    loss = build_loss("ice", scale=8.0)
    assert loss(x, PK).item() == pytest.approx(ice(x, PK.tolist(), 8.0).item(), abs=1e-10)
    xg = x[:6].clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, PK[:6]), (xg,), eps=1e-6, atol=1e-5)
    pml_losses = pytest.importorskip("pytorch_metric_learning.losses")
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # equal positives per anchor: ICE == NT-Xent
    ref = pml_losses.NTXentLoss(temperature=1 / 8.0)(x[:8], y)
    assert loss(x[:8], y).item() == pytest.approx(ref.item(), abs=1e-8)


def test_ice_hardness_weights_match_autograd():
    torch.manual_seed(4)
    from reid_robust.losses.ice import ice_pair_weights
    from reid_robust.losses.pairwise import masked_logsumexp, negative_mask, positive_mask

    z = (torch.randn(8, 8, dtype=torch.float64) * 3).requires_grad_(True)
    y = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    pos, neg = positive_mask(y), negative_mask(y)
    lse = masked_logsumexp(z, neg, 1)
    log_p = z - torch.logaddexp(z, lse.unsqueeze(1))
    (-(torch.where(pos, log_p, torch.zeros_like(z)).sum(1) / pos.sum(1))).sum().backward()
    assert torch.allclose(z.grad.abs(), ice_pair_weights(z, pos, neg, lse), atol=1e-12)


def test_proselflc_matches_loop_reference_and_reads_progress():
    torch.manual_seed(5)
    loss = build_loss("proselflc", num_classes=4, embedding_dim=5).double()
    torch.nn.init.normal_(loss.classifier.weight, std=1.0)
    x = torch.randn(10, 5, dtype=torch.float64)
    logits = x @ loss.classifier.weight.t()
    values = []
    for step in [0, 50, 100]:
        loss.set_progress(step, 100)
        ours = value_and_grad(lambda e: loss(e, PK), x)
        ref = value_and_grad(lambda e, s=step: proselflc(e @ loss.classifier.weight.t(), PK, s / 100, 12.0, 0.5), x)
        assert ours[0] == pytest.approx(ref[0], abs=1e-10)
        assert torch.allclose(ours[1], ref[1], atol=1e-10)
        values.append(ours[0])
    ce = torch.nn.functional.cross_entropy(logits, PK).item()
    assert values[0] == pytest.approx(ce, rel=0.01)  # g(0) = sigmoid(-6): almost the annotated target
    assert values[2] < values[0]  # late in training the target moves toward the prediction


def test_dm_logit_gradient_l1_norm_equals_normalised_weight():
    torch.manual_seed(6)
    logits = (torch.randn(7, 5, dtype=torch.float64) * 2).requires_grad_(True)
    y = torch.randint(0, 5, (7,))
    p, _ = true_class_probability(logits, y)
    w = torch.exp(2.0 * p.sqrt() * (1 - p))          # DM with lam = 0.5, beta = 2
    gradient_rescaled_cross_entropy(logits, y, w).backward()
    l1 = logits.grad.abs().sum(dim=1)
    assert torch.allclose(l1, w / w.sum(), atol=1e-10)
    # a plain weighted cross entropy scales the norm by 2 (1 - p) instead: it does not satisfy this
    plain = logits.detach().clone().requires_grad_(True)
    (w / w.sum() * torch.nn.functional.cross_entropy(plain, y, reduction="none")).sum().backward()
    assert not torch.allclose(plain.grad.abs().sum(dim=1), w / w.sum(), atol=1e-3)


def test_dm_module_logit_gradients_and_imae_equivalence():
    torch.manual_seed(7)
    dm = build_loss("dm", num_classes=4, embedding_dim=5, lam=1.0, beta=8.0).double()
    imae = build_loss("imae", num_classes=4, embedding_dim=5, temperature=8.0).double()
    imae.load_state_dict(dm.state_dict())
    x = torch.randn(10, 5, dtype=torch.float64)
    g_dm = value_and_grad(lambda e: dm(e, PK), x)[1]
    g_imae = value_and_grad(lambda e: imae(e, PK), x)[1]
    assert torch.allclose(g_dm, g_imae)
    # through the classifier: dL/dx_i = W^T dL/dz_i, and the logit gradient rows have L1 norm w^_i
    logits = (x @ dm.classifier.weight.t()).detach().requires_grad_(True)
    p, _ = true_class_probability(logits, PK)
    w = torch.exp(8.0 * p * (1 - p))
    gradient_rescaled_cross_entropy(logits, PK, w).backward()
    assert torch.allclose(g_dm, logits.grad @ dm.classifier.weight.detach(), atol=1e-12)
    assert torch.allclose(dm.last_sample_weights.double(), w / w.mean(), atol=1e-6)


# ---------------------------------------------------------------- planted mislabel -------------------

def planted_batch(seed: int = 0):
    """4 classes x 3 clean samples near 3 (e_k + 0.8 e_7), plus sample 12: confidently class 0, labelled 3.

    The shared e_7 component puts clean classes at normalised distance ~1.1, inside the usual margins,
    so that clean negatives also contribute (as they do in real batches).
    """
    g = torch.Generator().manual_seed(seed)
    eye = torch.eye(8)
    centres = 3.0 * (eye[:4] + 0.8 * eye[7])
    x = torch.cat([centres.repeat_interleave(3, 0) + 0.5 * torch.randn(12, 8, generator=g),
                   4.5 * eye[:1] + 2.4 * eye[7] + 0.1 * torch.randn(1, 8, generator=g)])
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 3])
    return x, y


def gradient_shares(loss_fn, x, y):
    x = x.clone().requires_grad_(True)
    loss_fn(x, y).backward()
    norms = x.grad.norm(dim=1)
    return norms / norms.sum()


def with_identity_classifier(loss):
    with torch.no_grad():
        loss.classifier.weight.copy_(torch.eye(8)[:4])
    return loss


RELIABILITY = sorted(n for n, c in LOSSES.items() if c.weights_meaning == "reliability")


def test_reliability_list_is_the_documented_one():
    assert RELIABILITY == ["osm_caa", "prism", "proselflc"]
    assert sorted(n for n, c in LOSSES.items() if c.weights_meaning == "emphasis") == ["dm", "imae"]


def unweighted_counterpart(name: str, loss):
    """The same loss with its weighting switched off."""
    if name == "osm_caa":
        plain = copy.deepcopy(loss)
        plain.soft_mining = plain.class_attention = False
        return plain
    if name == "prism":
        plain = copy.deepcopy(loss)
        plain.threshold.noise_rate = 0.0
        return plain
    # classification losses: plain (unsmoothed) cross entropy with the same classifier
    return lambda e, y: label_smoothing_cross_entropy(loss.classifier(e), y, 0.0)


@pytest.mark.parametrize("name", RELIABILITY)
def test_planted_mislabel_gets_lowest_weight_and_smaller_gradient_share(name):
    x, y = planted_batch()
    if name == "prism":
        loss = build_loss("prism", num_classes=4, embedding_dim=8, noise_rate=0.1, memory_size=64)
        for seed in range(1, 4):  # warm the memory with clean batches
            xc, yc = planted_batch(seed)
            loss(xc[:12], yc[:12])
    else:
        params = {"id_weight": 0.0} if name == "osm_caa" else {}
        loss = with_identity_classifier(build_loss(name, num_classes=4, embedding_dim=8, **params))
        loss.set_progress(100, 100)
    plain = unweighted_counterpart(name, loss)
    weighted_shares = gradient_shares(copy.deepcopy(loss), x, y)
    plain_shares = gradient_shares(plain, x, y)
    loss(x, y)
    w = loss.last_sample_weights
    assert int(w.argmin()) == 12, w
    assert w[12] < w[:12].min()
    assert weighted_shares[12] < plain_shares[12], (weighted_shares[12], plain_shares[12])


@pytest.mark.parametrize("name", ["dm", "imae"])
def test_emphasis_weights_are_low_at_both_ends_so_they_are_no_reliability(name):
    """DM/IMAE weigh ``exp(beta p^lam (1 - p))``: with lam = 1 the maximum is at p = 0.5 and a confidently right
    sample (p ~ 1) weighs less than a mislabeled one (p ~ 0), so the weights must not be read as reliability."""
    loss = with_identity_classifier(build_loss(name, num_classes=4, embedding_dim=8))
    x = torch.zeros(4, 8)
    x[0, 0] = 12.0              # label 0, p = e^12 / (e^12 + 3) ~ 1 - 2e-5: confidently right
    x[1, 0] = math.log(3.0)     # label 0, p = 3 / (3 + 3) = 0.5: the mode
    x[2, 0] = 10.0              # label 3, p = 1 / (e^10 + 3) ~ 5e-5: confidently mislabeled
    #  x[3] = 0                 # label 1, p = 0.25
    loss(x, torch.tensor([0, 0, 3, 1]))
    w = loss.last_sample_weights
    assert loss.weights_meaning == "emphasis"
    assert int(w.argmax()) == 1
    assert int(w.argmin()) == 0 and w[0] < w[2] < w[3]  # the right, confident sample weighs least


@pytest.mark.parametrize("name", ["dm", "imae"])
def test_emphasis_losses_give_a_planted_mislabel_a_smaller_gradient_share_than_cross_entropy(name):
    """What DM/IMAE do promise: a confidently mislabeled sample, which dominates cross entropy's gradient, gets a
    smaller share of it, whether the clean samples are moderately (p ~ 0.86) or very (p ~ 1) confident."""
    x, y = planted_batch()
    for sharpness in (1.0, 4.0):
        loss = with_identity_classifier(build_loss(name, num_classes=4, embedding_dim=8))
        with torch.no_grad():
            loss.classifier.weight.mul_(sharpness)
        weighted_shares = gradient_shares(copy.deepcopy(loss), x, y)
        plain_shares = gradient_shares(unweighted_counterpart(name, loss), x, y)
        assert weighted_shares[12] < plain_shares[12], (sharpness, weighted_shares[12], plain_shares[12])


def test_prism_selection_drops_the_planted_sample_and_keeps_memory():
    x, y = planted_batch()
    loss = build_loss("prism", num_classes=4, embedding_dim=8, noise_rate=0.1, memory_size=30)
    loss(x[:12], y[:12])
    assert loss.last_kept_mask.all()          # empty memory: no selection yet
    assert int((loss.memory_labels >= 0).sum()) == 12
    loss(x, y)
    assert loss.last_kept_mask.tolist() == [True] * 12 + [False]
    assert int((loss.memory_labels >= 0).sum()) == 24  # only kept samples are enqueued
    loss(x, y)
    assert int((loss.memory_labels >= 0).sum()) == 30 and int(loss.memory_ptr) == 6  # FIFO wrap-around


def test_prism_eval_mode_is_a_pure_function_and_gradchecks():
    x, y = planted_batch()
    loss = build_loss("prism", num_classes=4, embedding_dim=8, noise_rate=0.1, memory_size=64).double()
    loss(x[:12].double(), y[:12])
    loss.eval()
    xg = x[:6].double().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: loss(e, y[:6]), (xg,), eps=1e-6, atol=1e-5)
    assert int((loss.memory_labels >= 0).sum()) == 12  # eval forwards do not enqueue


def test_prism_threshold_window():
    from reid_robust.losses.prism import SlidingWindowThreshold

    t = SlidingWindowThreshold(noise_rate=0.25, window_size=2)
    keep = t.select(torch.tensor([0.9, 0.1, 0.5, 0.7]))
    assert keep.tolist() == [True, False, True, True] and t.values == pytest.approx([0.1])
    keep = t.select(torch.tensor([0.3, 0.2, 0.8, 0.9]))          # window mean (0.1 + 0.2) / 2
    assert keep.tolist() == [True, True, True, True]
    t.select(torch.tensor([0.95, 0.99, 0.97, 0.96]))             # window slides to (0.2, 0.95)
    assert t.values == pytest.approx([0.2, 0.95])
    keep = t.select(torch.tensor([0.1, 0.05, 0.1, 0.1]))         # nobody above the mean
    assert keep.tolist() == [True, False, True, True] and len(t.values) == 1


def test_prism_empty_window_drops_the_lowest_floor_rn_as_the_official_code():
    """The window stays empty while every boundary value is 1 (no class centre yet): the official code then drops
    the lowest floor(r N) samples anyway (ties in batch order); keeping all of them was our old behaviour."""
    from reid_robust.losses.prism import SlidingWindowThreshold

    t = SlidingWindowThreshold(noise_rate=0.5, window_size=3)
    keep = t.select(torch.tensor([1.0, 1.0, 1.0, 1.0]))
    assert keep.tolist() == [False, False, True, True] and t.values == []
    # in the loss: the memory knows classes 0 and 1 only, the batch holds classes 2-5 (probability 1 each)
    loss = build_loss("prism", num_classes=6, embedding_dim=8, noise_rate=0.25, memory_size=64)
    gen = torch.Generator().manual_seed(0)
    loss(torch.randn(4, 8, generator=gen), torch.tensor([0, 0, 1, 1]))
    loss(torch.randn(8, 8, generator=gen), torch.tensor([2, 2, 3, 3, 4, 4, 5, 5]))
    assert loss.last_sample_weights.tolist() == [1.0] * 8 and loss.threshold.values == []
    assert loss.last_kept_mask.tolist() == [False, False] + [True] * 6


def test_prism_memory_term_is_divided_by_the_batch_size_and_the_batch_term_by_the_kept_count():
    """Official memory_contrastive_loss_w_PRISM: the memory loss masks the dropped rows and divides by the whole
    batch n; the batch loss runs on the kept samples only and divides by their number."""
    x, y = planted_batch()
    loss = build_loss("prism", num_classes=4, embedding_dim=8, noise_rate=0.1, memory_size=64).double()
    for seed in range(1, 4):
        xc, yc = planted_batch(seed)
        loss(xc[:12].double(), yc[:12])
    filled = loss.memory_labels >= 0
    memory, memory_labels = loss.memory[filled].clone(), loss.memory_labels[filled].clone()
    value = loss(x.double(), y).item()
    kept = loss.last_kept_mask
    assert int(kept.sum()) == 12  # the planted sample is dropped
    xn = torch.nn.functional.normalize(x.double(), dim=1)

    def pair_cost(s: float, same: bool) -> float:
        return 1.0 - s if same else (s if s > 0.5 else 0.0)

    rows = [i for i in range(13) if kept[i]]
    batch = sum(pair_cost(float(xn[i] @ xn[j]), bool(y[i] == y[j])) for i in rows for j in rows if i != j)
    mem = sum(pair_cost(float(xn[i] @ memory[m]), bool(y[i] == memory_labels[m]))
              for i in rows for m in range(memory.shape[0]))
    assert value == pytest.approx(batch / 12 + mem / 13, abs=1e-10)


def test_prism_state_dict_carries_the_window_so_a_restored_copy_selects_the_same():
    x, y = planted_batch()
    trained = build_loss("prism", num_classes=4, embedding_dim=8, noise_rate=0.1, memory_size=64, window_size=3)
    for _ in range(3):
        trained(x, y)
    assert trained.threshold.values  # the window has boundary values
    restored = build_loss("prism", num_classes=4, embedding_dim=8, noise_rate=0.1, memory_size=64, window_size=3)
    restored.load_state_dict(trained.state_dict())
    assert restored.threshold.values == trained.threshold.values and restored.iteration == trained.iteration
    x2 = x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1))
    assert torch.equal(restored(x2, y), trained(x2, y))
    assert torch.equal(restored.last_kept_mask, trained.last_kept_mask)
    assert restored.threshold.values == trained.threshold.values


def _freeze_weighting(monkeypatch, module):
    """Make every weighting function of ``reid_robust.losses.weighting`` used by ``module`` replay the values it
    returned on the first forward. The losses treat those weights as constants (detached, as in the papers),
    so the loss with replayed weights is the smooth function whose gradient autograd must give."""
    import inspect

    from reid_robust.losses import weighting

    recorded: dict[str, list] = {}
    state = {"replay": False, "position": {}}
    for name, fn in vars(weighting).items():
        if not (inspect.isfunction(fn) and fn.__module__ == weighting.__name__ and hasattr(module, name)):
            continue

        def frozen(*args, _fn=fn, _name=name, **kwargs):
            if not state["replay"]:
                out = _fn(*args, **kwargs)
                recorded.setdefault(_name, []).append(out)
                return out
            i = state["position"].get(_name, 0)
            state["position"][_name] = i + 1
            return recorded[_name][i]
        monkeypatch.setattr(module, name, frozen)

    def replaying(call):
        def wrapped(*args):
            state["replay"], state["position"] = True, {}
            return call(*args)
        return wrapped
    return recorded, replaying


@pytest.mark.parametrize("name, params", [
    ("osm_caa", {"num_classes": 4, "embedding_dim": 5}),
    ("ranked_list", {}),
    ("dm", {"num_classes": 4, "embedding_dim": 5, "lam": 1.0, "beta": 2.0}),
    ("imae", {"num_classes": 4, "embedding_dim": 5}),
    ("proselflc", {"num_classes": 4, "embedding_dim": 5}),
])
def test_gradcheck_with_the_detached_weights_frozen(monkeypatch, name, params):
    import importlib

    torch.manual_seed(11)
    loss = build_loss(name, **params).double()
    for p in loss.parameters():  # classifier weights large enough that the weights differ between samples
        torch.nn.init.normal_(p, std=1.0)
    loss.set_progress(60, 100)  # ProSelfLC: a non-zero global trust
    module = importlib.import_module(type(loss).__module__)
    recorded, replaying = _freeze_weighting(monkeypatch, module)
    x0 = torch.randn(10, 5, dtype=torch.float64)
    loss(x0, PK)  # records the weights at x0
    assert recorded, f"{name} uses no function of reid_robust.losses.weighting"
    x = x0.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(replaying(lambda e: loss(e, PK)), (x,), eps=1e-6, atol=1e-6)
    # and the replayed loss is the real one at x0 (same value, same autograd gradient)
    monkeypatch.undo()
    real = value_and_grad(lambda e: loss(e, PK), x0)
    recorded2, replaying2 = _freeze_weighting(monkeypatch, module)
    loss(x0, PK)
    replayed = value_and_grad(replaying2(lambda e: loss(e, PK)), x0)
    assert real[0] == pytest.approx(replayed[0], abs=1e-12) and torch.allclose(real[1], replayed[1], atol=1e-12)


def test_prism_eval_mode_reports_clean_probabilities_without_selecting():
    x, y = planted_batch()
    loss = build_loss("prism", num_classes=4, embedding_dim=8, noise_rate=0.1, memory_size=64, window_size=3)
    for seed in range(1, 4):  # warm the memory with clean batches
        xc, yc = planted_batch(seed)
        loss(xc[:12], yc[:12])
    window, filled = list(loss.threshold.values), int((loss.memory_labels >= 0).sum())
    loss.eval()
    loss(x, y)
    w = loss.last_sample_weights
    assert int(w.argmin()) == 12 and w[12] < w[:12].min()  # the planted mislabel is still the least reliable
    assert loss.last_kept_mask.all()  # eval never drops samples
    assert loss.threshold.values == window and int((loss.memory_labels >= 0).sum()) == filled


def test_centre_probabilities_by_hand():
    from reid_robust.losses.prism import centre_probabilities

    memory = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    memory_labels = torch.tensor([0, 1, 1])  # centres: c0 = (1, 0), c1 = (0, 2); class 2 has none
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    prob = centre_probabilities(x, torch.tensor([0, 0, 2]), memory, memory_labels, num_classes=3)
    e = math.e
    # the softmax runs over all 3 classes, class 2's zero centre giving logit 0 (official: zero-initialised centres):
    # logits (1, 0, 0) -> p0 = e / (e + 2); logits (0, 2, 0) -> p0 = 1 / (2 + e^2); class 2 has no centre -> 1
    torch.testing.assert_close(prob, torch.tensor([e / (e + 2), 1 / (2 + e**2), 1.0]))


def test_proselflc_corrected_target_by_hand():
    from reid_robust.losses.weighting import proselflc_corrected_target

    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], requires_grad=True)
    target = proselflc_corrected_target(probs, torch.tensor([1, 2]), torch.tensor([0.5, 0.0]))
    # (1 - eps) one_hot + eps p: row 0 with eps 0.5, row 1 untouched (eps 0)
    torch.testing.assert_close(target, torch.tensor([[0.35, 0.6, 0.05], [0.0, 0.0, 1.0]]))
    assert not target.requires_grad  # the corrected target is a constant


def test_dm_with_lam_zero_says_its_weights_measure_hardness():
    assert build_loss("dm", num_classes=4, embedding_dim=8, lam=0.0).weights_meaning == "hardness"
    assert build_loss("dm", num_classes=4, embedding_dim=8).weights_meaning == "emphasis"
    loss = with_identity_classifier(build_loss("dm", num_classes=4, embedding_dim=8, lam=0.0))
    x, y = planted_batch()
    loss(x, y)
    assert int(loss.last_sample_weights.argmax()) == 12  # the mislabeled sample is the hardest
