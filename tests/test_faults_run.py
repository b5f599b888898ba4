"""Faults around a training run (issue 12): runs never destroy runs, NaN never hides, one-line errors.

Each case checks the exit code of tools/train_reid.py's ``main`` (or the library error), the one line, and
sha256 digests showing that nothing of an earlier run changed.
"""
from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, tiny_overrides

from reid_robust.config import ConfigError, load_config
from reid_robust.engine import run_dir
from reid_robust.engine.checkpoint import load_checkpoint
from reid_robust.engine.trainer import train

QUICKSTART = REPO / "configs" / "quickstart.yaml"
sys.path.insert(0, str(REPO / "tools"))
import train_reid  # noqa: E402


@pytest.fixture(autouse=True)
def _keep_sigint_handler():
    """tools/train_reid.py ignores Ctrl-C once it is exiting; in this process, restore the handler after."""
    previous = signal.getsignal(signal.SIGINT)
    yield
    signal.signal(signal.SIGINT, previous)


def _args(root, out, *extra) -> list[str]:
    return ["--config", str(QUICKSTART), *tiny_overrides(root, out), "train.epochs=1", *extra]


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _main(capsys, *args) -> tuple[int, str]:
    code = train_reid.main(list(args))
    err = capsys.readouterr().err.strip().splitlines()
    return code, err[-1] if err else ""


@pytest.fixture(scope="module")
def finished_run(tiny_market_root, tmp_path_factory) -> Path:
    """One finished one-epoch run, trained once for the whole module (copy it before changing it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(load_config(QUICKSTART, tiny_overrides(tiny_market_root, out) + ["train.epochs=1"]))
    return out


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


def test_a_finished_run_is_refused_in_one_line_naming_both_ways_out(finished_run, tiny_market_root, capsys):
    before = _digests(finished_run)
    code, line = _main(capsys, *_args(tiny_market_root, finished_run))
    assert code == 2 and line.startswith("error: output_dir") and "holds an earlier run" in line
    assert f"train.resume={finished_run}/checkpoints/last.pth" in line and "train.overwrite=true" in line
    assert _digests(finished_run) == before


def test_overwrite_moves_the_earlier_run_to_previous(finished_run, tiny_market_root, tmp_path, capsys):
    out = _copy(finished_run, tmp_path / "run")
    before = _digests(out)
    code, _ = _main(capsys, *_args(tiny_market_root, out, "train.overwrite=true"))
    assert code == 0
    previous = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert len(previous) == 1 and _digests(previous[0]) == before  # moved, byte for byte
    assert (out / "checkpoints" / "last.pth").is_file() and (out / "metrics.json").is_file()
    assert "moved the earlier run" in (out / "train.log").read_text()
    assert not (out / ".lock").exists()


def test_a_second_run_in_a_locked_folder_is_refused_naming_the_pid(tiny_market_root, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                               "started": "2026-01-01T00:00:00+00:00"}))
        code, line = _main(capsys, *_args(tiny_market_root, out))
    finally:
        holder.kill()
        holder.wait()
    assert code == 2 and f"in use by another run (pid {holder.pid}" in line
    assert not (out / "checkpoints").exists() and (out / ".lock").is_file()  # nothing written, lock kept


def test_a_stale_lock_and_stale_tmp_files_are_taken_over_with_a_notice(tiny_market_root, tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / ".lock").write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": "x"}))
    stale = out / "checkpoints" / f".last.pth.{dead.pid}.tmp"
    stale.write_bytes(b"\0" * 1000)
    code, _ = _main(capsys, *_args(tiny_market_root, out))
    assert code == 0 and not stale.exists() and not (out / ".lock").exists()
    log = (out / "train.log").read_text()
    assert f"took over the lock {out / '.lock'} left by a dead process (pid {dead.pid}" in log
    assert "removed 1 stale temporary file" in log


def test_the_lock_is_released_when_training_fails(tiny_market_root, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="best_metric=recall@1"):
        train(load_config(QUICKSTART, tiny_overrides(tiny_market_root, out) + ["train.best_metric=recall@1"]))
    assert not (out / ".lock").exists()


def test_resume_appends_to_log_csv_without_repeating_epochs_and_applies_a_new_lr(finished_run, tiny_market_root,
                                                                                 tmp_path, capsys):
    out = _copy(finished_run, tmp_path / "run")
    with open(out / "log.csv", "a", newline="") as fh:  # as if epoch 2 had been logged after the checkpoint
        fh.write("2" + "," * (len((out / "log.csv").read_text().splitlines()[0].split(",")) - 1) + "\n")
    last = out / "checkpoints" / "last.pth"
    code, _ = _main(capsys, *_args(tiny_market_root, out, "train.epochs=2", "train.lr=0.01",
                                   f"train.resume={last}"))
    assert code == 0
    with open(out / "log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    ckpt = load_checkpoint(last)
    # tiny runs: one warm-up epoch, then a constant factor 1 (milestone 100): epoch 2 trains at the new lr
    assert [g["initial_lr"] for g in ckpt["optimizer"]["param_groups"]] == [0.01, 0.01]
    assert ckpt["scheduler"]["base_lrs"] == [0.01, 0.01]
    assert float(rows[1]["lr"]) == 0.01  # the old optimizer and scheduler state would keep 0.001
    assert "resuming with changed train.lr: 0.001 -> 0.01 (applied)" in (out / "train.log").read_text()


def test_resume_with_another_optimizer_is_refused_in_one_line(finished_run, tiny_market_root, capsys):
    before = _digests(finished_run)
    last = finished_run / "checkpoints" / "last.pth"
    code, line = _main(capsys, *_args(tiny_market_root, finished_run, "train.optimizer=sgd", f"train.resume={last}"))
    assert code == 2
    assert line == (f"error: train.optimizer changed from adam to sgd: cannot resume the adam optimizer state of "
                    f"{last}; keep train.optimizer=adam, or start a new run in another output_dir")
    assert _digests(finished_run) == before


def test_pair_loss_with_one_instance_is_refused_at_config_load(tiny_market_root, tmp_path):
    with pytest.raises(ConfigError, match=r"num_instances=1 gives no positive pairs, which loss.terms\[0\] \(triplet"):
        load_config(QUICKSTART, tiny_overrides(tiny_market_root, tmp_path) + ["data.sampler.num_instances=1"])
    only_ce = "loss.terms=[{name: cross_entropy, weight: 1.0, input: bn_feat}]"
    load_config(QUICKSTART, tiny_overrides(tiny_market_root, tmp_path) + ["data.sampler.num_instances=1", only_ce])


def _nan_after(monkeypatch, calls: int) -> None:
    """The model's embeddings become NaN from its ``calls``-th training forward on (a diverging network)."""
    from reid_robust.engine import trainer as trainer_module

    real = trainer_module.build_model_from_config
    seen = {"n": 0}

    def build(model_cfg):
        model = real(model_cfg)

        def hook(module, inputs, output):
            if module.training:
                seen["n"] += 1
                if seen["n"] >= calls:
                    return {k: v * float("nan") for k, v in output.items()}
            return None
        model.register_forward_hook(hook)
        return model
    monkeypatch.setattr(trainer_module, "build_model_from_config", build)


