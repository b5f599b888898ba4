"""The embedding API (reid_robust.engine.embed): every input form, equality with the trainer's evaluation
features, the .npz round trip and one-line errors."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_robust.evaluation.report import FeatureSet, load_features, save_features


def make_checkpoint(base: Path, num_identities: int, dim: int):
    """``(path, dataset root, config)``: a resnet18 checkpoint (``dim``-d embedding, BN statistics moved away
    from the identity) over a Market-1501 tree of 32x16 images."""
    from reid_robust.config import load_config
    from reid_robust.data.synthetic import generate_synthetic
    from reid_robust.engine.builders import build_model_from_config
    from reid_robust.engine.checkpoint import atomic_save

    root = generate_synthetic(base / "market", layout="market", num_identities=num_identities, height=32, width=16)
    cfg = load_config(None, ["model.backbone=resnet18", f"model.embedding_dim={dim}", "data.dataset=market1501",
                             f"data.root={root}", "data.transforms.size=[32, 16]", "data.num_workers=0",
                             "data.test_batch_size=5"])
    torch.manual_seed(0)
    net = build_model_from_config(cfg.model)
    with torch.no_grad():
        net(torch.randn(4, 3, 32, 16) + 1.0)
    path = base / "ckpt.pth"
    atomic_save({"model": net.state_dict(), "config": cfg.to_dict(), "epoch": 1}, path)
    return path, Path(root), cfg


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("embed"), num_identities=6, dim=16)


@pytest.fixture(scope="module")
def embedder(checkpoint):
    from reid_robust.engine.embed import Embedder

    return Embedder.from_checkpoint(checkpoint[0], device="cpu", batch_size=4, progress=False)


def _query_paths(root: Path) -> list[str]:
    return sorted(str(p) for p in (root / "query").glob("*.jpg"))


def test_features_equal_the_trainer_evaluation(checkpoint, embedder, monkeypatch):
    """The trainer's evaluate_model embeds through the same path: same features for the same images."""
    import reid_robust.engine.evaluate as evaluate
    from reid_robust.data import build_dataset, build_transforms
    from reid_robust.engine.checkpoint import load_model_from_checkpoint

    path, root, cfg = checkpoint
    seen = []
    original = evaluate.embed_records

    def spy(*args, **kwargs):
        seen.append(original(*args, **kwargs))
        return seen[-1]

    monkeypatch.setattr(evaluate, "embed_records", spy)
    model, stored = load_model_from_checkpoint(path)
    splits = build_dataset("market1501", root)
    metrics = evaluate.evaluate_model(model, splits, stored.eval, stored.data,
                                      build_transforms(stored.data.transforms, train=False), "cpu")
    assert 0 <= metrics["mAP"] <= 1 and len(seen) == 2
    mine = embedder.embed([r.path for r in splits.query])
    np.testing.assert_allclose(mine.feats, seen[0].feats, atol=1e-5)
    # and by hand: decode, the checkpoint's test transform, the eval-mode model
    import cv2

    image = cv2.cvtColor(cv2.imread(splits.query[0].path), cv2.COLOR_BGR2RGB)
    with torch.no_grad():
        expected = model(build_transforms(cfg.data.transforms, train=False)(image=image)["image"][None])["bn_feat"]
    np.testing.assert_allclose(mine.feats[0], expected[0].numpy(), atol=1e-4)


def test_every_input_form_gives_the_same_features(checkpoint, embedder, tmp_path):
    _, root, _ = checkpoint
    paths = _query_paths(root)
    reference = embedder.embed(paths)
    assert reference.paths == paths and reference.pids is None and reference.feats.shape == (len(paths), 16)
    nested = tmp_path / "photos"
    for i, p in enumerate(paths):  # a nested folder of plain names: searched recursively, no labels
        target = nested / f"day{i % 2}" / "sub" / f"img{i:03d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    folder = embedder.embed(nested)
    assert folder.pids is None and len(folder) == len(paths)
    by_name = dict(zip((Path(p).name for p in folder.paths), folder.feats))
    for i in range(len(paths)):
        np.testing.assert_allclose(by_name[f"img{i:03d}.jpg"], reference.feats[i], atol=1e-5)
    globbed = embedder.embed(str(nested / "**" / "*.jpg"))
    assert sorted(globbed.paths) == sorted(folder.paths)
    pil = embedder.embed([Image.open(p) for p in paths])
    np.testing.assert_allclose(pil.feats, reference.feats, atol=1e-5)
    assert pil.paths is None
    batch = torch.stack([torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1) for p in paths])
    np.testing.assert_allclose(embedder.embed(batch).feats, reference.feats, atol=1e-5)
    np.testing.assert_allclose(embedder.embed(batch.float() / 255).feats, reference.feats, atol=1e-5)
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(paths) + "\n")
    np.testing.assert_allclose(embedder.embed(listing).feats, reference.feats, atol=1e-5)


