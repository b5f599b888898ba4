"""End-to-end training on a tiny synthetic tree: outputs, exact resume, AMP, DDP with torchrun, errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
import torch
from conftest import REPO, tiny_overrides

from reid_robust.config import ConfigError, load_config
from reid_robust.engine.checkpoint import load_checkpoint
from reid_robust.engine.trainer import train

QUICKSTART = REPO / "configs" / "quickstart.yaml"


def _cfg(root, out, *extra):
    return load_config(QUICKSTART, tiny_overrides(root, out) + list(extra))


def test_train_writes_config_checkpoints_metrics_and_logs(tiny_market_root, tmp_path):
    out = tmp_path / "run"
    metrics = train(_cfg(tiny_market_root, out, "train.epochs=2", "eval.every=1", "eval.untrained=true"))
    for name in ("config.yaml", "metrics.json", "train.log", "log.csv", "checkpoints/last.pth", "checkpoints/best.pth"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "metrics.json").read_text())
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
        assert 0.0 <= saved[key] <= 1.0 and saved[key] == metrics[key]
        assert 0.0 <= saved["untrained"][key] <= 1.0
    assert load_config(out / "config.yaml").train.epochs == 2
    # the saved config finds the data from any directory
    assert os.path.isabs(load_checkpoint(out / "checkpoints" / "last.pth")["config"]["data"]["root"])
    assert load_checkpoint(out / "checkpoints" / "last.pth")["epoch"] == 2
    assert "epoch 2/2" in (out / "train.log").read_text()


def _weights(path):
    return load_checkpoint(path)["model"]


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_market_root, tmp_path):
    common = ["train.epochs=2", "data.transforms.random_erasing=0.5", "data.transforms.color_jitter=0.2"]
    train(_cfg(tiny_market_root, tmp_path / "full", *common))
    # "interrupted" after epoch 1: same config, stopped early, then resumed to the end
    train(_cfg(tiny_market_root, tmp_path / "part", "train.epochs=1", *common[1:]))
    first = tmp_path / "part" / "checkpoints" / "last.pth"
    train(_cfg(tiny_market_root, tmp_path / "part", *common, f"train.resume={first}"))
    a, b = _weights(tmp_path / "full" / "checkpoints" / "last.pth"), _weights(first)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_resume_restores_optimizer_and_scheduler(tiny_market_root, tmp_path):
    train(_cfg(tiny_market_root, tmp_path / "r", "train.epochs=1", "train.optimizer=sgd"))
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pth")
    assert ckpt["scheduler"]["last_epoch"] == 2  # two steps taken
    assert ckpt["optimizer"]["state"]  # momentum buffers are saved
    assert set(ckpt["rng"]) >= {"python", "numpy", "torch"}
    assert ckpt["elapsed_s"] > 0


def test_train_time_of_a_resumed_run_counts_every_session(tiny_market_root, tmp_path):
    train(_cfg(tiny_market_root, tmp_path / "r", "train.epochs=1"))
    path = tmp_path / "r" / "checkpoints" / "last.pth"
    ckpt = load_checkpoint(path)
    ckpt["elapsed_s"] = 1000.0  # as if the first session had trained for 1000 s
    torch.save(ckpt, path)
    metrics = train(_cfg(tiny_market_root, tmp_path / "r", "train.epochs=2", f"train.resume={path}"))
    assert 1000.0 <= metrics["train_time_s"] < 1000.0 + 600.0


def test_resume_with_a_checkpoint_of_another_architecture_is_a_value_error(tiny_market_root, tmp_path):
    train(_cfg(tiny_market_root, tmp_path / "r", "train.epochs=1"))
    path = tmp_path / "r" / "checkpoints" / "last.pth"
    with pytest.raises(ValueError, match=r"train\.resume=.*last\.pth: cannot resume with changed "
                                         r"model\.embedding_dim \(0 -> 64\)") as err:
        train(_cfg(tiny_market_root, tmp_path / "other", "train.epochs=2", "model.embedding_dim=64",
                   f"train.resume={path}"))
    assert "\n" not in str(err.value)  # one line: tools/train_reid.py prints it as is


def test_load_scaler_state_skips_the_empty_state_of_a_disabled_scaler():
    from reid_robust.engine.resume import load_scaler_state

    disabled = torch.amp.GradScaler("cpu", enabled=False)
    assert disabled.state_dict() == {}  # what a run without AMP saves
    enabled = torch.amp.GradScaler("cpu", init_scale=8.0)
    assert enabled.is_enabled()
    with pytest.raises(RuntimeError):  # the crash the helper avoids
        torch.amp.GradScaler("cpu").load_state_dict({})
    assert not load_scaler_state(enabled, {}) and not load_scaler_state(enabled, None)
    assert enabled.get_scale() == 8.0
    saved = torch.amp.GradScaler("cpu", init_scale=2.0).state_dict()
    assert load_scaler_state(enabled, saved) and enabled.get_scale() == 2.0
    assert not load_scaler_state(disabled, saved)  # AMP switched off: the saved scale is dropped


def test_resume_with_amp_switched_on_starts_a_fresh_scaler(tiny_market_root, tmp_path, monkeypatch):
    from reid_robust.engine import trainer as trainer_module

    out = tmp_path / "r"
    train(_cfg(tiny_market_root, out, "train.epochs=1"))
    path = out / "checkpoints" / "last.pth"
    assert load_checkpoint(path)["scaler"] == {}
    # an enabled scaler on CPU stands for CUDA's float16 one, whose {} state used to crash the resume
    monkeypatch.setattr(trainer_module, "make_scaler",
                        lambda device, amp: torch.amp.GradScaler("cpu", enabled=amp))
    train(_cfg(tiny_market_root, out, "train.epochs=2", "train.amp=true", f"train.resume={path}"))
    final = load_checkpoint(path)
    assert final["epoch"] == 2 and final["scaler"]["scale"] > 0
    assert "train.amp was false" in (out / "train.log").read_text()


def _record_dtypes(monkeypatch, seen):
    """Record the output dtype of the model's first conv and the input dtype of every loss term (training)."""
    from reid_robust.engine import trainer as trainer_module

    real_model, real_terms = trainer_module.build_model_from_config, trainer_module.build_loss_terms

    def model_with_hook(model_cfg):
        model = real_model(model_cfg)
        conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
        conv.register_forward_hook(lambda m, i, o: seen["conv"].add(o.dtype) if m.training else None)
        return model

    def terms_with_hooks(*args, **kwargs):
        terms = real_terms(*args, **kwargs)
        for term in terms:
            term.module.register_forward_pre_hook(lambda m, inputs: seen["loss"].add(inputs[0].dtype))
        return terms

    monkeypatch.setattr(trainer_module, "build_model_from_config", model_with_hook)
    monkeypatch.setattr(trainer_module, "build_loss_terms", terms_with_hooks)


