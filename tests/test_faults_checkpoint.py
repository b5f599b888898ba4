"""Loading a file never runs code (issue 12): a checkpoint whose unpickling would create a marker file is refused
in one line by every entry point that loads checkpoints or torch/numpy files; checkpoints of reid_robust 0.1
(numpy RNG state inside) still load and resume; a sweep reuses a cell only when its stored config is the cell's.
"""
from __future__ import annotations

import importlib.util
import json
import os
import random
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

from reid_robust.engine import checkpoint as ck

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = str(REPO / "configs" / "quickstart.yaml")
OLD_CHECKPOINT_CODE = "1aa0684"  # the last commit whose engine/checkpoint.py loaded with weights_only=False


MARKER_VARIABLE = "REID_ROBUST_TEST_MARKER"


class TouchOnLoad:
    """Unpickling this runs ``touch <marker>`` through os.system: what a malicious checkpoint does. The marker
    is ``$REID_ROBUST_TEST_MARKER`` when none is given, so that one file serves every test with its own marker."""

    def __init__(self, marker: Path | None = None):
        self.marker = shlex.quote(str(marker)) if marker else f'"${MARKER_VARIABLE}"'

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _tool(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", REPO / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tiny_run(tiny_market_root, tmp_path_factory):
    """One epoch of 2 batches on the tiny synthetic tree: a real ``last.pth`` with every resumable entry."""
    from reid_robust.engine.config import load_config
    from reid_robust.engine.trainer import train

    out = tmp_path_factory.mktemp("faults_ckpt") / "run"
    train(load_config(QUICKSTART, tiny_overrides(tiny_market_root, out) + ["train.epochs=1"]))
    return out / "checkpoints" / "last.pth"


@pytest.fixture(scope="module")
def evil_checkpoint(tiny_run):
    """The real checkpoint plus one entry whose unpickling would create the file ``$REID_ROBUST_TEST_MARKER``."""
    state = ck.load_checkpoint(tiny_run)
    state["extra"] = TouchOnLoad()
    path = tiny_run.parent / "evil.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def evil(evil_checkpoint, tmp_path, monkeypatch):
    """``(path, marker)``: the malicious checkpoint and the file its unpickling would create for this test."""
    marker = tmp_path / "marker"
    monkeypatch.setenv(MARKER_VARIABLE, str(marker))
    return evil_checkpoint, marker


def _one_line_refusal(capsys, path: Path, code: int) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2, err
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert str(path) in err[0] and "was refused" in err[0] and "posix.system" in err[0], err[0]
    return err[0]


def test_the_malicious_checkpoint_really_runs_code_when_unpickled_unsafely(evil):
    path, marker = evil  # the test's own check: without weights_only the payload creates the marker
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_library_loader_refuses_in_one_line_naming_the_file_and_the_global(evil):
    path, marker = evil
    with pytest.raises(ValueError) as info:
        ck.load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "posix.system" in message
    assert "only tensors and plain containers are loaded" in message
    with pytest.raises(ValueError, match="was refused"):
        ck.load_model_from_checkpoint(path)
    assert not marker.exists()


def test_eval_tool(evil, tiny_market_root, capsys):
    path, marker = evil
    code = _tool("eval").main(["--checkpoint", str(path), "--data-root", str(tiny_market_root)])
    _one_line_refusal(capsys, path, code)
    assert not marker.exists()


def test_export_tool(evil, tmp_path, capsys):
    path, marker = evil
    code = _tool("export").main(["--checkpoint", str(path), "--format", "npz", "--split", "query",
                                 "--out", str(tmp_path / "q.npz")])
    _one_line_refusal(capsys, path, code)
    assert not marker.exists() and not (tmp_path / "q.npz").exists()


def test_audit_tool(evil, tmp_path, capsys):
    path, marker = evil
    code = _tool("audit_labels").main(["--checkpoint", str(path), "--out", str(tmp_path / "audit")])
    _one_line_refusal(capsys, path, code)
    assert not marker.exists() and not (tmp_path / "audit").exists()  # refused before anything is written


def test_embed_tool(evil, tiny_market_root, tmp_path, capsys):
    path, marker = evil
    code = _tool("embed").main(["--checkpoint", str(path), "--images", str(tiny_market_root / "query"),
                                "--out", str(tmp_path / "e.npz"), "--device", "cpu"])
    _one_line_refusal(capsys, path, code)
    assert not marker.exists() and not (tmp_path / "e.npz").exists()


def test_embedder_from_checkpoint(evil):
    from reid_robust.engine.embed import Embedder

    path, marker = evil
    with pytest.raises(ValueError) as info:
        Embedder.from_checkpoint(path, device="cpu")
    message = str(info.value)
    assert "\n" not in message and str(path) in message and "was refused" in message and "posix.system" in message
    assert not marker.exists()


def _train_tool(root: Path, out: Path, *overrides: str) -> int:
    return _tool("train_reid").main(["--config", QUICKSTART, *tiny_overrides(root, out), "train.epochs=1",
                                     *overrides])


def test_train_resume(evil, tiny_market_root, tmp_path, capsys):
    path, marker = evil
    code = _train_tool(tiny_market_root, tmp_path / "r", f"train.resume={path}")
    _one_line_refusal(capsys, path, code)
    assert not marker.exists() and not (tmp_path / "r" / "checkpoints" / "last.pth").exists()


def test_confusable_checkpoint(evil, tiny_market_root, tmp_path, capsys):
    path, marker = evil
    code = _train_tool(tiny_market_root, tmp_path / "p", "data.noise.rate=0.5", "data.noise.mode=pattern",
                       f"data.noise.confusable={path}")
    _one_line_refusal(capsys, path, code)
    assert not marker.exists()


def test_confusable_npy_with_pickled_objects(tiny_market_root, tmp_path, capsys):
    marker, path = tmp_path / "marker", tmp_path / "confusable.npy"
    np.save(path, np.array([TouchOnLoad(marker), 1], dtype=object), allow_pickle=True)
    code = _train_tool(tiny_market_root, tmp_path / "p", "data.noise.rate=0.5", "data.noise.mode=pattern",
                       f"data.noise.confusable={path}")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(path) in err[0] and "pickled (object) arrays" in err[0], err
    assert not marker.exists()


def test_pretrained_weights(tiny_market_root, tmp_path, capsys):
    marker, path = tmp_path / "marker", tmp_path / "resnet18.pth"
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7), "extra": TouchOnLoad(marker)}, path)
    code = _train_tool(tiny_market_root, tmp_path / "w", f"model.pretrained={path}")
    _one_line_refusal(capsys, path, code)
    assert not marker.exists()