def test_divergence_stops_in_one_line_and_keeps_the_last_checkpoint(finished_run, tiny_market_root, tmp_path,
                                                                     capsys, monkeypatch):
    out = _copy(finished_run, tmp_path / "run")
    before = _digests(out / "checkpoints")
    _nan_after(monkeypatch, calls=1)
    code, line = _main(capsys, *_args(tiny_market_root, out, "train.epochs=3",
                                      f"train.resume={out}/checkpoints/last.pth"))
    assert code == 2
    assert line.startswith("error: training diverged at epoch 2, step 1: loss term ") and "= nan" in line
    assert f"{out}/checkpoints/last.pth is kept as it was" in line
    assert _digests(out / "checkpoints") == before


def test_non_finite_weights_are_never_saved_even_on_ctrl_c(finished_run, tiny_market_root, tmp_path, monkeypatch):
    from reid_robust.engine import steps as steps_module

    out = _copy(finished_run, tmp_path / "run")
    before = _digests(out / "checkpoints")
    real = steps_module.clip_gradients

    def poison_then_interrupt(optimizer, scaler, max_norm):  # a step that leaves NaN weights, then Ctrl-C
        for group in optimizer.param_groups:
            group["params"][0].data.fill_(float("nan"))
        os.kill(os.getpid(), signal.SIGINT)
        return real(optimizer, scaler, max_norm)
    monkeypatch.setattr(steps_module, "clip_gradients", poison_then_interrupt)
    with pytest.raises(FloatingPointError, match=r"before the checkpoint of epoch 2: model\..* is not finite; "
                                                 r"not saving, .*last\.pth is kept as it was"):
        train(load_config(QUICKSTART, tiny_overrides(tiny_market_root, out) + [
            "train.epochs=2", f"train.resume={out}/checkpoints/last.pth"]))
    assert _digests(out / "checkpoints") == before


