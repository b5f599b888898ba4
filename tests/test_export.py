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


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The model exported once in each format, traced / exported on a batch of 2."""
    folder = tmp_path_factory.mktemp("exported")
    return {
        "torchscript": export_torchscript(model, folder / "embedder.pt", _images(2)),
        "onnx": export_onnx(model, folder / "embedder.onnx", _images(2)),
    }


def _reference(model, images):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(images)["bn_feat"].numpy()
    model.train(was_training)
    return out


def test_torchscript_export_gives_the_same_embeddings(model, exported):
    path = exported["torchscript"]
    assert model.training, "export must restore the model's train mode"
    result = check_export(model, path, _images(2, seed=1), atol=1e-5)
    assert result.ok and result.format == "torchscript" and result.max_abs_diff <= 1e-5, str(result)
    other = _images(5, seed=2, size=(96, 48))  # the traced ResNet accepts other batch and image sizes
    np.testing.assert_allclose(run_exported(path, other), _reference(model, other), atol=1e-5)


def test_onnx_export_has_a_dynamic_batch_and_the_same_embeddings(model, exported):
    path = exported["onnx"]
    assert model.training, "export must restore the model's train mode"
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    (graph_input,) = proto.graph.input
    assert graph_input.name == "images"
    assert graph_input.type.tensor_type.shape.dim[0].dim_param == "batch"
    assert [o.name for o in proto.graph.output] == ["embeddings"]
    result = check_export(model, path, _images(3, seed=3), atol=1e-4)
    assert result.ok and result.batch_size == 3, str(result)
    single = _images(1, seed=4)
    exported_single = run_exported(path, single)
    assert exported_single.shape == (1, 32)
    np.testing.assert_allclose(exported_single, _reference(model, single), atol=1e-4)


class _ZeroEmbedder(torch.nn.Module):
    def forward(self, images):
        return {"bn_feat": torch.zeros(len(images), 16)}


def test_check_export_reports_a_different_model(model, exported):
    import copy

    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.head.neck.bn.weight.mul_(1.01)
    for fmt, path in exported.items():
        result = check_export(changed, path, _images(2, seed=5), atol=1e-4)
        assert not result.ok and result.max_abs_diff > 1e-3 and result.format == fmt
        assert "MISMATCH" in str(result)
        assert check_export(_ZeroEmbedder(), path, _images(2)).max_abs_diff == float("inf")


def test_exports_replace_atomically_and_leave_no_temporary_file(model, tmp_path, monkeypatch):
    target = tmp_path / "out" / "embedder.onnx"
    target.parent.mkdir()
    target.write_bytes(b"previous version")

    def broken_export(module, args, f, **kwargs):
        f.write(b"half a model")  # the exporter writes into the temporary file of reid_robust.atomic
        raise RuntimeError("exporter crashed")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    with pytest.raises(RuntimeError, match="exporter crashed"):
        export_onnx(model, target, _images(2))
    assert target.read_bytes() == b"previous version"
    assert sorted(p.name for p in target.parent.iterdir()) == ["embedder.onnx"]
    monkeypatch.undo()
    export_onnx(model, target, _images(1))
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


# ---------------------------------------------------------------- tools/export.py


def _load_tool():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "tools" / "export.py"
    spec = importlib.util.spec_from_file_location("export_tool", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _load_tool()


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    """A checkpoint of a small resnet18 embedder (BN statistics moved) over a 6-identity Market-1501 tree."""
    from reid_robust.config import load_config
    from reid_robust.data.synthetic import generate_synthetic
    from reid_robust.engine.builders import build_model_from_config
    from reid_robust.engine.checkpoint import atomic_save

    base = tmp_path_factory.mktemp("export_tool")
    root = generate_synthetic(base / "market", layout="market", num_identities=6, height=64, width=32)
    cfg = load_config(None, ["model.backbone=resnet18", "model.embedding_dim=24", "model.pooling=gem",
                             "data.dataset=market1501", f"data.root={root}", "data.transforms.size=[64, 32]"])
    torch.manual_seed(0)
    net = build_model_from_config(cfg.model)
    with torch.no_grad():
        net(_images(4, seed=20) + 1.0)
    path = base / "ckpt.pth"
    atomic_save({"model": net.state_dict(), "config": cfg.to_dict(), "epoch": 1}, path)
    return path, root


def test_tool_writes_split_embeddings_equal_to_the_model(tool, trained_checkpoint, tmp_path, capsys):
    from reid_robust.data import build_dataset
    from reid_robust.data.transforms import build_transforms
    from reid_robust.engine.checkpoint import load_model_from_checkpoint

    ckpt, root = trained_checkpoint
    out = tmp_path / "query.npz"
    assert tool.main(["--checkpoint", str(ckpt), "--format", "npz", "--split", "query", "--out", str(out),
                      "--batch-size", "5"]) == 0
    assert "embeddings of dimension 24" in capsys.readouterr().out
    query = build_dataset("market1501", root).query
    with np.load(out) as data:
        feats, pids, camids, paths = data["feats"], data["pids"], data["camids"], data["paths"]
    assert feats.shape == (len(query), 24) and feats.dtype == np.float32
    np.testing.assert_array_equal(pids, [r.pid for r in query])
    np.testing.assert_array_equal(camids, [r.camid for r in query])
    assert list(paths) == [r.path for r in query]
    # the first image embedded by hand: decode, test transform, eval-mode model
    import cv2

    model, cfg = load_model_from_checkpoint(ckpt)
    transform = build_transforms(cfg.data.transforms, train=False)
    image = cv2.cvtColor(cv2.imread(query[0].path), cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        expected = model(transform(image=image)["image"][None])["bn_feat"][0].numpy()
    np.testing.assert_allclose(feats[0], expected, atol=1e-4)


@pytest.mark.parametrize("fmt, name", [("onnx", "embedder.onnx"), ("torchscript", "embedder.pt")])
def test_tool_exports_the_embedder_and_reports_the_check(tool, trained_checkpoint, tmp_path, capsys, fmt, name):
    ckpt, _ = trained_checkpoint
    out = tmp_path / name
    assert tool.main(["--checkpoint", str(ckpt), "--format", fmt, "--out", str(out), "--size", "96", "48"]) == 0
    printed = capsys.readouterr().out
    assert f"{fmt} export check OK" in printed and "[N, 3, 96, 48]" in printed and "[N, 24]" in printed
    from reid_robust.engine.checkpoint import load_model_from_checkpoint

    model, _ = load_model_from_checkpoint(ckpt)
    assert check_export(model, out, _images(2, seed=7, size=(96, 48)), atol=1e-4, fmt=fmt).ok


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--format", "npz", "--out", "x.npz"], "--format npz needs --split"),
        (["--format", "onnx", "--out", "x.onnx", "--split", "query"], "--split only applies to --format npz"),
        (["--format", "onnx", "--out", "x.onnx", "--size", "0", "32"], "--size needs two positive integers"),
        (["--format", "tflite", "--out", "x"], "invalid choice: 'tflite'"),
        (["--format", "npz", "--split", "query", "--out", "x.npz", "--device", "gpu"], "not a device name"),
        (["--format", "onnx", "--out", "."], "is a directory"),
    ],
)
def test_tool_refuses_bad_arguments_with_one_line(tool, trained_checkpoint, capsys, argv, message):
    ckpt, _ = trained_checkpoint
    with pytest.raises(SystemExit) as info:
        tool.main(["--checkpoint", str(ckpt), *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_tool_reports_missing_checkpoint_and_data_in_one_line(tool, trained_checkpoint, tmp_path, capsys):
    assert tool.main(["--checkpoint", str(tmp_path / "none.pth"), "--format", "onnx", "--out", "x.onnx"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "none.pth" in err and err.count("\n") == 1
    ckpt, _ = trained_checkpoint
    code = tool.main(["--checkpoint", str(ckpt), "--format", "npz", "--split", "gallery",
                      "--data-root", str(tmp_path / "no_data"), "--out", str(tmp_path / "g.npz")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "no_data" in err
    assert not (tmp_path / "g.npz").exists()


def test_tool_help_explains_every_flag(tool, capsys):
    with pytest.raises(SystemExit) as info:
        tool.main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--checkpoint", "--format", "--out", "--split", "--data-root", "--size", "--batch-size",
                 "--flip", "--device", "--atol"):
        assert flag in text
