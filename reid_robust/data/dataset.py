"""`ImageDataset`: records -> {"image": FloatTensor[3, H, W], "label", "pid", "camid", "index"}."""
from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Callable

import numpy as np
import torch
from numpy.typing import ArrayLike
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from .records import ImageRecord


class ImageReadError(OSError):
    """An image file is missing, unreadable or corrupt; the message names the file."""


def load_image(record: ImageRecord) -> np.ndarray:
    """RGB uint8 array [H, W, 3] of the record's image, cropped to `record.bbox` (x, y, w, h) if set."""
    img: Image.Image
    try:
        with Image.open(record.path) as img:
            img = img.convert("RGB")
    except FileNotFoundError:
        raise ImageReadError(f"image file not found: {record.path}") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageReadError(f"cannot read image file {record.path}: {err}") from err
    if record.bbox is not None:
        x, y, w, h = (float(v) for v in record.bbox)
        left, top = max(0, round(x)), max(0, round(y))
        right, bottom = min(img.width, round(x + w)), min(img.height, round(y + h))
        if right <= left or bottom <= top:
            raise ImageReadError(f"bounding box {record.bbox} lies outside image {record.path} ({img.width}x{img.height})")
        img = img.crop((left, top, right, bottom))
    return np.asarray(img)


def _read_only(array: np.ndarray) -> np.ndarray:
    """A cached image that a transform writing into its input would corrupt: make such a write an error."""
    array.setflags(write=False)
    return array


def _seed_pipeline_for_one_image(transform: Callable, seed: int) -> None:
    """Give the whole albumentations pipeline one fresh generator pair (10x cheaper than ``set_random_seed``,
    which builds a pair per transform)."""
    if hasattr(transform, "set_random_state"):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
    elif hasattr(transform, "set_random_seed"):
        transform.set_random_seed(seed % 2**32)


class ImageDataset(Dataset):
    """Map-style dataset over `records`.

    transform: an albumentations pipeline (`build_transforms`), called as `transform(image=array)["image"]`;
    None gives the unnormalised image as float [3, H, W] in [0, 1].
    labels: optional [N] training labels (e.g. noisy ones) overriding the records' pids in "label";
    "pid" always holds the record's (clean) pid.

    In a DataLoader worker the pipeline is reseeded from the worker's torch seed (albumentations keeps its own
    random state, which forked workers would otherwise share, repeating the same augmentations in every
    worker and every epoch); in the main process it is seeded once from `torch.initial_seed()`. A seeded
    DataLoader `generator` (or `torch.manual_seed` with num_workers=0) makes augmentation reproducible.
    An index given as ``(index, seed)`` (``PKSampler(augment_seeds=True)``) seeds the pipeline for that one
    image instead, so its augmentation no longer depends on workers, ranks or the images drawn before it.

    cache_images: decode every image once, here, and keep the RGB uint8 arrays (read-only) in memory, so
    that an epoch only augments. It costs H x W x 3 bytes per image (Market-1501's 12,936 training crops of
    128 x 64: 318 MB) in the building process; DataLoader workers forked after it share the arrays
    (copy-on-write, never written), and each DDP rank holds its own copy. ``cache_bytes`` says what it holds.
    """

    def __init__(self, records: Sequence[ImageRecord], transform: Callable | None, labels: ArrayLike | None = None,
                 cache_images: bool = False):
        self.records = list(records)
        self.transform = transform
        if labels is not None:
            labels = np.asarray(labels)
            if labels.shape != (len(self.records),):
                raise ValueError(f"ImageDataset: labels must have shape ({len(self.records)},), got {labels.shape}")
        self.labels = labels
        self._seeded_for: tuple[int, int] | None = None
        self.cache: list[np.ndarray] | None = [_read_only(load_image(r)) for r in self.records] if cache_images else None

    @property
    def cache_bytes(self) -> int:
        """Bytes of decoded images held in memory (0 without ``cache_images``)."""
        return sum(a.nbytes for a in self.cache) if self.cache is not None else 0

    def _seed_transform(self) -> None:
        """Seed the pipeline once per worker (or once in the main process) from torch's seed."""
        info = torch.utils.data.get_worker_info()
        key = (-1, torch.initial_seed()) if info is None else (info.id, info.seed)
        if self._seeded_for == key:
            return
        if self.transform is not None and hasattr(self.transform, "set_random_seed"):
            self.transform.set_random_seed(key[1] % 2**32)
        self._seeded_for = key

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int | tuple[int, int]) -> dict:
        sample_seed = None
        if isinstance(index, tuple):
            index, sample_seed = index
        record = self.records[index]
        array = self.cache[index] if self.cache is not None else load_image(record)
        if self.transform is None:
            image = torch.from_numpy(array.copy()).permute(2, 0, 1).float().div_(255.0)
        else:
            if sample_seed is None:
                self._seed_transform()
            else:
                _seed_pipeline_for_one_image(self.transform, int(sample_seed))
                self._seeded_for = None  # the next unseeded index reseeds from torch's seed
            image = self.transform(image=array)["image"]
        label = record.pid if self.labels is None else int(self.labels[index])
        return {"image": image, "label": int(label), "pid": int(record.pid), "camid": int(record.camid), "index": index}
