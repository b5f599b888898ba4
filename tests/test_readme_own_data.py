"""The training commands of README.md's "Your own data" section, run as written there (read from the README,
so the two cannot drift), with small-data overrides appended: an identity-folder dataset, a timm backbone."""
from __future__ import annotations

import json
import shlex
from importlib.metadata import entry_points

import pytest
from conftest import REPO, TINY_DATA
from test_data_folder import identity_tree

FAST = ["data.num_workers=0", "data.sampler.num_identities=4", "data.sampler.num_instances=2",
        "data.sampler.batches_per_epoch=2", "data.transforms.size=[32, 16]", "data.transforms.pad=2",
        "train.progress=false", "eval.untrained=false", "eval.every=0", "train.warmup_epochs=1", "train.epochs=1"]


def readme_commands(section: str = "## Your own data") -> list[str]:
    """The shell commands in the ```bash blocks of one README section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(section + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in body.split("```bash\n")[1:]]
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def command(marker: str) -> list[str]:
    found = [c for c in readme_commands() if c.startswith("reid-train ") and marker in c]
    assert len(found) == 1, f"README's 'Your own data' has {len(found)} reid-train commands with {marker!r}"
    return shlex.split(found[0])


def run(argv: list[str]) -> int:
    """``argv`` through the installed console script's entry point (``reid-train`` -> its ``main``)."""
    (script,) = [e for e in entry_points(group="console_scripts") if e.name == argv[0]]
    return script.load()(argv[1:])


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A fresh folder where the README's relative paths (configs/, my_data/, runs/) resolve."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_train_on_an_identity_folder_dataset(workdir):
    argv = command("data.dataset=folder")
    identity_tree(workdir / "my_data")
    assert run(argv + FAST) == 0
    metrics = json.loads((workdir / "runs/my_data/metrics.json").read_text())
    assert metrics["num_valid_queries"] == 6 and 0 < metrics["mAP"] <= 1


def test_train_one_epoch_with_a_timm_backbone(workdir, tiny_market_root):
    pytest.importorskip("timm")  # the test extra installs it
    import torch

    argv = command("model.backbone=timm:")
    options = ", ".join(f"{k}: {v}" for k, v in TINY_DATA.items())
    assert run(argv + FAST + [f"data.root={tiny_market_root}", f"data.options={{{options}}}"]) == 0
    out = workdir / "runs/timm_resnet18"
    assert json.loads((out / "metrics.json").read_text())["mAP"] > 0
    ckpt = torch.load(out / "checkpoints/last.pth", weights_only=True)
    assert ckpt["config"]["model"]["backbone"] == "timm:resnet18" and ckpt["epoch"] == 1
