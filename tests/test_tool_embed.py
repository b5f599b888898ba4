"""reid-embed (tools/embed.py): a folder, a glob or a list file -> .npz; one-line errors."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_embed import make_checkpoint

from reid_robust.cli.embed import main
from reid_robust.evaluation.report import load_features

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path, root, _ = make_checkpoint(tmp_path_factory.mktemp("tool_embed"), num_identities=4, dim=8)
    return path, root


def test_a_folder_of_plain_images_becomes_an_npz_with_paths(checkpoint, tmp_path, capsys):
    from reid_robust.engine.embed import Embedder

    ckpt, root = checkpoint
    photos = tmp_path / "photos"
    sources = sorted((root / "query").glob("*.jpg"))
    for i, p in enumerate(sources):  # nested deeper than identity folders: plain images, searched recursively
        folder = photos / f"album{i % 2}" / ("day1" if i < 3 else "day2")
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(p, folder / f"photo{i:02d}.jpg")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "photos.npz"
    assert main(["--checkpoint", str(ckpt), "--images", str(photos), "--out", str(out), "--device", "cpu",
                 "--no-progress", "--batch-size", "3"]) == 0
    assert f"wrote {len(sources)} embeddings of dimension 8 (images, no labels)" in capsys.readouterr().out
    saved = load_features(out)
    assert saved.pids is None and saved.camids is None and len(saved.paths) == len(sources)
    expected = Embedder.from_checkpoint(ckpt, "cpu", progress=False).embed(saved.paths)
    np.testing.assert_allclose(saved.feats, expected.feats, atol=1e-5)
    # a glob and a list file give the same file
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(saved.paths))
    for images in (str(photos / "**" / "*.jpg"), str(listing)):
        again = tmp_path / "again.npz"
        assert main(["--checkpoint", str(ckpt), "--images", images, "--out", str(again), "--no-progress"]) == 0
        np.testing.assert_allclose(load_features(again).feats, saved.feats, atol=1e-6)


def test_market_named_folders_keep_pids_and_cameras(checkpoint, tmp_path, capsys):
    from reid_robust.data.market1501 import load_market_folder

    ckpt, root = checkpoint
    out = tmp_path / "q.npz"
    assert main(["--checkpoint", str(ckpt), "--images", str(root / "query"), "--out", str(out)]) == 0
    assert "(market, pids and camids)" in capsys.readouterr().out
    records = load_market_folder(root / "query", strict=False)
    saved = load_features(out)
    np.testing.assert_array_equal(saved.pids, [r.pid for r in records])
    np.testing.assert_array_equal(saved.camids, [r.camid for r in records])


@pytest.mark.parametrize("args, message", [
    (["--images", "{missing}"], "is neither a folder, an image, a list file nor a glob"),
    (["--images", "{root}/query", "--device", "gpu"], "'gpu' is not a device name"),
    (["--images", "{root}/query", "--out", "{root}"], "is an existing folder"),
    (["--images", "{root}/query", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--images", "{root}/query", "--labels", "{missing}"], "labels CSV"),
])
def test_mistakes_are_one_line(checkpoint, tmp_path, capsys, args, message):
    ckpt, root = checkpoint
    names = {"missing": tmp_path / "missing", "root": root}
    out = [] if "--out" in args else ["--out", str(tmp_path / "x.npz")]
    argv = ["--checkpoint", str(ckpt), *out, *(a.format(**names) for a in args)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0], err
    assert not (tmp_path / "x.npz").exists()


def test_the_checkout_wrapper_runs_without_a_traceback(checkpoint, tmp_path):
    ckpt, _ = checkpoint
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "embed.py"), "--checkpoint", str(ckpt), "--images",
                           str(tmp_path / "nothing"), "--out", str(tmp_path / "x.npz")], capture_output=True,
                          text=True, cwd=REPO, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.startswith("error: ")
