"""Albumentations pipelines for ReID / metric-learning images (BoT recipe, Luo et al., CVPRW 2019).

Train: resize -> pad + random crop -> horizontal flip -> colour jitter -> normalise -> random erasing
(Zhong et al., AAAI 2020; applied after normalisation with fill 0, i.e. the per-channel mean) -> tensor.
Test: resize -> normalise -> tensor. Either way the output is a float32 tensor [3, H, W].
"""
from __future__ import annotations

import math
import numbers

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

DEFAULTS = {
    "size": [256, 128],        # [height, width]
    "pad": 10,                 # pixels of zero padding before the random crop back to `size`; 0 disables
    "flip": 0.5,               # horizontal-flip probability
    "color_jitter": 0.0,       # brightness/contrast/saturation strength (hue = strength / 4); 0 disables
    "color_jitter_p": 0.5,     # probability of applying the colour jitter
    "random_erasing": 0.5,     # random-erasing probability; 0 disables
    "erasing_scale": [0.02, 0.4],   # erased area as a fraction of the image
    "erasing_ratio": [0.3, 3.33],   # aspect ratio range of the erased box
    "mean": list(IMAGENET_MEAN),
    "std": list(IMAGENET_STD),
}


class RandomErasing(A.ImageOnlyTransform):
    """Random erasing (Zhong et al., "Random Erasing Data Augmentation", AAAI 2020), as in the BoT code.

    Up to 100 tries: area ~ U(scale) * H * W, aspect ~ U(ratio), box height sqrt(area * aspect), width
    sqrt(area / aspect); the first box that fits strictly inside the image is filled with `fill`.
    (albumentations' own `Erasing` fails in 2.0.8 when no box fits, hence this small op.)
    """

    def __init__(self, scale=(0.02, 0.4), ratio=(0.3, 3.33), fill: float = 0.0, p: float = 0.5):
        super().__init__(p=p)
        self.scale, self.ratio, self.fill = tuple(scale), tuple(ratio), float(fill)

    def get_params_dependent_on_data(self, params: dict, data: dict) -> dict:
        height, width = params["shape"][:2]
        for _ in range(100):
            area = self.py_random.uniform(*self.scale) * height * width
            aspect = self.py_random.uniform(*self.ratio)
            h, w = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if 0 < h < height and 0 < w < width:
                return {"box": (self.py_random.randint(0, height - h), self.py_random.randint(0, width - w), h, w)}
        return {"box": None}

    def apply(self, img, box=None, **params):
        if box is None:
            return img
        top, left, h, w = box
        out = img.copy()
        out[top:top + h, left:left + w] = self.fill
        return out

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("scale", "ratio", "fill")


def _validated(cfg: dict | None) -> dict:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"transforms: unknown key(s) {unknown}; valid keys: {sorted(DEFAULTS)}")
    merged = {**DEFAULTS, **cfg}
    size = merged["size"]
    if len(size) != 2 or min(int(v) for v in size) < 1:
        raise ValueError(f"transforms: size must be [height, width] with positive ints, got {size!r}")
    for key in ("flip", "color_jitter_p", "random_erasing"):
        if not 0.0 <= float(merged[key]) <= 1.0:
            raise ValueError(f"transforms: {key} is a probability in [0, 1], got {merged[key]!r}")
    if float(merged["color_jitter"]) < 0 or int(merged["pad"]) < 0:
        raise ValueError(f"transforms: pad and color_jitter must be >= 0, got {merged['pad']}, {merged['color_jitter']}")
    for key in ("mean", "std"):
        if len(merged[key]) != 3:
            raise ValueError(f"transforms: {key} needs 3 values (RGB), got {merged[key]!r}")
    if min(merged["std"]) <= 0:
        raise ValueError(f"transforms: std values must be > 0, got {merged['std']!r}")
    merged["erasing_scale"] = _range_pair(merged["erasing_scale"], "erasing_scale", "0 < lo <= hi <= 1", upper=1.0)
    merged["erasing_ratio"] = _range_pair(merged["erasing_ratio"], "erasing_ratio", "0 < lo <= hi")
    return merged


def _range_pair(value, key: str, rule: str, upper: float = math.inf) -> list[float]:
    """``[lo, hi]`` with finite numbers ``0 < lo <= hi <= upper`` (checked here, not when the first image is erased)."""
    problem = f"data.transforms.{key} must be [lo, hi] with {rule}, got {value!r}"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        raise ValueError(problem)
    if any(isinstance(v, bool) or not isinstance(v, numbers.Real) for v in value):
        raise ValueError(problem)
    lo, hi = (float(v) for v in value)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi <= upper):
        raise ValueError(problem)
    return [lo, hi]


def build_transforms(cfg: dict | None, train: bool) -> A.Compose:
    """Pipeline from a config dict (keys and defaults: `DEFAULTS`); call as `pipeline(image=hwc_uint8)["image"]`."""
    cfg = _validated(cfg)
    height, width = (int(v) for v in cfg["size"])
    steps: list = [A.Resize(height, width)]
    if train:
        if cfg["pad"] > 0:
            pad = int(cfg["pad"])
            steps += [
                A.PadIfNeeded(height + 2 * pad, width + 2 * pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
                A.RandomCrop(height, width),
            ]
        if cfg["flip"] > 0:
            steps.append(A.HorizontalFlip(p=float(cfg["flip"])))
        strength = float(cfg["color_jitter"])
        if strength > 0:
            steps.append(A.ColorJitter(brightness=strength, contrast=strength, saturation=strength,
                                       hue=min(0.5, strength / 4), p=float(cfg["color_jitter_p"])))
    steps.append(A.Normalize(mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), max_pixel_value=255.0))
    if train and cfg["random_erasing"] > 0:
        steps.append(RandomErasing(cfg["erasing_scale"], cfg["erasing_ratio"], fill=0.0, p=float(cfg["random_erasing"])))
    steps.append(ToTensorV2())
    return A.Compose(steps)