def _sweep_args(root: Path, out: Path) -> list[str]:
    return ["--config", QUICKSTART, "--losses", "triplet", "--rates", "0", "--modes", "symmetric", "--seeds", "0",
            "--out", str(out), "--no-progress", *tiny_overrides(root, out / "base")]


def test_sweep_cell_checkpoint(evil, tiny_market_root, tmp_path, capsys, monkeypatch):
    import reid_robust.engine.trainer as trainer

    path, marker = evil
    out = tmp_path / "sweep"
    cell = out / "triplet" / "clean" / "seed0" / "checkpoints" / "last.pth"
    cell.parent.mkdir(parents=True)
    cell.symlink_to(path)  # an interrupted cell, as the sweep resumes it
    monkeypatch.setattr(trainer, "train", lambda cfg: pytest.fail("a refused cell must not train"))
    code = _tool("noise_sweep").main(_sweep_args(tiny_market_root, out))
    _one_line_refusal(capsys, cell, code)
    assert not marker.exists()


# ------------------------------------------------------------------ checkpoints of reid_robust 0.1


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), float(torch.rand(()))


def _assert_restores_the_streams(path: Path, expected: tuple) -> dict:
    random.seed(123)  # move every stream elsewhere
    np.random.seed(123)
    torch.manual_seed(123)
    state = ck.load_checkpoint(path)
    ck.set_rng_state(state["rng"])
    assert _draws() == expected
    return state


def test_old_format_checkpoint_loads_and_restores_the_random_streams(tiny_run, tmp_path):
    """Built as reid_robust 0.1's trainer saved it: python's and numpy's get_state() tuples, torch.save."""
    state = ck.load_checkpoint(tiny_run)
    state["rng"] = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    expected = _draws()
    path = tmp_path / "old.pth"
    torch.save(state, path)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    assert "numpy.ndarray" in unsafe  # really the old format: a plain weights-only load would refuse it
    loaded = _assert_restores_the_streams(path, expected)
    assert all(torch.equal(loaded["model"][k], v) for k, v in state["model"].items())


