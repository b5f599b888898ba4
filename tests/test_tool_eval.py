"""Tests of tools/eval.py in every input mode, its outputs and its one-line errors."""

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reid_robust.evaluation import evaluate_reid, evaluate_retrieval

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    """tools/eval.py, the checkout's wrapper of reid_robust.cli.eval (reid-eval)."""
    spec = importlib.util.spec_from_file_location("eval_tool", REPO / "tools" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def npz_pair(tmp_path_factory):
    """Clustered query/gallery features with ids, cameras and image paths, saved as .npz."""
    base = tmp_path_factory.mktemp("eval_npz")
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8))
    g_pids = np.concatenate([np.repeat(np.arange(1, 7), 4), [0, 0, -1]])
    q_pids = np.arange(1, 7)
    gf = np.where(g_pids[:, None] > 0, centres[np.clip(g_pids - 1, 0, 5)], rng.normal(size=(len(g_pids), 8)))
    gf = (gf + 0.7 * rng.normal(size=gf.shape)).astype(np.float32)
    qf = (centres + 0.7 * rng.normal(size=(6, 8))).astype(np.float32)
    g_cams, q_cams = rng.integers(0, 3, len(g_pids)), np.zeros(6, dtype=np.int64)
    paths = []
    for i in range(len(g_pids) + 6):
        path = base / f"img_{i}.png"
        Image.fromarray(np.full((16, 8, 3), 9 * i % 255, dtype=np.uint8)).save(path)
        paths.append(str(path))
    np.savez(base / "q.npz", feats=qf, pids=q_pids, camids=q_cams, paths=paths[:6])
    np.savez(base / "g.npz", feats=gf, pids=g_pids, camids=g_cams, paths=paths[6:])
    return base, (qf, gf, q_pids, g_pids, q_cams, g_cams)


def test_npz_mode_prints_a_table_writes_json_and_pictures(tool, npz_pair, tmp_path, capsys):
    base, data = npz_pair
    out = tmp_path / "m.json"
    code = tool.main(["--query", str(base / "q.npz"), "--gallery", str(base / "g.npz"), "--json", str(out),
                      "--visualize", "2", "--visualize-dir", str(tmp_path / "ranks")])
    assert code == 0
    printed = capsys.readouterr().out
    assert "mAP (%)" in printed and "rank1 (%)" in printed and "mINP (%)" in printed
    expected = evaluate_reid(*data)
    saved = json.loads(out.read_text())
    for key in ("mAP", "rank1", "rank5", "rank10", "mINP"):
        assert saved[key] == pytest.approx(expected[key]) and 0 <= saved[key] <= 1
    assert f"{100 * expected['mAP']:.2f}" in printed
    assert len(list((tmp_path / "ranks").glob("*.png"))) == 2


def test_npz_mode_options_reach_the_library(tool, npz_pair, tmp_path):
    base, data = npz_pair
    args = ["--query", str(base / "q.npz"), "--gallery", str(base / "g.npz")]
    runs = {
        "official": (["--ap-mode", "official", "--metric", "euclidean"],
                     {"ap_mode": "official", "metric": "euclidean"}),
        "rerank": (["--rerank", "--k1", "6", "--k2", "3", "--visualize", "1", "--visualize-dir", str(tmp_path / "rr")],
                   {"rerank": True, "rerank_params": {"k1": 6, "k2": 3}}),
        "hnsw": (["--approximate", "hnsw", "--topk", "20"], None),
    }
    for name, (flags, kwargs) in runs.items():
        out = tmp_path / f"{name}.json"
        assert tool.main(args + flags + ["--json", str(out)]) == 0
        saved = json.loads(out.read_text())
        if kwargs is not None:
            assert saved["mAP"] == pytest.approx(evaluate_reid(*data, **kwargs)["mAP"])
        else:
            assert saved["approximate"] == "hnsw" and abs(saved["mAP"] - evaluate_reid(*data)["mAP"]) < 0.2
        assert saved["num_gallery"] == len(data[3])  # the gallery as given, junk included (re-ranked too)
    assert len(list((tmp_path / "rr").glob("*.png"))) == 1  # a re-ranked list


