"""Shared fixtures: a tiny synthetic Market-1501-style tree and a tiny training config."""
from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = {"num_identities": 12, "height": 32, "width": 16, "num_distractors": 6, "num_junk": 4}


@pytest.fixture(scope="session")
def tiny_market_root(tmp_path_factory) -> Path:
    from reid_robust.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("tiny_market")
    generate_synthetic(root, layout="market", seed=0, **TINY_DATA)
    return root


def tiny_overrides(root: Path, out: Path) -> list[str]:
    """Overrides that make the quickstart config run in seconds: 6 identities, 32x16 images, resnet18."""
    opts = ", ".join(f"{k}: {v}" for k, v in TINY_DATA.items())
    return [f"output_dir={out}", "data.dataset=synthetic_market", f"data.root={root}", f"data.options={{{opts}}}",
            "data.num_workers=0", "data.sampler.num_identities=4", "data.sampler.num_instances=2",
            "data.sampler.batches_per_epoch=2", "data.transforms.size=[32, 16]", "data.transforms.pad=2",
            "model.backbone=resnet18", "train.progress=false", "eval.untrained=false", "eval.every=0",
            "train.warmup_epochs=1", "train.scheduler=multistep", "train.milestones=[100]"]
