"""The commands of README.md's "Your own data" section, run as written there (read from the README, so the two
cannot drift): reid-embed and reid-eval on a small checkpoint placed where the commands expect it, and the
training commands with small-data overrides appended (an identity-folder dataset, a timm backbone)."""
from __future__ import annotations

import json
import shlex
import shutil
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, TINY_DATA
from PIL import Image
from test_data_folder import identity_tree
from test_embed import make_checkpoint

FAST = ["data.num_workers=0", "data.sampler.num_identities=4", "data.sampler.num_instances=2",
        "data.sampler.batches_per_epoch=2", "data.transforms.size=[32, 16]", "data.transforms.pad=2",
        "train.progress=false", "eval.untrained=false", "eval.every=0", "train.warmup_epochs=1", "train.epochs=1"]


def readme_commands(section: str = "## Your own data") -> list[str]:
    """The shell commands in the ```bash blocks of one README section."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(section + "\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in body.split("```bash\n")[1:]]
    return [line for block in blocks for line in block.splitlines() if line.strip()]


def command(marker: str, program: str = "reid-train") -> list[str]:
    found = [c for c in readme_commands() if c.startswith(program + " ") and marker in c]
    assert len(found) == 1, f"README's 'Your own data' has {len(found)} {program} commands with {marker!r}"
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


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory):
    """A resnet18 checkpoint with an 8-d embedding and 32x16 test images (made, not trained: seconds)."""
    return make_checkpoint(tmp_path_factory.mktemp("own_data"), num_identities=4, dim=8)[0]


def _place_checkpoint(argv: list[str], checkpoint, workdir):
    """Copies the small checkpoint to the relative path the command's ``--checkpoint`` names."""
    target = workdir / argv[argv.index("--checkpoint") + 1]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(checkpoint, target)


def test_embed_a_folder_of_photos(workdir, small_checkpoint, capsys):
    from reid_robust.evaluation.report import load_features

    argv = command("--images", "reid-embed")
    _place_checkpoint(argv, small_checkpoint, workdir)
    folder = workdir / argv[argv.index("--images") + 1]
    rng = np.random.default_rng(0)
    names = ["a.jpg", "b.png", "trip/c.jpg", "trip/day2/d.jpg", "trip/day2/e.jpg"]  # searched recursively
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (40, 20, 3), dtype=np.uint8)).save(folder / name)
    assert run(argv) == 0
    assert "wrote 5 embeddings of dimension 8" in capsys.readouterr().out
    saved = load_features(workdir / argv[argv.index("--out") + 1])
    assert saved.feats.shape == (5, 8) and np.isfinite(saved.feats).all()
    assert sorted(Path(p).resolve() for p in saved.paths) == sorted((folder / n).resolve() for n in names)
    assert saved.pids is None and saved.camids is None


def test_eval_identity_folders_without_cameras(workdir, small_checkpoint, capsys):
    argv = command("--no-camera-filter", "reid-eval")
    _place_checkpoint(argv, small_checkpoint, workdir)
    identity_tree(workdir / "my_data")  # 3 identities: 2 query and 3 gallery images each
    assert run(argv) == 0
    out = capsys.readouterr().out
    assert "protocol market, 6 queries x 9 gallery, metric cosine, no camera filter" in out, out
    header, values = ([c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
                      if line.startswith("| result"))  # the printed metrics table: a header and one row
    table = dict(zip(header, values))
    assert table["queries"] == "6" and 0 < float(table["mAP (%)"]) <= 100, out


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
