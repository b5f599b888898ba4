"""Albumentations pipelines: output shape/dtype, normalisation; bad values are refused by TransformConfig."""
import re

import numpy as np
import pytest
import torch

from reid_robust.config import ConfigError, TransformConfig, load_config
from reid_robust.data import build_transforms

IMAGE = np.random.default_rng(0).integers(0, 256, size=(40, 20, 3), dtype=np.uint8)


@pytest.mark.parametrize("train", [True, False])
def test_output_is_float_chw_tensor_of_configured_size(train):
    pipeline = build_transforms(TransformConfig(size=(32, 16), pad=2, color_jitter=0.2, random_erasing=1.0), train)
    out = pipeline(image=IMAGE)["image"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.shape == (3, 32, 16)
    assert torch.isfinite(out).all()


def test_test_pipeline_is_resize_and_normalise():
    flat = np.full((32, 16, 3), 255, dtype=np.uint8)
    out = build_transforms(TransformConfig(size=(32, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.5, 1.0)), train=False)(
        image=flat)["image"]
    expected = torch.tensor([2.0, 1.0, 0.5]).view(3, 1, 1).expand(3, 32, 16)
    assert torch.allclose(out, expected, atol=1e-6)


def test_random_erasing_fills_with_zero_after_normalisation():
    flat = np.full((32, 16, 3), 200, dtype=np.uint8)
    cfg = TransformConfig(size=(32, 16), pad=0, flip=0.0, random_erasing=1.0, erasing_scale=(0.2, 0.3))
    out = build_transforms(cfg, train=True)(image=flat)["image"]
    erased = (out == 0).all(dim=0)
    assert 0.15 * 32 * 16 <= erased.sum() <= 0.35 * 32 * 16


def test_flip_probability_one_mirrors():
    cfg = TransformConfig(size=(40, 20), pad=0, flip=1.0, random_erasing=0.0, mean=(0, 0, 0), std=(1, 1, 1))
    out = build_transforms(cfg, train=True)(image=IMAGE)["image"]
    assert torch.allclose(out, torch.from_numpy(IMAGE[:, ::-1].copy()).permute(2, 0, 1).float() / 255)


def test_unknown_key_and_bad_values_are_refused_when_the_config_loads():
    with pytest.raises(ConfigError, match=r"unknown config key 'data.transforms.colour_jitter' \(did you mean "
                                          r"'data.transforms.color_jitter'\?\)"):
        load_config(None, ["data.transforms.colour_jitter=0.1"])
    with pytest.raises(ConfigError, match=re.escape("command line: 'data.transforms.flip' must be in [0, 1], got 2")):
        load_config(None, ["data.transforms.flip=2"])  # was accepted until the transforms were built (issue 13)
    with pytest.raises(ConfigError, match=re.escape("'data.transforms.size' must be a list of 2 values, got [32]")):
        load_config(None, ["data.transforms.size=[32]"])
    with pytest.raises(ConfigError, match=re.escape("'data.transforms.std' must be > 0, got [1, 0, 1]")):
        TransformConfig(std=(1, 0, 1))


@pytest.mark.parametrize("key,value", [
    ("erasing_scale", [0.5]), ("erasing_scale", [0.1, 0.2, 0.3]), ("erasing_scale", [0, 0.4]),
    ("erasing_scale", [0.4, 0.2]), ("erasing_scale", [0.2, 1.5]), ("erasing_scale", ["a", 0.4]),
    ("erasing_scale", 0.3), ("erasing_ratio", [0, -1]), ("erasing_ratio", [0.3]), ("erasing_ratio", [-1, 3]),
    ("erasing_ratio", [3.33, 0.3]), ("erasing_ratio", [0.3, float("inf")]), ("erasing_ratio", [True, 2]),
])
def test_erasing_ranges_are_refused_naming_the_key(key, value):
    with pytest.raises(ConfigError, match=rf"'data\.transforms\.{key}(\[\d\])?' must be"):
        TransformConfig.from_dict({key: value})


def test_valid_erasing_ranges_are_accepted():
    cfg = TransformConfig.from_dict({"size": [32, 16], "random_erasing": 1.0, "erasing_scale": [0.1, 1],
                                  "erasing_ratio": (1, 1)})
    out = build_transforms(cfg, train=True)(image=IMAGE)["image"]
    assert out.shape == (3, 32, 16)