def test_cub_protocol_on_one_feature_file(tool, tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(4), 5)
    feats = rng.normal(size=(4, 6))[labels] + 0.5 * rng.normal(size=(20, 6))
    np.savez(tmp_path / "test.npz", feats=feats, pids=labels)
    out = tmp_path / "cub.json"
    assert tool.main(["--query", str(tmp_path / "test.npz"), "--protocol", "cub", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    expected = evaluate_retrieval(feats, labels)
    for key in ("recall@1", "recall@8", "map_at_r", "nmi"):
        assert saved[key] == pytest.approx(expected[key])


@pytest.mark.parametrize("argv, message", [
    ([], "give --query"),
    (["--query", "MISSING.npz", "--gallery", "MISSING.npz"], "query features file 'MISSING.npz' does not exist"),
    (["--query", "{q}", "--gallery", "{bad}"], "bad.npz' has no pids (identities), so it cannot be evaluated"),
    (["--query", "{q}", "--gallery", "{wide}"], "dimensions"),
    (["--query", "{q}", "--gallery", "{nan}"], "nan.npz': feats row 2 is not finite"),
    (["--query", "{q}", "--gallery", "{g}", "--flip"], "--flip needs --checkpoint"),
    (["--query", "{q}"], "--query and --gallery go together"),
    (["--query", "{q}", "--gallery", "{g}", "--visualize", "1", "--protocol", "cub"], "leave-one-out"),
    (["--query", "{strangers}", "--gallery", "{g}"], "no query has a true match"),
    (["--checkpoint", "MISSING.pth"], "checkpoint not found"),
    (["--query", "{folder}", "--gallery", "{folder}"], "is images, not an .npz feature file: extracting their features needs"),
])
def test_user_mistakes_give_one_line_and_status_2(tool, npz_pair, tmp_path, capsys, argv, message):
    base, (qf, gf, q_pids, g_pids, q_cams, g_cams) = npz_pair
    np.savez(tmp_path / "bad.npz", feats=gf)
    np.savez(tmp_path / "wide.npz", feats=np.ones((3, 5)), pids=[1, 2, 3], camids=[1, 1, 1])
    nan = gf.copy()
    nan[2, 3] = np.nan
    np.savez(tmp_path / "nan.npz", feats=nan, pids=g_pids, camids=g_cams)
    np.savez(tmp_path / "strangers.npz", feats=qf, pids=q_pids + 100, camids=q_cams)
    names = {"q": base / "q.npz", "g": base / "g.npz", "bad": tmp_path / "bad.npz", "wide": tmp_path / "wide.npz",
             "nan": tmp_path / "nan.npz", "strangers": tmp_path / "strangers.npz", "folder": base}
    argv = [a.format(**names) for a in argv]
    assert tool.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err


def test_absent_query_identities_are_counted_in_a_warning(tool, npz_pair, tmp_path, capsys):
    base, (qf, _, q_pids, _, q_cams, _) = npz_pair
    pids = q_pids.copy()
    pids[:2] = [50, 51]
    np.savez(tmp_path / "q2.npz", feats=qf, pids=pids, camids=q_cams)
    assert tool.main(["--query", str(tmp_path / "q2.npz"), "--gallery", str(base / "g.npz")]) == 0
    err = capsys.readouterr().err
    assert "warning: 2 of 6 queries have no true match" in err and "2 with an identity absent" in err


def test_command_line_error_has_no_traceback(npz_pair):
    base, _ = npz_pair
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "eval.py"), "--query", str(base / "q.npz"),
                           "--gallery", str(base / "missing.npz")], capture_output=True, text=True, cwd=REPO,
                          check=False)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.startswith("error: gallery features file")


