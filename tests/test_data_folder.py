"""Generic identity-folder dataset: three layouts, cameras from a file-name pattern, errors."""
import numpy as np
import pytest
from PIL import Image

from reid_robust.data import build_dataset
from reid_robust.data.records import UNKNOWN_CAMID


def write(root, layout):
    for rel in layout:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6)).save(root / rel)
    (root / "notes.txt").write_text("ignored")
    return root


def test_market_layout_with_camera_pattern(tmp_path):
    write(tmp_path, ["train/7/a_c1.jpg", "train/7/b_c2.jpg", "train/3/c_c2.jpg", "train/-1/d_c1.jpg",
                     "query/5/e_c1.jpg", "gallery/5/f_c3.jpg", "gallery/0/g_c2.jpg", "gallery/-1/h_c1.jpg"])
    splits = build_dataset("folder", tmp_path, camera_pattern=r"_c(?P<cam>\d+)")
    assert splits.protocol == "market" and splits.num_train_classes == 2
    assert sorted((r.pid, r.camid) for r in splits.train) == [(0, 1), (1, 0), (1, 1)]  # -1 never trains
    assert [(r.pid, r.camid) for r in splits.query] == [(5, 0)]
    assert sorted((r.pid, r.camid) for r in splits.gallery) == [(-1, 0), (0, 1), (5, 2)]


def test_market_layout_without_cameras_has_no_cameras(tmp_path):
    """No camera pattern: every camid is the 'unknown' marker (no invented gallery camera)."""
    write(tmp_path, ["train/alice/1.jpg", "train/bob/2.jpg", "query/carol/3.jpg", "gallery/carol/4.jpg"])
    splits = build_dataset("folder", tmp_path)
    for split in (splits.train, splits.query, splits.gallery):
        assert {r.camid for r in split} == {UNKNOWN_CAMID}
    assert splits.query[0].pid == splits.gallery[0].pid == 3  # 1-based rank of 'carol' among all names


def test_train_test_layout(tmp_path):
    write(tmp_path, ["train/a/1.png", "train/b/2.png", "test/c/3.png", "test/c/4.png"])
    splits = build_dataset("folder", tmp_path)
    assert splits.protocol == "cub" and len(splits.gallery) == 2 and splits.query is splits.gallery


def test_flat_identity_layout_is_split_by_identity(tmp_path):
    write(tmp_path, [f"{i:03d}/{k}.jpg" for i in range(1, 5) for k in range(2)])
    splits = build_dataset("folder", tmp_path, train_fraction=0.75)
    assert splits.num_train_classes == 3 and len(splits.train) == 6
    assert {r.pid for r in splits.gallery} == {4}


def test_errors(tmp_path):
    write(tmp_path, ["train/a/1.jpg", "query/a/2.jpg"])
    with pytest.raises(FileNotFoundError, match="query/ and gallery/"):
        build_dataset("folder", tmp_path)
    write(tmp_path, ["gallery/a/3.jpg"])
    with pytest.raises(ValueError, match="1.jpg' does not match camera_pattern"):
        build_dataset("folder", tmp_path, camera_pattern=r"_c(\d)")
    loose = write(tmp_path / "loose", ["x/1.jpg", "stray.jpg"])
    with pytest.raises(ValueError, match="stray.jpg is not inside an identity folder"):
        build_dataset("folder", loose)


def test_junk_and_distractor_folders_need_numeric_identity_names_everywhere(tmp_path):
    write(tmp_path, ["train/7/a.jpg", "train/alice/b.jpg", "query/5/c.jpg", "gallery/5/d.jpg",
                     "gallery/-1/e.jpg", "gallery/0000/f.jpg"])
    with pytest.raises(ValueError, match=r"gallery/-1, gallery/0000 .*non-numeric names \(train/alice\); "
                                         r"-1/0 junk/distractor folders need numeric identity names everywhere"):
        build_dataset("folder", tmp_path)
    flat = write(tmp_path / "flat", ["0/1.jpg", "bob/2.jpg", "carol/3.jpg"])
    with pytest.raises(ValueError, match=r"identity folder\(s\) 0 look like junk"):
        build_dataset("folder", flat)