def test_mixed_precision_on_cpu_trains_with_finite_loss(tiny_market_root, tmp_path, monkeypatch):
    seen = {"conv": set(), "loss": set()}
    _record_dtypes(monkeypatch, seen)
    metrics = train(_cfg(tiny_market_root, tmp_path / "amp", "train.epochs=1", "train.amp=true"))
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert seen["conv"] == {torch.bfloat16}  # the forward ran under CPU autocast
    assert seen["loss"] == {torch.float32}  # the losses see float32 embeddings
    weights = load_checkpoint(tmp_path / "amp" / "checkpoints" / "last.pth")["model"]
    assert all(w.dtype != torch.bfloat16 for w in weights.values())  # the parameters stay float32


def test_label_noise_is_applied_and_recorded(tiny_market_root, tmp_path):
    out = tmp_path / "noisy"
    train(_cfg(tiny_market_root, out, "train.epochs=1", "data.noise.rate=0.5", "data.noise.mode=symmetric"))
    lines = (out / "noise_manifest.csv").read_text().splitlines()
    assert lines[0].split(",") == ["path", "clean_label", "noisy_label", "is_noisy"]
    assert 0.3 < json.loads((out / "metrics.json").read_text())["noise"]["realised_rate"] < 0.7


def _run_tool(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def test_misspelt_override_is_refused_with_a_suggestion():
    res = _run_tool("tools/train_reid.py", "--config", str(QUICKSTART), "train.epohcs=1")
    assert res.returncode == 2
    assert "did you mean 'train.epochs'" in res.stderr and "Traceback" not in res.stderr


def test_help_explains_the_flags():
    res = _run_tool("tools/train_reid.py", "--help")
    assert res.returncode == 0 and "--config" in res.stdout and "key=value" in res.stdout


def test_missing_dataset_root_is_a_one_line_error(tmp_path):
    res = _run_tool("tools/train_reid.py", "--config", str(REPO / "configs/market1501/bot_r50.yaml"),
                    f"output_dir={tmp_path}/o", f"data.root={tmp_path}/nowhere")
    assert res.returncode == 2 and "nowhere" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_torchrun_two_cpu_processes(tiny_market_root, tmp_path):
    out = tmp_path / "ddp"
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tools/train_reid.py",
            "--config", str(QUICKSTART), *tiny_overrides(tiny_market_root, out), "train.epochs=1",
            "train.gather_embeddings=true"]
    res = _run_tool(*args, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= metrics["mAP"] <= 1.0
    assert load_checkpoint(out / "checkpoints" / "last.pth")["epoch"] == 1
    # the model and the loss's class weights are the same on both ranks after the epoch
    drift = [line for line in (out / "train.log").read_text().splitlines() if "replicas differ" in line]
    assert drift and drift[-1].endswith("differ by at most 0"), drift


@pytest.mark.slow
def test_torchrun_cleaning_restart_keeps_the_replicas_equal(tiny_market_root, tmp_path):
    """Under DDP with a cleaning round and a restart, every rank takes rank 0's decision, rebuilds the same
    model and re-wraps it: the replicas agree after every epoch, before and after the restart."""
    out = tmp_path / "ddp_restart"
    args = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "tools/train_reid.py",
            "--config", str(QUICKSTART), *tiny_overrides(tiny_market_root, out), "train.epochs=1",
            "data.noise.rate=0.3", "train.cleaning.action=drop", "train.cleaning.rate=0.25",
            "train.cleaning.start_epoch=1", "train.cleaning.restart_epochs=[1]"]
    res = _run_tool(*args, env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    log = (out / "train.log").read_text()
    drift = [line for line in log.splitlines() if "replicas differ" in line]
    assert len(drift) == 2 and all(line.endswith("differ by at most 0") for line in drift), drift
    assert "training starts again from initialisation" in log
    saved = load_checkpoint(out / "checkpoints" / "last.pth")
    assert saved["epoch"] == 2 and (~saved["cleaning"]["keep"]).sum() > 0


def test_ctrl_c_saves_a_checkpoint_that_resumes(tiny_market_root, tmp_path, monkeypatch):
    import signal

    from reid_robust.engine import trainer as trainer_module

    real_build = trainer_module.build_model_from_config
    calls = {"n": 0}

    def build_with_interrupt(model_cfg):
        model = real_build(model_cfg)

        def hook(module, inputs, output):
            calls["n"] += 1
            if calls["n"] == 1 and module.training:
                os.kill(os.getpid(), signal.SIGINT)  # as if the user pressed Ctrl-C during the first step

        model.register_forward_hook(hook)
        return model

    augment = ["train.epochs=2", "data.transforms.random_erasing=0.5", "data.transforms.color_jitter=0.2"]
    train(_cfg(tiny_market_root, tmp_path / "uninterrupted", *augment))
    monkeypatch.setattr(trainer_module, "build_model_from_config", build_with_interrupt)
    out = tmp_path / "int"
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(tiny_market_root, out, *augment))
    saved = load_checkpoint(out / "checkpoints" / "last.pth")
    assert (saved["epoch"], saved["iteration"]) == (0, 1)  # interrupted after the first step of epoch 1
    monkeypatch.setattr(trainer_module, "build_model_from_config", real_build)
    metrics = train(_cfg(tiny_market_root, out, *augment, f"train.resume={out}/checkpoints/last.pth"))
    final = load_checkpoint(out / "checkpoints" / "last.pth")
    assert final["epoch"] == 2
    assert final["scheduler"]["last_epoch"] == 4  # 2 epochs x 2 batches: the batch done before Ctrl-C is not repeated
    assert 0.0 <= metrics["mAP"] <= 1.0
    # resumed mid-epoch, the run sees the same images augmented alike and ends with the uninterrupted weights
    a, b = _weights(tmp_path / "uninterrupted" / "checkpoints" / "last.pth"), final["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


class _SigintHandlerDataset(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, index):
        import signal

        return signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def test_dataloader_workers_ignore_ctrl_c_and_leave_it_to_the_main_process():
    import signal

    from reid_robust.engine.loader import worker_init

    def main_handler(signum, frame):  # stands for the trainer's handler, which forked workers inherit
        raise AssertionError("a worker ran the main process's SIGINT handler")

    previous = signal.signal(signal.SIGINT, main_handler)
    try:
        loader = torch.utils.data.DataLoader(_SigintHandlerDataset(), batch_size=None, num_workers=1,
                                             worker_init_fn=worker_init)
        assert list(loader) == [True, True]
        assert signal.getsignal(signal.SIGINT) is main_handler  # the main process keeps its handler
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads a process's children from /proc")
def test_terminal_ctrl_c_with_workers_is_reported_once_and_saves(tiny_market_root, tmp_path):
    import signal
    import time
    from pathlib import Path

    out = tmp_path / "w"
    args = [sys.executable, "tools/train_reid.py", "--config", str(QUICKSTART), *tiny_overrides(tiny_market_root, out),
            "train.epochs=1", "data.num_workers=2", "data.sampler.batches_per_epoch=5000"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:  # the DataLoader workers: the loop runs
            if children.exists() and len(children.read_text().split()) >= 2:
                break
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole process group
        stdout, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and "Traceback" not in stdout, stdout[-3000:]
    assert stdout.count("interrupt received") == 1, stdout[-3000:]  # the main process only, not each worker
    saved = load_checkpoint(out / "checkpoints" / "last.pth")
    assert saved["epoch"] == 0 and 0 < saved["iteration"] < 5000


def test_best_metric_is_checked_before_training(tiny_market_root, tmp_path):
    with pytest.raises(ConfigError, match="train.best_metric.*must be one of"):
        _cfg(tiny_market_root, tmp_path / "a", "train.best_metric=map")
    with pytest.raises(ValueError, match="best_metric=recall@1 is not reported by the market protocol"):
        train(_cfg(tiny_market_root, tmp_path / "b", "train.best_metric=recall@1"))
    assert not (tmp_path / "b" / "checkpoints" / "last.pth").exists()


def test_pattern_noise_without_confusable_names_the_key(tiny_market_root, tmp_path):
    with pytest.raises(ValueError, match="data.noise.confusable"):
        train(_cfg(tiny_market_root, tmp_path / "p", "data.noise.rate=0.2", "data.noise.mode=pattern"))


def test_corrupt_training_image_is_a_one_line_error(tiny_market_root, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_market_root, root)
    for victim in (root / "bounding_box_train").iterdir():  # whichever image the first batch draws is corrupt
        victim.write_bytes(b"not a jpeg")
    out = tmp_path / "c"
    res = _run_tool("tools/train_reid.py", "--config", str(QUICKSTART), *tiny_overrides(root, out), "train.epochs=1")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr[-2000:]
    assert re.search(r"bounding_box_train/\d{4}_c\d+s\d+_\d{6}_\d{2}\.jpg", res.stderr), res.stderr[-2000:]


def test_open_set_noise_trains_only_the_remaining_classes_and_audits(tiny_market_root, tmp_path):
    import csv

    from reid_robust.analysis.audit_run import audit_checkpoint

    out = tmp_path / "open"
    train(_cfg(tiny_market_root, out, "train.epochs=1", "data.noise.rate=0.34", "data.noise.mode=open_set"))
    with open(out / "noise_manifest.csv") as fh:
        manifest = list(csv.DictReader(fh))
    clean_ids = {int(r["clean_label"]) for r in manifest}
    kept_ids = {int(r["noisy_label"]) for r in manifest}
    assert kept_ids < clean_ids and len(clean_ids) - len(kept_ids) == round(0.34 * len(clean_ids))
    ckpt = load_checkpoint(out / "checkpoints" / "last.pth")
    classifier = [w for sd in ckpt["losses"] for k, w in sd.items() if k.endswith("weight")]
    assert classifier and classifier[0].shape[0] == len(kept_ids)  # no output for a hidden identity
    summary = audit_checkpoint(out / "checkpoints" / "last.pth", top=0, passes=1)
    assert summary["num_images"] == len(manifest) and 0.0 <= summary["metrics"]["auroc"] <= 1.0
    with open(out / "audit" / "suspects.csv") as fh:
        rows = list(csv.DictReader(fh))
    label_key = next(k for k in rows[0] if "label" in k)
    assert {int(r[label_key]) for r in rows} == kept_ids  # original ids, not the losses' renumbering


def test_tensorboard_writer_disabled_is_a_no_op(tmp_path, monkeypatch):
    from reid_robust.engine.logs import TensorBoard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # not even imported when off
    writer = TensorBoard(tmp_path, enabled=False)
    writer.log({"epoch": 1, "loss": 0.5}, 1)
    writer.close()
    assert writer.writer is None and not (tmp_path / "tensorboard").exists()


def test_tensorboard_without_the_package_names_the_key_and_the_install(tmp_path, monkeypatch):
    from reid_robust.engine.logs import TensorBoard

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ValueError, match=r"train\.tensorboard=true .*pip install tensorboard"):
        TensorBoard(tmp_path, enabled=True)


def test_tensorboard_writer_logs_the_numeric_columns_by_epoch(tmp_path, monkeypatch):
    import types

    from reid_robust.engine.logs import TensorBoard

    calls = []

    class FakeWriter:
        def __init__(self, log_dir):
            calls.append(("open", log_dir))

        def add_scalar(self, tag, value, step):
            calls.append((tag, value, step))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    writer = TensorBoard(tmp_path, enabled=True)
    writer.log({"epoch": 3, "lr": 0.1, "loss": 2, "note": "text"}, 3)
    writer.close()
    assert calls == [("open", str(tmp_path / "tensorboard")), ("lr", 0.1, 3), ("loss", 2, 3), ("close",)]


def test_cpu_bf16_convolutions_are_deterministic():
    """The trainer's CPU mixed precision (oneDNN off): the same input gives the same finite output every call.
    With oneDNN's bfloat16 convolutions (torch 2.14.1, AVX-512 Xeon) this gave NaN and call-to-call noise."""
    import torchvision

    from reid_robust.engine.steps import cpu_mixed_precision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    images = torch.randn(8, 3, 64, 32)
    with cpu_mixed_precision(torch.device("cpu"), True):
        outs = []
        for _ in range(3):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                outs.append(model(images).float())
    assert all(torch.isfinite(o).all() for o in outs)
    assert all(torch.equal(outs[0], o) for o in outs[1:])
