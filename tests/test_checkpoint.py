"""Atomic checkpoint writes: a crash while saving never corrupts the previous file."""
import pytest
import torch

from reid_robust.engine import checkpoint as ck


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
