"""Datasets, identity-label noise, PK samplers and image pipelines (see docs/ARCHITECTURE.md and docs/data.md)."""
from .dataset import ImageDataset, ImageReadError
from .market1501 import load_market_folder, parse_market_filename
from .records import DatasetSplits, ImageRecord
from .registry import build_dataset, dataset_names, register_dataset
from .samplers import DistributedPKSampler, PKSampler
from .summary import summarize
from .transforms import build_transforms

__all__ = [
    "DatasetSplits",
    "DistributedPKSampler",
    "ImageDataset",
    "ImageReadError",
    "ImageRecord",
    "PKSampler",
    "build_dataset",
    "build_transforms",
    "dataset_names",
    "load_market_folder",
    "parse_market_filename",
    "register_dataset",
    "summarize",
]
