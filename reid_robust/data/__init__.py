"""Datasets, identity-label noise, PK samplers and image pipelines (see docs/ARCHITECTURE.md and docs/data.md)."""
from .dataset import ImageDataset, ImageReadError
from .market1501 import load_market_folder, parse_market_filename
from .noise import (
    NOISE_MODES,
    confusable_identities,
    inject_identity_noise,
    load_noisy_label_list,
    noise_summary,
    write_noise_manifest,
)
from .records import DatasetSplits, ImageRecord
from .registry import build_dataset, dataset_names, register_dataset
from .samplers import DistributedPKSampler, PKSampler
from .summary import summarize
from .synthetic import generate_synthetic
from .transforms import build_transforms

__all__ = [
    "NOISE_MODES",
    "DatasetSplits",
    "DistributedPKSampler",
    "ImageDataset",
    "ImageReadError",
    "ImageRecord",
    "PKSampler",
    "build_dataset",
    "build_transforms",
    "confusable_identities",
    "dataset_names",
    "generate_synthetic",
    "inject_identity_noise",
    "load_market_folder",
    "load_noisy_label_list",
    "noise_summary",
    "parse_market_filename",
    "register_dataset",
    "summarize",
    "write_noise_manifest",
]
