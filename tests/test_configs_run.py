"""Every shipped config is loaded, built and trained for a few iterations on tiny synthetic data.

Market-1501-style configs run on the synthetic Market tree, CUB-200-2011-style configs on the synthetic
CUB tree; only sizes are overridden (epochs, batches, image size), never the losses, model or optimiser.
"""
from __future__ import annotations

import json

import pytest
from conftest import REPO, tiny_overrides

from reid_robust.engine.config import load_config
from reid_robust.engine.trainer import train

CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml"))
TINY_CUB = "{num_identities: 8, height: 32, width: 32, images_per_class: [4, 5]}"


@pytest.fixture(scope="module")
def tiny_cub_root(tmp_path_factory):
    from reid_robust.data.synthetic import generate_synthetic

    root = tmp_path_factory.mktemp("tiny_cub")
    generate_synthetic(root, layout="cub", seed=0, num_identities=8, height=32, width=32, images_per_class=(4, 5))
    return root


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_config_trains_a_few_iterations(path, tiny_market_root, tiny_cub_root, tmp_path):
    base = load_config(path)
    retrieval = "cub" in base.data.dataset or "cars" in base.data.dataset
    overrides = tiny_overrides(tiny_market_root, tmp_path / "run")
    keep_model = [o for o in overrides if not o.startswith("model.backbone")]
    if retrieval:
        keep_model = [o for o in keep_model if not o.startswith(("data.root", "data.dataset", "data.options",
                                                                 "data.transforms.size"))]
        keep_model += ["data.dataset=synthetic_cub", f"data.root={tiny_cub_root}", f"data.options={TINY_CUB}",
                       "data.transforms.size=[32, 32]"]
    if base.train.cleaning.restart_epochs:  # epochs too: two restarts after the first round
        first = base.train.cleaning.start_epoch
        keep_model.append(f"train.cleaning.restart_epochs=[{first}, {first + 1}]")
    cfg = load_config(path, keep_model + ["train.epochs=1"])
    assert cfg.model.backbone == base.model.backbone
    assert cfg.loss.terms == base.loss.terms
    metrics = train(cfg)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    key = "map_at_r" if retrieval else "mAP"
    assert 0.0 <= saved[key] <= 1.0 and saved[key] == metrics[key]