def test_disk_full_during_a_checkpoint_is_one_line_and_keeps_the_last_one(finished_run, tiny_market_root, tmp_path,
                                                                           capsys, monkeypatch):
    out = _copy(finished_run, tmp_path / "run")
    before = _digests(out / "checkpoints")

    def full(obj, fh, *args, **kwargs):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full)
    code, line = _main(capsys, *_args(tiny_market_root, out, "train.epochs=2",
                                      f"train.resume={out}/checkpoints/last.pth"))
    assert code == 2
    # reid_robust.atomic's OSError carries errno ENOSPC, whose str() starts with "[Errno 28] "
    assert re.match(rf"error: (\[Errno {errno.ENOSPC}\] )?no space left on device while writing \S+\.pth", line), line
    assert _digests(out / "checkpoints") == before  # no tmp file left, last.pth and best.pth as they were


def test_torch_writer_failure_on_a_full_disk_says_so(tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    from reid_robust.engine.checkpoint import atomic_save

    def failing(obj, fh, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:778] . PytorchStreamWriter failed writing file "
                           "data/0: file write failed")
    monkeypatch.setattr(torch, "save", failing)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 0))
    with pytest.raises(OSError, match=f"no space left on device while writing {tmp_path / 'x.pth'} "):
        atomic_save({"a": 1}, tmp_path / "x.pth")
    assert list(tmp_path.iterdir()) == []


def test_second_ctrl_c_during_the_interrupt_save_keeps_the_last_checkpoint(finished_run, tiny_market_root,
                                                                            tmp_path, capsys, monkeypatch):
    from reid_robust.engine import checkpoint as ckpt_module
    from reid_robust.engine import steps as steps_module

    out = _copy(finished_run, tmp_path / "run")
    before = _digests(out / "checkpoints")
    real_clip = steps_module.clip_gradients

    def interrupt_once(optimizer, scaler, max_norm):
        os.kill(os.getpid(), signal.SIGINT)  # first Ctrl-C during the first step: save after it
        return real_clip(optimizer, scaler, max_norm)

    def save_interrupted(obj, fh, *args, **kwargs):
        fh.write(b"half a checkpoint")
        os.kill(os.getpid(), signal.SIGINT)  # second Ctrl-C while the checkpoint is being written
    monkeypatch.setattr(steps_module, "clip_gradients", interrupt_once)
    monkeypatch.setattr(ckpt_module.torch, "save", save_interrupted)
    code, line = _main(capsys, *_args(tiny_market_root, out, "train.epochs=2",
                                      f"train.resume={out}/checkpoints/last.pth"))
    assert code == 130
    assert line == (f"interrupted: interrupted again while writing last.pth: stopped without saving; "
                    f"{out}/checkpoints/last.pth is kept as it was")
    assert _digests(out / "checkpoints") == before
    assert not (out / ".lock").exists()


def test_corrupt_image_with_workers_is_the_same_one_line_as_without(tiny_market_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_market_root, root)
    for victim in (root / "bounding_box_train").iterdir():
        victim.write_bytes(b"not a jpeg")
    lines = {}
    for workers in (0, 2):
        res = subprocess.run([sys.executable, "tools/train_reid.py", *_args(root, tmp_path / f"w{workers}"),
                              f"data.num_workers={workers}"], cwd=REPO, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "OMP_NUM_THREADS": "1"})
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
        lines[workers] = res.stderr.strip().splitlines()
        assert len(lines[workers]) == 1 and lines[workers][0].startswith("error: cannot read image file ")
    assert lines[0] == lines[2]


def test_run_dir_refusals_do_not_touch_the_folder(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoints").mkdir(parents=True)
    (out / "log.csv").write_text("epoch\n1\n")
    with pytest.raises(run_dir.RunDirError, match="holds an earlier run \\(log.csv\\)"):
        run_dir.prepare(out, None, False)
    with pytest.raises(run_dir.RunDirError, match="contradict"):
        run_dir.prepare(out, str(out / "checkpoints" / "last.pth"), True)
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "log.csv"]
    lock, notices = run_dir.prepare(out, str(out / "checkpoints" / "last.pth"), False)  # resuming into it
    assert (out / ".lock").is_file() and notices == []
    lock.release()
    assert not (out / ".lock").exists()
