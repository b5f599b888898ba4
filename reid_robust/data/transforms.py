"""Albumentations pipelines for ReID / metric-learning images (BoT recipe, Luo et al., CVPRW 2019).

Train: resize -> pad + random crop -> horizontal flip -> colour jitter -> normalise -> random erasing
(Zhong et al., AAAI 2020; applied after normalisation with fill 0, i.e. the per-channel mean) -> tensor.
Test: resize -> normalise -> tensor. Either way the output is a float32 tensor [3, H, W].
"""
from __future__ import annotations

import math

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from reid_robust.config import TransformConfig


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


def build_transforms(t: TransformConfig, train: bool) -> A.Compose:
    """The train or test pipeline of ``data.transforms`` (checked when the config was built); call it as
    ``pipeline(image=hwc_uint8)["image"]`` to get a float32 tensor [3, H, W]."""
    height, width = t.size
    steps: list = [A.Resize(height, width)]
    if train:
        if t.pad > 0:
            steps += [
                A.PadIfNeeded(height + 2 * t.pad, width + 2 * t.pad, border_mode=cv2.BORDER_CONSTANT, fill=0),
                A.RandomCrop(height, width),
            ]
        if t.flip > 0:
            steps.append(A.HorizontalFlip(p=t.flip))
        if t.color_jitter > 0:
            strength = t.color_jitter
            steps.append(A.ColorJitter(brightness=strength, contrast=strength, saturation=strength,
                                       hue=min(0.5, strength / 4), p=t.color_jitter_p))
    steps.append(A.Normalize(mean=t.mean, std=t.std, max_pixel_value=255.0))
    if train and t.random_erasing > 0:
        steps.append(RandomErasing(t.erasing_scale, t.erasing_ratio, fill=0.0, p=t.random_erasing))
    steps.append(ToTensorV2())
    return A.Compose(steps)
