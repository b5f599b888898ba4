"""VeRi-776 (Liu et al., "A Deep Learning-Based Approach to Progressive Vehicle Re-identification for Urban
Surveillance", ECCV 2016; "Large-scale vehicle re-identification in urban surveillance videos", ICME 2016).

Tree: `image_train/`, `image_query/`, `image_test/`; file names `VVVV_cCCC_FFFFFFFF_N.jpg` (4-digit vehicle id,
3-digit camera 1-20, frame, index). 576 training vehicles / 37,778 images; 200 test vehicles with 1,678 query
and 11,579 gallery images. Evaluated with the Market-1501 rule: gallery images of the query's vehicle taken by
the query's camera are ignored. The list and XML files of the release (`name_*.txt`, `train_label.xml`,
`gt_image.txt`, `jk_image.txt`) are not read.
"""
from __future__ import annotations

import os
import re

from .files import find_root
from .named_folders import NamedLayout, load_named_layout, source_hint
from .records import DatasetSplits

SOURCE = ("VeRi-776 is released by its authors on request: https://vehiclereid.github.io/VeRi/; "
          "see datasets/README.md")
LAYOUT = NamedLayout(
    dataset="VeRi-776",
    pattern=re.compile(r"^(\d{4})_c(\d{3})_(\d+)_(\d+)\.(?:jpe?g|png|bmp)$", re.IGNORECASE),
    example="0001_c001_00016450_0.jpg",
    num_cameras=20,
    folders={"train": "image_train", "query": "image_query", "gallery": "image_test"},
    source=SOURCE,
)


def load_veri776(root: str | os.PathLike) -> DatasetSplits:
    """Load VeRi-776 from `root` (or `root/VeRi`)."""
    with source_hint(SOURCE):
        base = find_root(root, "image_train", ("VeRi",), "VeRi-776")
    return load_named_layout(LAYOUT, base, "veri776")