def test_layouts_give_identities_and_cameras(checkpoint, embedder, tmp_path):
    from reid_robust.data.market1501 import parse_market_filename

    _, root, _ = checkpoint
    paths = _query_paths(root)
    market = embedder.embed(root / "query")  # Market-1501 names
    assert market.paths == paths
    expected = [parse_market_filename(p, strict=False) for p in paths]
    np.testing.assert_array_equal(market.pids, [e[0] for e in expected])
    np.testing.assert_array_equal(market.camids, [e[1] for e in expected])
    people = tmp_path / "people"
    for p, (pid, cam) in zip(paths, expected):  # identity folders with names, camera in the file name
        target = people / f"person_{pid}" / f"shot_cam{cam + 1}_{Path(p).name}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, target)
    found = embedder.embed(people, camera_pattern=r"_cam(\d+)_")
    assert found.identities == [Path(p).parent.name for p in found.paths]  # names kept: not integers
    assert len(set(zip(found.identities, found.pids))) == len(set(found.identities)) == len({e[0] for e in expected})
    np.testing.assert_array_equal(found.camids - 1, [parse_market_filename(Path(p).name.split("_", 2)[2],
                                                                           strict=False)[1] for p in found.paths])
    assert embedder.embed(people).camids is None
    labels = tmp_path / "labels.csv"
    labels.write_text("path,pid\n" + "".join(f"{p},{k % 3}\n" for k, p in enumerate(paths)))
    listed = embedder.embed(labels)
    np.testing.assert_array_equal(listed.pids, [k % 3 for k in range(len(paths))])
    assert listed.camids is None
    np.testing.assert_array_equal(embedder.embed(paths, labels=labels).pids, listed.pids)


def test_npz_round_trip_with_and_without_labels(tmp_path):
    feats = np.arange(12, dtype=np.float64).reshape(3, 4) + 1
    full = FeatureSet(feats, np.array([1, 2, -1]), np.array([0, 5, 3]), ["a.jpg", "b.jpg", "c.jpg"], ["x", "y", "z"])
    path = save_features(tmp_path / "full.npz", full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full.npz"]  # no temporary file left
    back = load_features(path)
    assert back.feats.dtype == np.float32 and back.pids.dtype == np.int64
    np.testing.assert_array_equal(back.feats, feats.astype(np.float32))
    np.testing.assert_array_equal(back.pids, [1, 2, -1])
    np.testing.assert_array_equal(back.camids, [0, 5, 3])
    assert back.paths == full.paths and back.identities == full.identities
    bare = load_features(save_features(tmp_path / "bare.npz", FeatureSet(feats)))
    assert bare.pids is None and bare.camids is None and bare.paths is None and bare.identities is None
    with np.load(tmp_path / "bare.npz") as data:
        assert data.files == ["feats"]
    with pytest.raises(ValueError, match="pids has 2 entries"):
        save_features(tmp_path / "bad.npz", FeatureSet(feats, np.array([1, 2])))


def test_evaluating_features_without_pids_is_refused_in_one_line(tmp_path):
    from reid_robust.evaluation.features_eval import evaluate_reid_features, evaluate_retrieval_features

    feats = np.eye(4, dtype=np.float32) + 0.1
    unlabelled = FeatureSet(feats, source="gallery features file 'g.npz'")
    with pytest.raises(ValueError, match=r"^gallery features file 'g.npz' has no pids") as info:
        evaluate_reid_features(FeatureSet(feats, np.arange(4), np.zeros(4, dtype=np.int64)), unlabelled)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="has no pids"):
        evaluate_retrieval_features(FeatureSet(feats))


def test_identity_names_are_matched_across_query_and_gallery():
    from reid_robust.evaluation import evaluate_reid
    from reid_robust.evaluation.features_eval import evaluate_reid_features

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    q = FeatureSet(centres + 0.01, np.array([1, 2, 3]), identities=["bob", "carol", "dave"])
    g = FeatureSet(centres[[1, 2, 0, 1]], np.array([1, 2, 3, 1]), identities=["carol", "dave", "bob", "carol"])
    # numbered per folder, the pids alone say bob=1 matches carol=1: the names say otherwise
    got = evaluate_reid_features(q, g, camera_filter=False)
    expected = evaluate_reid(q.feats, g.feats, [1, 2, 3], [2, 3, 1, 2], camera_filter=False)
    assert got["mAP"] == pytest.approx(expected["mAP"]) and got["rank1"] == 1.0
    with pytest.raises(ValueError, match="cannot be matched"):
        evaluate_reid_features(q, FeatureSet(g.feats, g.pids), camera_filter=False)


