"""`build_dataset(name, root, **options)`: a registry of dataset loaders that rejects unknown names/options."""
from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Callable

from reid_robust.registry import Registry

from .records import DatasetSplits

DatasetLoader = Callable[..., DatasetSplits]
DATASETS: Registry[DatasetLoader] = Registry("dataset")


def register_dataset(name: str) -> Callable[[DatasetLoader], DatasetLoader]:
    """Decorator adding a loader `fn(root, **options) -> DatasetSplits` under `name`; duplicates are errors."""
    return DATASETS.register(name)


def dataset_names() -> list[str]:
    """The registered dataset names, sorted."""
    return DATASETS.names()


def dataset_options(name: str) -> list[str]:
    """The keyword options the loader of dataset ``name`` accepts (besides ``root``)."""
    return [p for p in inspect.signature(DATASETS.lookup(name)).parameters if p != "root"]


def build_dataset(name: str, root: str | os.PathLike, **options) -> DatasetSplits:
    """Load dataset `name` from `root`; `options` go to its loader (e.g. `crop_bbox=True` for cub200).

    ValueError for an unknown name (with the closest one); TypeError for an unknown option."""
    accepted = dataset_options(name)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise TypeError(f"dataset {name!r} got unknown option(s) {unknown}; accepted: {accepted or 'none'}")
    return DATASETS[name](root, **options)


@register_dataset("market1501")
def _market1501(root):
    from .market1501 import load_market1501

    return load_market1501(root)


@register_dataset("cub200")
def _cub200(root, crop_bbox: bool = False, split: str = "metric"):
    from .cub200 import load_cub200

    return load_cub200(root, crop_bbox=crop_bbox, split=split)


@register_dataset("msmt17")
def _msmt17(root, version: str = "auto", include_val: bool = True):
    from .msmt17 import load_msmt17

    return load_msmt17(root, version=version, include_val=include_val)


@register_dataset("cars196")
def _cars196(root, crop_bbox: bool = False):
    from .cars196 import load_cars196

    return load_cars196(root, crop_bbox=crop_bbox)


@register_dataset("sop")
def _sop(root):
    from .sop import load_sop

    return load_sop(root)


@register_dataset("cuhk03_np")
def _cuhk03_np(root, variant: str = "labeled"):
    from .cuhk03 import load_cuhk03_np

    return load_cuhk03_np(root, variant=variant)


@register_dataset("veri776")
def _veri776(root):
    from .veri776 import load_veri776

    return load_veri776(root)


@register_dataset("inshop")
def _inshop(root):
    from .inshop import load_inshop

    return load_inshop(root)


@register_dataset("dukemtmc")
def _dukemtmc(root):
    from .dukemtmc import load_dukemtmc

    return load_dukemtmc(root)


@register_dataset("folder")
def _folder(root, camera_pattern: str | None = None, train_fraction: float = 0.5):
    from .folder import load_folder

    return load_folder(root, camera_pattern=camera_pattern, train_fraction=train_fraction)


def _generate(root: str | os.PathLike, layout: str, options: dict) -> Path:
    """Generate (or reuse, when its marker matches `options`) the synthetic tree; see `generate_synthetic`."""
    import fcntl

    from .synthetic import generate_synthetic

    root = Path(root)
    root.parent.mkdir(parents=True, exist_ok=True)
    # several processes (a sweep, DDP ranks, parallel tests) may ask for the same tree at once: one writes it,
    # the others wait and then reuse it
    with open(root.parent / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return Path(generate_synthetic(root, layout=layout, **options))
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@register_dataset("synthetic_market")
def _synthetic_market(root, seed: int = 0, num_identities: int | None = None, num_cameras: int = 6,
                      height: int | None = None, width: int | None = None, train_fraction: float = 0.5,
                      num_distractors: int | None = None, num_junk: int | None = None):
    from .market1501 import load_market1501

    options = {"seed": seed, "num_identities": num_identities, "num_cameras": num_cameras, "height": height,
               "width": width, "train_fraction": train_fraction, "num_distractors": num_distractors,
               "num_junk": num_junk}
    return load_market1501(_generate(root, "market", options), name="synthetic_market")


@register_dataset("synthetic_cub")
def _synthetic_cub(root, seed: int = 0, num_identities: int | None = None, height: int | None = None,
                   width: int | None = None, images_per_class: tuple = (10, 16), crop_bbox: bool = False):
    from .cub200 import load_cub200

    options = {"seed": seed, "num_identities": num_identities, "height": height, "width": width,
               "images_per_class": tuple(images_per_class)}
    return load_cub200(_generate(root, "cub", options), crop_bbox=crop_bbox, name="synthetic_cub")