def identity_tree(root, with_cameras: bool = False, size=(16, 32)):
    """A market-layout identity-folder tree: 6 training identities x 4 images, 3 test identities with 2 query
    and 3 gallery images each; file names carry a camera ``_c<k>`` when ``with_cameras``."""
    rng = np.random.default_rng(0)
    for split, ids, per_id in (("train", range(6), 4), ("query", range(6, 9), 2), ("gallery", range(6, 9), 3)):
        for i in ids:
            folder = root / split / f"person_{i}"
            folder.mkdir(parents=True, exist_ok=True)
            colour = rng.integers(0, 255, 3)
            for k in range(per_id):
                pixels = np.clip(colour + rng.normal(0, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
                camera = f"_c{1 if split == 'query' else 2 + k % 2}" if with_cameras else ""
                Image.fromarray(pixels).save(folder / f"{split}_{k}{camera}.jpg")
    return root


def test_features_of_a_folder_split_without_cameras_have_no_camids(tmp_path):
    """embed_records: camids None for a split without cameras (evaluate_reid then needs camera_filter=False),
    the cameras of the pattern otherwise; an unknown camera next to known ones is refused."""
    import torch

    from reid_robust.config import TransformConfig
    from reid_robust.data import build_transforms
    from reid_robust.data.records import ImageRecord
    from reid_robust.engine.embed import ExtractOptions, embed_records
    from reid_robust.evaluation.features_eval import evaluate_reid_features

    class MeanColour(torch.nn.Module):
        def forward(self, images):
            return {"bn_feat": images.mean(dim=(2, 3))}

    model, transform = MeanColour(), build_transforms(TransformConfig(size=(32, 16)), train=False)
    options = ExtractOptions(batch_size=4, progress=False)
    plain = build_dataset("folder", identity_tree(tmp_path / "plain"))
    query, gallery = (embed_records(model, s, transform, "cpu", options, n) for s, n in
                      ((plain.query, "query"), (plain.gallery, "gallery")))
    assert query.camids is None and gallery.camids is None
    with pytest.raises(ValueError, match="query_camids is None: .*camera_filter=False"):
        evaluate_reid_features(query, gallery)
    assert evaluate_reid_features(query, gallery, camera_filter=False)["num_valid_queries"] == 6
    cams = build_dataset("folder", identity_tree(tmp_path / "cams", with_cameras=True), camera_pattern=r"_c(\d+)")
    assert embed_records(model, cams.gallery, transform, "cpu", options).camids.tolist() == [1, 2, 1] * 3
    mixed = [plain.query[0], ImageRecord(plain.query[1].path, 7, 0)]
    with pytest.raises(ValueError, match="mixed: 1 of 2 images have no camera"):
        embed_records(model, mixed, transform, "cpu", options, "mixed")


def test_training_on_folder_data_without_cameras_needs_the_explicit_switch(tmp_path, tiny_market_root):
    """eval.camera_filter=true on a folder dataset without a camera pattern: one line before training; with
    eval.camera_filter=false it trains and evaluates every same-identity gallery image as a match."""
    from conftest import REPO, tiny_overrides

    from reid_robust.config import ConfigError, load_config
    from reid_robust.engine.trainer import train

    root = identity_tree(tmp_path / "data")
    base = tiny_overrides(tiny_market_root, tmp_path / "run") + [
        "data.dataset=folder", f"data.root={root}", "data.options={}", "train.epochs=1"]
    with pytest.raises(ConfigError, match=r"eval.camera_filter: the query and gallery images of dataset folder "
                                          r"have no cameras .* set eval.camera_filter=false"):
        train(load_config(REPO / "configs/quickstart.yaml", base))
    assert not list((tmp_path / "run").rglob("*.pth"))  # refused before the first step
    summary = train(load_config(REPO / "configs/quickstart.yaml", base + ["eval.camera_filter=false",
                                                                          "train.overwrite=true"]))
    assert summary["num_valid_queries"] == 6 and 0 < summary["mAP"] <= 1