def _old_checkpoint_module(tmp_path: Path):
    """reid_robust 0.1's engine/checkpoint.py (from git history), imported as a module of its own."""
    try:
        source = subprocess.run(["git", "show", f"{OLD_CHECKPOINT_CODE}:reid_robust/engine/checkpoint.py"],
                                cwd=REPO, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git history of reid_robust 0.1 is not available (not a git clone)")
    assert "weights_only=False" in source
    path = tmp_path / "checkpoint_0_1.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("checkpoint_0_1", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_checkpoint_written_by_the_old_code_loads_and_resumes(tiny_run, tiny_market_root, tmp_path):
    from reid_robust.engine.config import load_config
    from reid_robust.engine.trainer import train

    old = _old_checkpoint_module(tmp_path)
    state = ck.load_checkpoint(tiny_run)
    state["rng"] = old.rng_state()
    expected = _draws()
    path = tmp_path / "old" / "last.pth"
    old.atomic_save(state, path)
    _assert_restores_the_streams(path, expected)
    out = tmp_path / "resumed"
    train(load_config(QUICKSTART, tiny_overrides(tiny_market_root, out) + ["train.epochs=2", f"train.resume={path}"]))
    resumed = out / "checkpoints" / "last.pth"
    assert ck.load_checkpoint(resumed)["epoch"] == 2
    assert torch.serialization.get_unsafe_globals_in_checkpoint(resumed) == []  # written in the plain form


def test_new_checkpoints_load_with_plain_weights_only(tiny_run):
    assert torch.serialization.get_unsafe_globals_in_checkpoint(tiny_run) == []
    state = torch.load(tiny_run, weights_only=True)  # no admitted globals at all
    assert set(state) >= {"model", "config", "optimizer", "scheduler", "scaler", "losses", "rng", "epoch"}


# ------------------------------------------------------------------ sweep cells and their stored config


def _recording_train(calls: list):
    """A stand-in for train() that stores the config as the trainer does (paths absolute, in last.pth)."""
    from reid_robust.config import with_absolute_paths

    def train(cfg) -> dict:
        calls.append(cfg.output_dir)
        out = Path(cfg.output_dir)
        ck.atomic_save({"model": {}, "config": with_absolute_paths(cfg).to_dict(), "epoch": 1},
                       out / "checkpoints" / "last.pth")
        (out / "metrics.json").write_text(json.dumps({"mAP": 0.5, "rank1": 0.5, "train_time_s": 1.0}))
        return {}
    return train


def _sweep_base(*extra: str):
    from reid_robust.config import load_config

    return load_config(QUICKSTART, ["output_dir=runs/x", "data.root=data/market", *extra])


def test_sweep_reuses_cells_only_with_their_config(tmp_path, monkeypatch):
    from reid_robust.analysis.sweep import run_sweep

    monkeypatch.chdir(tmp_path)  # relative data.root: stored absolute, compared as the same path
    calls: list = []
    grid = (["triplet", "osm_caa"], [0, 0.2], ["symmetric"], [0])
    run_sweep(_sweep_base(), *grid, "sweep", train_fn=_recording_train(calls), progress=False)
    assert len(calls) == 4
    # keys that only drive the run may change: nothing is trained again
    run_sweep(_sweep_base("data.num_workers=0", "train.num_threads=1", "train.progress=false"), *grid, "sweep",
              train_fn=_recording_train(calls), progress=False)
    assert len(calls) == 4
    # another learning rate: the finished cells were trained with another config
    with pytest.raises(ValueError) as info:
        run_sweep(_sweep_base("train.lr=0.5"), *grid, "sweep", train_fn=_recording_train(calls), progress=False)
    message = str(info.value)
    assert "\n" not in message and "differing keys: train.lr." in message and "triplet/clean/seed0" in message
    assert len(calls) == 4


def test_sweep_refuses_to_resume_an_interrupted_cell_of_another_config(tmp_path, monkeypatch):
    from reid_robust.analysis.sweep import Cell, cell_config, run_sweep

    monkeypatch.chdir(tmp_path)
    stale = cell_config(_sweep_base("train.epochs=3", "seed=9"), Cell("triplet", "symmetric", 0.2, 0), "sweep")
    ck.atomic_save({"model": {}, "config": stale.to_dict(), "epoch": 1},
                   Path(stale.output_dir) / "checkpoints" / "last.pth")
    calls: list = []
    with pytest.raises(ValueError, match=r"triplet/symmetric_r0.2/seed0 .*differing keys: train.epochs\."):
        run_sweep(_sweep_base(), ["triplet"], [0.2], ["symmetric"], [0], "sweep", train_fn=_recording_train(calls),
                  progress=False)
    assert calls == []  # refused before any cell trained