@pytest.mark.parametrize("make, message", [
    (lambda tmp: tmp / "missing", "is neither a folder, an image, a list file nor a glob"),
    (lambda tmp: str(tmp / "*.png"), "matches no image files"),
    (lambda tmp: tmp / "empty", "holds no image files"),
    (lambda tmp: [str(tmp / "gone.jpg")], "do not exist"),
    (lambda tmp: torch.zeros(2, 1, 8, 8), "batch [N, 3, H, W]"),
    (lambda tmp: torch.full((1, 3, 8, 8), 2.0), "in [0, 1]"),
    (lambda tmp: [3, 4], "cannot embed a list of int"),
    (lambda tmp: tmp / "notes.md", "is not an image, a list file"),
])
def test_bad_inputs_are_one_line_errors(embedder, tmp_path, make, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.md").write_text("x")
    with pytest.raises((ValueError, OSError)) as info:
        embedder.embed(make(tmp_path))
    assert message in str(info.value) and "\n" not in str(info.value)


def test_device_names_are_checked_in_one_line(checkpoint):
    from reid_robust.engine.embed import Embedder

    with pytest.raises(ValueError, match="'gpu' is not a device name"):
        Embedder.from_checkpoint(checkpoint[0], device="gpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            Embedder.from_checkpoint(checkpoint[0], device="cuda")
    assert Embedder.from_checkpoint(checkpoint[0], device="auto").device.type in ("cpu", "cuda")


def test_progress_logs_a_line_without_a_terminal(checkpoint, caplog, monkeypatch):
    """Without a terminal: log lines (every interval), none with progress=False."""
    import reid_robust.progress as progress

    monkeypatch.setattr(progress, "interactive", lambda: False)
    monkeypatch.setattr(progress, "LOG_INTERVAL_S", 0.0)
    with caplog.at_level(logging.INFO, logger="reid_robust"):
        items = list(progress.progress(range(3), desc="embedding", unit="batch", interval_s=0.0))
    assert items == [0, 1, 2]
    assert sum("embedding: " in r.message for r in caplog.records) == 4  # three steps and the end
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="reid_robust"):
        assert list(progress.progress(range(3), desc="embedding", enabled=False, interval_s=0.0)) == [0, 1, 2]
    assert not caplog.records


def test_pattern_noise_takes_confusable_identities_from_a_checkpoint_through_the_embedder(checkpoint):
    """engine/noise.py's confusable-from-checkpoint: the checkpoint's model and test transform on the training
    images, as computed by hand with the one extractor."""
    from reid_robust.data import build_dataset, build_transforms
    from reid_robust.data.noise import confusable_identities
    from reid_robust.engine.checkpoint import load_model_from_checkpoint
    from reid_robust.engine.inference import extract_outputs
    from reid_robust.engine.noise import _load_confusable

    path, root, cfg = checkpoint
    train = build_dataset("market1501", root).train
    clean = np.array([r.pid for r in train])
    model, _ = load_model_from_checkpoint(path)
    feats = extract_outputs(model, train, build_transforms(cfg.data.transforms, train=False))["bn_feat"]
    np.testing.assert_array_equal(_load_confusable(str(path), train, clean), confusable_identities(feats, clean))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 autocast runs on a GPU only")
def test_mixed_precision_on_a_gpu_is_close_to_full_precision(checkpoint):
    from reid_robust.engine.embed import Embedder

    path, root, _ = checkpoint
    paths = _query_paths(root)
    half = Embedder.from_checkpoint(path, device="cuda", progress=False).embed(paths)
    full = Embedder.from_checkpoint(path, device="cuda", progress=False, amp=False).embed(paths)
    cpu = Embedder.from_checkpoint(path, device="cpu", progress=False).embed(paths)
    assert half.feats.dtype == np.float32 and np.isfinite(half.feats).all()
    np.testing.assert_allclose(full.feats, cpu.feats, atol=1e-4)
    scale = np.abs(full.feats).max()
    assert np.abs(half.feats - full.feats).max() <= 1e-2 * scale
