"""Checkpoints: atomic writes (a crash while saving never corrupts the previous file), plain data only, and
loading that never runs code and refuses anything else in one line."""
import random
import re

import numpy as np
import pytest
import torch
from test_losses_registry import DIM

from reid_robust.engine import checkpoint as ck
from reid_robust.losses import LOSSES
from reid_robust.safe_load import numpy_load


def test_atomic_save_round_trip(tmp_path):
    path = tmp_path / "c" / "last.pth"
    ck.atomic_save({"model": {"w": torch.ones(3)}, "config": {}}, path)
    assert torch.equal(ck.load_checkpoint(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in path.parent.iterdir()] == ["last.pth"]  # no temporary file left


def test_crash_during_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pth"
    ck.atomic_save({"model": {"w": torch.zeros(2)}, "config": {}}, path)

    def exploding_save(obj, fh):
        fh.write(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr(ck.torch, "save", exploding_save)
    with pytest.raises(RuntimeError, match="disk full"):
        ck.atomic_save({"model": {"w": torch.ones(2)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(ck.load_checkpoint(path)["model"]["w"], torch.zeros(2))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pth"]


def test_missing_and_corrupt_checkpoints_have_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ck.load_checkpoint(tmp_path / "nope.pth")
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot be read"):
        ck.load_checkpoint(bad)
    torch.save({"weights": 1}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not a reid_robust checkpoint"):
        ck.load_checkpoint(tmp_path / "other.pth")


@pytest.mark.parametrize("content, message", [
    ([1, 2], "expected a dict with keys 'model' and 'config'; found list"),
    ({"model": {}}, "found ['model']"),
    ({"model": {}, "config": [1, 2]}, "its 'config' is a list, not a mapping"),
    ({"model": [torch.ones(1)], "config": {}}, "its 'model' is not a state dict"),
    ({"model": {}, "config": {}, "rng": {"python": 1}}, "its 'rng' entry is not a random-generator state"),
])
def test_checkpoints_of_the_wrong_shape_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "c.pth"
    torch.save(content, path)
    with pytest.raises(ValueError) as info:
        ck.load_checkpoint(path)
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_truncated_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "t.pth"
    ck.atomic_save({"model": {"w": torch.ones(1000)}, "config": {}}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(ValueError, match=r"t\.pth cannot be read: not a torch file .*RuntimeError: ") as info:
        ck.load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_atomic_save_writes_plain_data_only(tmp_path):
    path = tmp_path / "c.pth"
    with pytest.raises(TypeError, match=r"checkpoint\['extra'\]\[1\] is a numpy.ndarray"):
        ck.atomic_save({"model": {}, "config": {}, "extra": [1, np.zeros(2)]}, path)
    assert not path.exists() and list(tmp_path.iterdir()) == []


def test_legacy_numpy_globals_admit_the_rng_array_only(tmp_path):
    """The numpy globals admitted for 0.1's RNG state do not let other arrays through."""
    path = tmp_path / "c.pth"
    torch.save({"model": {}, "config": {}, "x": np.zeros(2, dtype=np.float64)}, path)
    with pytest.raises(ValueError, match="was refused: .*Float64DType"):
        ck.load_checkpoint(path)
    torch.save({"model": {}, "config": {}, "x": np.zeros(2, dtype=np.uint32)}, path)
    with pytest.raises(ValueError, match="numpy array outside the RNG state"):
        ck.load_checkpoint(path)


def test_rng_state_round_trip_is_plain_and_exact(tmp_path):
    state = ck.rng_state()
    ck.check_plain(state)
    expected = (random.random(), float(np.random.normal()), float(torch.rand(())))  # numpy caches a gaussian
    ck.atomic_save({"model": {}, "config": {}, "rng": state}, tmp_path / "r.pth")
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    ck.set_rng_state(torch.load(tmp_path / "r.pth", weights_only=True)["rng"])
    assert (random.random(), float(np.random.normal()), float(torch.rand(()))) == expected


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_state_is_plain_data_after_training_steps(name, tmp_path):
    """Loss states (buffers, PRISM's extra state) go into checkpoints: weights-only loadable, and restorable."""
    from test_losses_registry import make

    loss_fn = make(name)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(12, DIM, generator=gen), torch.arange(4).repeat_interleave(3)
    for step in range(2):
        loss_fn.set_progress(step, 2)
        loss_fn(x, y)
    ck.atomic_save({"model": {}, "config": {}, "losses": [loss_fn.state_dict()]}, tmp_path / "l.pth")
    make(name).load_state_dict(torch.load(tmp_path / "l.pth", weights_only=True)["losses"][0])


def test_npy_with_pickled_objects_is_refused(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"a\.npy cannot be read as a plain numpy file .*never loaded"):
        numpy_load(path, "array file")
    np.save(path, np.arange(3))
    assert numpy_load(path, "array file").tolist() == [0, 1, 2]


# ---- the stored config: a plain mapping, reloaded through the typed config --------------------------------------

def _old_config(**changes) -> dict:
    """The config as the dict-config trainers (reid_robust 0.1 and main before issue 13) stored it: nested plain
    dicts and lists; 0.1 had no ``train.overwrite`` (added in issue 12)."""
    from reid_robust.config import load_config

    stored = load_config(None, ["model.backbone=resnet18", "model.embedding_dim=8", "data.transforms.size=[32, 16]"])
    mapping = stored.to_dict()
    for section, values in changes.items():
        mapping[section].update(values)
    return mapping


@pytest.mark.parametrize("version", ["0.1", "main", "removed key"])
def test_checkpoints_with_a_plain_dict_config_still_load(tmp_path, version, caplog, monkeypatch):
    import logging

    from reid_robust.config import Config
    from reid_robust.engine.builders import build_model_from_config

    mapping = _old_config()
    if version == "0.1":
        del mapping["train"]["overwrite"]
    if version == "removed key":
        mapping["train"]["warmup_method"] = "linear"  # a key this version does not know
    model = build_model_from_config(Config.from_dict(_old_config()).model)
    ck.atomic_save({"model": model.state_dict(), "config": mapping, "epoch": 3}, tmp_path / "c.pth")
    monkeypatch.setattr(logging.getLogger("reid_robust"), "propagate", True)
    with caplog.at_level(logging.WARNING, logger="reid_robust"):
        loaded, cfg = ck.load_model_from_checkpoint(tmp_path / "c.pth")
    assert isinstance(cfg, Config) and cfg.model.backbone == "resnet18" and cfg.train.overwrite is False
    assert cfg.data.transforms.size == (32, 16)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in loaded.state_dict().items())
    notices = sorted({m for m in caplog.messages if "no longer has" in m})  # a handler left by an earlier test may repeat it
    assert notices == ([f"checkpoint {tmp_path / 'c.pth'}: ignoring config keys this version no longer has: "
                        "train.warmup_method"] if version == "removed key" else [])


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("model"), "its config has no 'model' section"),
    (lambda c: c.update(data=None), "its config's 'data' section is None, not a mapping of keys"),
    (lambda c: c["model"].update(last_stride=3), "'model.last_stride' must be 1 or 2, got 3"),
])
def test_a_checkpoint_config_that_is_not_a_config_is_one_error_naming_the_file(tmp_path, change, message):
    from reid_robust.config import ConfigError

    mapping = _old_config()
    change(mapping)
    ck.atomic_save({"model": {"w": torch.ones(1)}, "config": mapping}, tmp_path / "c.pth")
    with pytest.raises(ConfigError, match=f"^checkpoint {tmp_path / 'c.pth'}: .*{re.escape(message)}"):
        ck.load_model_from_checkpoint(tmp_path / "c.pth")
