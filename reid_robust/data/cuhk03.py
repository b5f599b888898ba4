"""CUHK03-NP: CUHK03 (Li et al., "DeepReID: Deep Filter Pairing Neural Network for Person Re-identification",
CVPR 2014) under the new protocol of Zhong et al. ("Re-ranking Person Re-identification with k-reciprocal
Encoding", CVPR 2017).

Tree: `cuhk03-np/labeled/` (hand-drawn boxes) and `cuhk03-np/detected/` (DPM boxes), each with
`bounding_box_train/`, `query/`, `bounding_box_test/`; file names `PPPP_cC_N.png` (4-digit pid, camera 1-2 of
the identity's camera pair, image number). 767 training identities and 700 test identities; labeled: 7,368
training, 1,400 query and 5,328 gallery images; detected: 7,365 / 1,400 / 5,332. Evaluated with the Market-1501
rule (same-camera matches of the query identity are ignored). The raw `cuhk-03.mat` is not read.
"""
from __future__ import annotations

import os
import re

from .files import find_root
from .named_folders import NamedLayout, load_named_layout, source_hint
from .records import DatasetSplits

VARIANTS = ("labeled", "detected")
SOURCE = ("CUHK03-NP is obtained from https://github.com/zhunzhong07/person-re-ranking/tree/master/CUHK03-NP; "
          "see datasets/README.md")
LAYOUT = NamedLayout(
    dataset="CUHK03-NP",
    pattern=re.compile(r"^(\d{4})_c(\d)_(\d+)\.(?:png|jpe?g|bmp)$", re.IGNORECASE),
    example="0001_c1_1.png",
    num_cameras=2,
    folders={"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"},
    source=SOURCE,
)


def load_cuhk03_np(root: str | os.PathLike, variant: str = "labeled") -> DatasetSplits:
    """Load the `variant` ("labeled" or "detected") boxes of CUHK03-NP from `root` (or `root/cuhk03-np`)."""
    if variant not in VARIANTS:
        raise ValueError(f"CUHK03-NP: variant must be 'labeled' or 'detected', got {variant!r}")
    with source_hint(SOURCE):
        base = find_root(root, variant, ("cuhk03-np",), "CUHK03-NP")
    return load_named_layout(LAYOUT, base / variant, f"cuhk03_np_{variant}")