# ------------------------------------------------------------------ checkpoint modes


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A small resnet18 embedder checkpoint over a synthetic Market-1501 tree (6 identities, 32x16 images)."""
    from reid_robust.config import load_config
    from reid_robust.data.synthetic import generate_synthetic
    from reid_robust.engine.builders import build_model_from_config
    from reid_robust.engine.checkpoint import atomic_save

    base = tmp_path_factory.mktemp("eval_ckpt")
    root = generate_synthetic(base / "market", layout="market", num_identities=6, height=32, width=16)
    cfg = load_config(None, ["model.backbone=resnet18", "model.embedding_dim=16", "data.dataset=market1501",
                             f"data.root={root}", "data.transforms.size=[32, 16]", "data.num_workers=0"])
    torch.manual_seed(0)
    net = build_model_from_config(cfg.model)
    with torch.no_grad():  # move the BN statistics away from the identity
        net(torch.randn(4, 3, 32, 16) + 1.0)
    path = base / "ckpt.pth"
    atomic_save({"model": net.state_dict(), "config": cfg.to_dict(), "epoch": 1}, path)
    return path, Path(root)


def _extract(ckpt, records, flip):
    """``(feats, pids, camids)`` of records through the embedding API (the path reid-eval uses)."""
    from reid_robust.engine.embed import Embedder

    fs = Embedder.from_checkpoint(ckpt, "cpu", flip=flip, progress=False).embed_records(records)
    return fs.feats, fs.pids, fs.camids


def test_checkpoint_dataset_mode_extracts_saves_and_evaluates(tool, checkpoint, tmp_path):
    from reid_robust.data import build_dataset

    ckpt, root = checkpoint
    feats_dir, out = tmp_path / "feats", tmp_path / "m.json"
    assert tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--flip", "--save-features",
                      str(feats_dir), "--json", str(out), "--batch-size", "7"]) == 0
    splits = build_dataset("market1501", root)
    qf, _, _ = _extract(ckpt, splits.query, flip=True)
    with np.load(feats_dir / "query.npz") as saved:
        np.testing.assert_allclose(saved["feats"], qf, atol=1e-5)
        assert list(saved["paths"]) == [r.path for r in splits.query]
        q = [saved[k] for k in ("feats", "pids", "camids")]
    with np.load(feats_dir / "gallery.npz") as saved:
        g = [saved[k] for k in ("feats", "pids", "camids")]
        assert len(g[0]) == len(splits.gallery)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = evaluate_reid(q[0], g[0], q[1], g[1], q[2], g[2])
    assert json.loads(out.read_text())["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    # the saved features evaluate to the same numbers
    again = tmp_path / "again.json"
    assert tool.main(["--query", str(feats_dir / "query.npz"), "--gallery", str(feats_dir / "gallery.npz"),
                      "--json", str(again), "--visualize", "1", "--visualize-dir", str(tmp_path / "r")]) == 0
    assert json.loads(again.read_text())["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


def test_checkpoint_with_image_folders(tool, checkpoint, tmp_path):
    from reid_robust.data.market1501 import load_market_folder

    ckpt, root = checkpoint
    query_dir, gallery_dir = root / "query", root / "bounding_box_test"
    out = tmp_path / "folders.json"
    assert tool.main(["--checkpoint", str(ckpt), "--query", str(query_dir), "--gallery", str(gallery_dir),
                      "--json", str(out)]) == 0
    qf, qp, qc = _extract(ckpt, load_market_folder(query_dir), flip=False)
    gf, gp, gc = _extract(ckpt, load_market_folder(gallery_dir), flip=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = evaluate_reid(qf, gf, qp, gp, qc, gc)
    assert json.loads(out.read_text())["rank1"] == pytest.approx(expected["rank1"])


def test_config_mode_takes_the_dataset_from_the_config(tool, checkpoint, tmp_path, capsys):
    ckpt, root = checkpoint
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  dataset: market1501\n  root: {tmp_path / 'nowhere'}\n")
    assert tool.main(["--checkpoint", str(ckpt), "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert tool.main(["--checkpoint", str(ckpt), "--config", str(config), "--data-root", str(root)]) == 0
    assert "mAP (%)" in capsys.readouterr().out


def test_visualize_without_paths_fails_before_evaluating(tool, npz_pair, tmp_path, capsys):
    base, (qf, gf, q_pids, g_pids, q_cams, g_cams) = npz_pair
    np.savez(tmp_path / "q.npz", feats=qf, pids=q_pids, camids=q_cams)  # no 'paths' array
    np.savez(tmp_path / "g.npz", feats=gf, pids=g_pids, camids=g_cams)
    assert tool.main(["--query", str(tmp_path / "q.npz"), "--gallery", str(tmp_path / "g.npz"), "--visualize", "1"]) == 2
    captured = capsys.readouterr()
    assert "needs image paths" in captured.err and "mAP" not in captured.out  # no table printed first


def test_checkpoint_that_does_not_fit_its_config_is_a_one_line_error(tool, checkpoint, tmp_path, capsys):
    from reid_robust.engine.checkpoint import atomic_save, load_checkpoint

    ckpt, root = checkpoint
    state = load_checkpoint(ckpt)
    state["config"] = {**state["config"], "model": {**state["config"]["model"], "embedding_dim": 8}}
    atomic_save(state, tmp_path / "mismatch.pth")
    assert tool.main(["--checkpoint", str(tmp_path / "mismatch.pth"), "--data-root", str(root)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit the model its config describes" in err[0] and "mismatch.pth" in err[0]


def _identity_folders(root: Path, target: Path, source: str) -> dict[str, int]:
    """Copy a Market-1501 folder into ``target/<name of the identity>/<plain name>.jpg``; {path: pid}."""
    from reid_robust.data.market1501 import load_market_folder

    names = {}
    for k, r in enumerate(load_market_folder(root / source)):
        if r.pid <= 0:
            continue  # junk and distractors have no identity folder
        path = target / f"person_{chr(ord('a') + r.pid)}" / f"img{k:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(Path(r.path).read_bytes())
        names[str(path)] = r.pid
    return names


def test_identity_folders_without_cameras_need_no_camera_filter(tool, checkpoint, tmp_path, capsys):
    """Query and gallery as <root>/<identity>/*.jpg (non-integer names): evaluated with --no-camera-filter,
    equal to the array form on the same features with the names' identities."""
    ckpt, root = checkpoint
    query = _identity_folders(root, tmp_path / "mine" / "query", "query")
    gallery = _identity_folders(root, tmp_path / "mine" / "gallery", "bounding_box_test")
    args = ["--checkpoint", str(ckpt), "--query", str(tmp_path / "mine" / "query"),
            "--gallery", str(tmp_path / "mine" / "gallery"), "--device", "auto"]
    assert tool.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no camids" in err[0] and "--no-camera-filter" in err[0]
    out = tmp_path / "m.json"
    assert tool.main(args + ["--no-camera-filter", "--json", str(out), "--save-features", str(tmp_path / "f")]) == 0
    printed = capsys.readouterr().out
    assert "test transform of checkpoint" in printed and "no camera filter" in printed
    from reid_robust.data.records import ImageRecord

    qf, _, _ = _extract(ckpt, [ImageRecord(p, 0, 0) for p in sorted(query)], flip=False)
    gf, _, _ = _extract(ckpt, [ImageRecord(p, 0, 0) for p in sorted(gallery)], flip=False)
    expected = evaluate_reid(qf, gf, [query[p] for p in sorted(query)], [gallery[p] for p in sorted(gallery)],
                             camera_filter=False)
    saved = json.loads(out.read_text())
    assert saved["mAP"] == pytest.approx(expected["mAP"], abs=1e-6) and saved["camera_filter"] is False
    # the saved feature files carry the identity names and evaluate to the same numbers
    again = tmp_path / "again.json"
    assert tool.main(["--query", str(tmp_path / "f" / "query.npz"), "--gallery", str(tmp_path / "f" / "gallery.npz"),
                      "--no-camera-filter", "--json", str(again)]) == 0
    assert json.loads(again.read_text())["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


def test_identity_folders_with_a_camera_pattern_and_a_labels_csv(tool, checkpoint, tmp_path):
    from reid_robust.data.market1501 import load_market_folder

    ckpt, root = checkpoint
    q_records, g_records = load_market_folder(root / "query"), load_market_folder(root / "bounding_box_test")
    qf, qp, qc = _extract(ckpt, q_records, flip=False)
    gf, gp, gc = _extract(ckpt, g_records, flip=False)
    expected = evaluate_reid(qf, gf, qp, gp, qc, gc)
    # identity folders named by integer ids, the camera in the file name
    for split, records in (("query", q_records), ("gallery", g_records)):
        for r in records:
            path = tmp_path / "ids" / split / str(r.pid) / f"cam{r.camid}_{Path(r.path).name}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(Path(r.path).read_bytes())
    out = tmp_path / "ids.json"
    assert tool.main(["--checkpoint", str(ckpt), "--query", str(tmp_path / "ids" / "query"), "--gallery",
                      str(tmp_path / "ids" / "gallery"), "--camera-pattern", r"^cam(\d+)_", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    # path lists with a labels CSV
    labels = tmp_path / "labels.csv"
    labels.write_text("path,pid,camid\n" + "".join(f"{r.path},{r.pid},{r.camid}\n" for r in q_records + g_records))
    for split, records in (("q", q_records), ("g", g_records)):
        (tmp_path / f"{split}.txt").write_text("".join(f"{r.path}\n" for r in records))
    out = tmp_path / "csv.json"
    assert tool.main(["--checkpoint", str(ckpt), "--query", str(tmp_path / "q.txt"), "--gallery",
                      str(tmp_path / "g.txt"), "--labels", str(labels), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)


def test_config_keeps_the_checkpoint_transforms_unless_told(tool, checkpoint, tmp_path, capsys):
    ckpt, root = checkpoint
    config = tmp_path / "c.yaml"
    config.write_text(f"data:\n  dataset: market1501\n  root: {root}\n  transforms:\n    size: [64, 32]\n")
    out_kept, out_other = tmp_path / "kept.json", tmp_path / "other.json"
    assert tool.main(["--checkpoint", str(ckpt), "--config", str(config), "--json", str(out_kept)]) == 0
    assert f"test transform of checkpoint {ckpt}: images resized to 32x16" in capsys.readouterr().out
    assert tool.main(["--checkpoint", str(ckpt), "--config", str(config), "--config-transforms",
                      "--json", str(out_other)]) == 0
    assert f"test transform of --config {config}: images resized to 64x32" in capsys.readouterr().out
    assert json.loads(out_kept.read_text())["mAP"] != json.loads(out_other.read_text())["mAP"]
    from reid_robust.data import build_dataset

    splits = build_dataset("market1501", root)
    qf, qp, qc = _extract(ckpt, splits.query, flip=False)
    gf, gp, gc = _extract(ckpt, splits.gallery, flip=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert json.loads(out_kept.read_text())["mAP"] == pytest.approx(evaluate_reid(qf, gf, qp, gp, qc, gc)["mAP"])


@pytest.mark.parametrize("device, message", [("gpu", "'gpu' is not a device name"),
                                             ("cuda:0", "CUDA is not available")])
def test_device_errors_are_one_line(tool, checkpoint, capsys, device, message):
    if device.startswith("cuda") and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    ckpt, root = checkpoint
    assert tool.main(["--checkpoint", str(ckpt), "--data-root", str(root), "--device", device]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
