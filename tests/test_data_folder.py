"""Generic identity-folder dataset: three layouts, cameras from a file-name pattern, errors."""
import pytest
from PIL import Image

from reid_robust.data import build_dataset


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


def test_market_layout_without_cameras_separates_query_and_gallery(tmp_path):
    write(tmp_path, ["train/alice/1.jpg", "train/bob/2.jpg", "query/carol/3.jpg", "gallery/carol/4.jpg"])
    splits = build_dataset("folder", tmp_path)
    assert {r.camid for r in splits.query} == {0} and {r.camid for r in splits.gallery} == {1}
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
