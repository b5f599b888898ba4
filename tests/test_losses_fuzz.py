"""Seeded random batches for every loss: any size, label layout, scale and dtype gives a finite loss,
finite gradients and mean-one sample weights ("no NaN, ever")."""

import pytest
import torch
from test_losses_registry import DIM, NUM_CLASSES, check_finite, make

from reid_robust.losses import LOSSES

SCALES = (1e-20, 1e-6, 1e-2, 1.0, 30.0, 1e4, 1e12, 1e20)


def random_batch(gen: torch.Generator, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch size 1-16; labels from 1 to NUM_CLASSES classes; rows random, repeated or zero; one scale."""
    n = int(torch.randint(1, 17, (1,), generator=gen))
    num_labels = int(torch.randint(1, NUM_CLASSES + 1, (1,), generator=gen))
    labels = torch.randint(0, num_labels, (n,), generator=gen)
    x = torch.randn(n, DIM, generator=gen, dtype=torch.float64)
    layout = int(torch.randint(0, 4, (1,), generator=gen))
    if layout == 1:    # duplicated rows: zero distances inside and across classes
        x = x[torch.randint(0, max(1, n // 2), (n,), generator=gen)]
    elif layout == 2:  # some zero rows
        x[torch.rand(n, generator=gen) < 0.3] = 0.0
    elif layout == 3:  # nearly collinear rows
        x = x[:1] + 1e-4 * x
    scale = SCALES[int(torch.randint(0, len(SCALES), (1,), generator=gen))]
    return (x * scale).to(dtype), labels


def random_weights(gen: torch.Generator, n: int) -> torch.Tensor:
    """Sample weights [n]: uniform, spread over decades, with zeros, all zero, or one image only."""
    kind = int(torch.randint(0, 5, (1,), generator=gen))
    w = torch.rand(n, generator=gen, dtype=torch.float64)
    if kind == 1:
        w = 10.0 ** (-30 + 60 * w)
    elif kind == 2:
        w[torch.rand(n, generator=gen) < 0.5] = 0.0
    elif kind == 3:
        w = torch.zeros(n, dtype=torch.float64)
    elif kind == 4:
        w = torch.zeros(n, dtype=torch.float64)
        w[int(torch.randint(0, n, (1,), generator=gen))] = 3.0
    return w


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_random_batches_stay_finite(name):
    gen = torch.Generator().manual_seed(sum(map(ord, name)))
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        for _ in range(12):
            x, y = random_batch(gen, dtype)
            if dtype == torch.bfloat16 and not torch.isfinite(x).all():
                continue  # 1e20-scale rows do not fit bfloat16 products; the input itself is the problem
            loss_fn = make(name)
            if dtype == torch.float64:
                loss_fn = loss_fn.double()
            loss_fn.set_progress(int(torch.randint(0, 11, (1,), generator=gen)), 10)
            check_finite(loss_fn, x, y)
            check_finite(loss_fn, x, y)  # a second forward: stateful losses (PRISM's memory) take another path
            w = random_weights(gen, x.shape[0])
            check_finite(loss_fn, x, y, w)


NON_FINITE = (float("nan"), float("inf"), float("-inf"))
PK_LABELS = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])


def poison(x: torch.Tensor, value: float, where: str) -> torch.Tensor:
    """A copy of ``x`` [N, D] with ``value`` in one entry, one row or everywhere."""
    x = x.clone()
    if where == "entry":
        x[4, 2] = value
    elif where == "row":
        x[7] = value
    else:
        x[:] = value
    return x


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_non_finite_embeddings_never_give_a_finite_loss(name):
    """NaN never hides: masked reductions and miners must not drop a NaN/inf embedding and report a number.
    The loss state (PRISM's memory) stays finite, and the next finite batch gives a finite loss again."""
    gen = torch.Generator().manual_seed(7)
    for dtype in (torch.float32, torch.float64):
        for value in NON_FINITE:
            for where in ("entry", "row", "all"):
                loss_fn = make(name)
                if dtype == torch.float64:
                    loss_fn = loss_fn.double()
                loss_fn.set_progress(5, 10)
                x = torch.randn(12, DIM, generator=gen, dtype=dtype)
                loss_fn(x, PK_LABELS)  # a finite batch first: stateful losses (PRISM's memory) are filled
                bad = poison(x, value, where)
                for labels in (PK_LABELS, torch.arange(12) % NUM_CLASSES):  # with and without positives
                    try:
                        loss = loss_fn(bad, labels)
                    except ValueError:
                        continue
                    assert not torch.isfinite(loss), (name, dtype, value, where, loss)
                for key, tensor in list(loss_fn.state_dict().items()):
                    if isinstance(tensor, torch.Tensor) and tensor.is_floating_point():
                        assert torch.isfinite(tensor).all(), (name, key)
                assert torch.isfinite(loss_fn(x, PK_LABELS))


NO_REAL_PARAMETERS = {"mae"}  # 2 - 2 p_y: nothing to set


def real_valued_parameters(name: str) -> list[str]:
    from reid_robust.losses import loss_parameters

    return [k for k, v in loss_parameters(name).items() if isinstance(v, float)]


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_non_finite_parameters_are_refused_in_one_line(name):
    params = real_valued_parameters(name)
    assert params or name in NO_REAL_PARAMETERS, f"{name} has no real-valued parameter to check"
    assert not (params and name in NO_REAL_PARAMETERS), f"{name} has real-valued parameters {params}"
    for param in params:
        for value in NON_FINITE:
            with pytest.raises(ValueError, match=rf"^{name}: {param} must be finite, got {value}$"):
                make(name, **{param: value})
            # constructing the class directly is checked too (the message then names the class)
            extra = {"num_classes": NUM_CLASSES, "embedding_dim": DIM} if LOSSES[name].needs_num_classes else {}
            with pytest.raises(ValueError, match=rf"^{LOSSES[name].__name__}: {param} must be finite"):
                LOSSES[name](**extra, **{param: value})


def test_build_loss_names_a_nan_margin():
    from reid_robust.losses import build_loss

    with pytest.raises(ValueError) as err:
        build_loss("triplet", margin=float("nan"))
    assert str(err.value) == "triplet: margin must be finite, got nan"
