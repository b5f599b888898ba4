"""Tests of reid_robust.models.export: TorchScript / ONNX equivalence, atomic writes, embedding files."""

import numpy as np
import onnx
import pytest
import torch

from reid_robust.models import build_model
from reid_robust.models.export import (
    check_export,
    export_format,
    export_onnx,
    export_torchscript,
    run_exported,
    save_embeddings_npz,
)


def _images(n, seed=0, size=(64, 32)):
    return torch.randn(n, 3, *size, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def model():
    """A resnet18 embedder with every head part (GeM, reduction, BNNeck) and non-trivial BN statistics."""
    torch.manual_seed(0)
    net = build_model("resnet18", embedding_dim=32, pooling="gem", last_stride=1)
    with torch.no_grad():
        net.head.pool.p.fill_(2.5)
        for seed in range(3):
            net(_images(4, seed=10 + seed) * 2 + 0.5)  # train mode: moves running statistics
    return net.train()


def _reference(model, images):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(images)["bn_feat"].numpy()
    model.train(was_training)
    return out


def test_torchscript_export_gives_the_same_embeddings(model, tmp_path):
    path = export_torchscript(model, tmp_path / "embedder.pt", _images(2))
    assert model.training, "export must restore the model's train mode"
    result = check_export(model, path, _images(2, seed=1), atol=1e-5)
    assert result.ok and result.format == "torchscript" and result.max_abs_diff <= 1e-5, str(result)
    other = _images(5, seed=2, size=(96, 48))  # the traced ResNet accepts other batch and image sizes
    np.testing.assert_allclose(run_exported(path, other), _reference(model, other), atol=1e-5)


def test_onnx_export_has_a_dynamic_batch_and_the_same_embeddings(model, tmp_path):
    path = export_onnx(model, tmp_path / "embedder.onnx", _images(2))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (graph_input,) = proto.graph.input
    assert graph_input.name == "images"
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in proto.graph.output] == ["embeddings"]
    result = check_export(model, path, _images(3, seed=3), atol=1e-4)
    assert result.ok and result.batch_size == 3, str(result)
    single = _images(1, seed=4)
    exported = run_exported(path, single)
    assert exported.shape == (1, 32)
    np.testing.assert_allclose(exported, _reference(model, single), atol=1e-4)


def test_check_export_reports_a_different_model(model, tmp_path):
    path = export_torchscript(model, tmp_path / "a.pt", _images(2))
    torch.manual_seed(123)
    other = build_model("resnet18", embedding_dim=32, pooling="gem", last_stride=1)
    result = check_export(other, path, _images(2, seed=5), atol=1e-4)
    assert not result.ok and result.max_abs_diff > 1e-2
    assert "MISMATCH" in str(result)
    narrower = build_model("resnet18", embedding_dim=16)
    assert check_export(narrower, path, _images(2)).max_abs_diff == float("inf")


def test_exports_replace_atomically_and_leave_no_temporary_file(model, tmp_path, monkeypatch):
    target = tmp_path / "out" / "embedder.onnx"
    target.parent.mkdir()
    target.write_bytes(b"previous version")

    def broken_export(module, args, f, **kwargs):
        with open(f, "wb") as handle:
            handle.write(b"half a model")
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_onnx(model, target, _images(2))
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["embedder.onnx"]
    monkeypatch.undo()
    export_onnx(model, target, _images(2))
    assert target.read_bytes() != b"previous version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["embedder.onnx"]


def test_bad_example_and_unknown_formats_are_refused(model, tmp_path):
    with pytest.raises(ValueError, match=r"\[N, 3, H, W\].*\(3, 64, 32\)"):
        export_torchscript(model, tmp_path / "x.pt", torch.zeros(3, 64, 32))
    with pytest.raises(ValueError, match="suffix"):
        export_format(tmp_path / "model.bin")
    with pytest.raises(ValueError, match="unknown export format 'tflite'"):
        export_format(tmp_path / "model.bin", "tflite")
    assert export_format("m.onnx") == "onnx" and export_format("m.ts") == "torchscript"


def test_embeddings_npz_round_trip_and_length_check(tmp_path):
    feats = np.arange(12, dtype=np.float64).reshape(3, 4)
    path = save_embeddings_npz(tmp_path / "g.npz", feats, [1, 2, -1], [0, 5, 3], ["a.jpg", "b.jpg", "c.jpg"])
    assert path.name == "g.npz" and sorted(p.name for p in tmp_path.iterdir()) == ["g.npz"]
    with np.load(path) as data:
        assert data["feats"].dtype == np.float32 and data["pids"].dtype == np.int64
        np.testing.assert_array_equal(data["feats"], feats.astype(np.float32))
        np.testing.assert_array_equal(data["pids"], [1, 2, -1])
        np.testing.assert_array_equal(data["camids"], [0, 5, 3])
        assert list(data["paths"]) == ["a.jpg", "b.jpg", "c.jpg"]
    with pytest.raises(ValueError, match="one row per image"):
        save_embeddings_npz(tmp_path / "bad.npz", feats, [1, 2], [0, 1, 2], ["a", "b", "c"])
