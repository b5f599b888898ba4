"""MSMT17 loader on tiny fake V1/V2 trees."""
import pytest
from PIL import Image

from reid_robust.data import build_dataset
from reid_robust.data.msmt17 import parse_msmt_camera

LISTS = {
    "train": ["0000/0000_000_01_0303morning_0015_0.jpg 0", "0000/0000_001_05_0303morning_0036_1.jpg 0",
              "0002/0002_000_15_0303noon_1004_0.jpg 2"],
    "val": ["0001/0001_000_03_0303afternoon_0100_0.jpg 1"],
    "query": ["0000/0000_000_02_0303morning_0100_0.jpg 0", "0005/0005_000_07_0303noon_0100_0.jpg 5"],
    "gallery": ["0000/0000_003_04_0303morning_0200_0.jpg 0", "0005/0005_001_08_0303noon_0300_0.jpg 5",
                "0009/0009_000_09_0303noon_0400_0.jpg 9"],
}


def write_msmt_tree(root, train_dir="train", test_dir="test"):
    root.mkdir(parents=True, exist_ok=True)
    for split, lines in LISTS.items():
        (root / f"list_{split}.txt").write_text("\n".join(lines) + "\n")
        folder = root / (train_dir if split in ("train", "val") else test_dir)
        for line in lines:
            path = folder / line.split()[0]
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (4, 8)).save(path)
    return root


def test_parse_camera():
    assert parse_msmt_camera("0000/0000_000_01_0303morning_0015_0.jpg") == 0
    assert parse_msmt_camera("0002_000_15_x.jpg") == 14
    with pytest.raises(ValueError, match="bad.jpg"):
        parse_msmt_camera("bad.jpg")


@pytest.mark.parametrize("version, dirs", [("v1", ("train", "test")), ("v2", ("mask_train_v2", "mask_test_v2"))])
def test_v1_v2_layouts(tmp_path, version, dirs):
    folder = "MSMT17_V1" if version == "v1" else "MSMT17_V2"
    write_msmt_tree(tmp_path / folder, *dirs)
    splits = build_dataset("msmt17", tmp_path)
    assert splits.protocol == "market"
    assert [r.pid for r in splits.train] == [0, 0, 2, 1] and splits.num_train_classes == 3
    assert [r.camid for r in splits.train] == [0, 4, 14, 2]
    assert [r.pid for r in splits.query] == [1, 6] and len(splits.gallery) == 3  # list pid + 1 (0 is a person)
    assert dirs[1] in splits.gallery[0].path
    without_val = build_dataset("msmt17", tmp_path, version=version, include_val=False)
    assert len(without_val.train) == 3 and without_val.num_train_classes == 2


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="list_train.txt"):
        build_dataset("msmt17", tmp_path)
    write_msmt_tree(tmp_path)
    with pytest.raises(FileNotFoundError, match="mask_train_v2"):
        build_dataset("msmt17", tmp_path, version="v2")
    (tmp_path / "test" / LISTS["gallery"][2].split()[0]).unlink()
    with pytest.raises(FileNotFoundError, match="0009_000_09"):
        build_dataset("msmt17", tmp_path)
    (tmp_path / "list_query.txt").write_text("0000/0000_000_02_0303morning_0100_0.jpg\n")
    with pytest.raises(ValueError, match="list_query.txt:1"):
        build_dataset("msmt17", tmp_path)


def test_list_pid_zero_is_an_evaluated_person_not_a_distractor(tmp_path):
    import numpy as np

    from reid_robust.evaluation import evaluate_reid

    write_msmt_tree(tmp_path)
    splits = build_dataset("msmt17", tmp_path)
    qp = np.array([r.pid for r in splits.query])
    gp = np.array([r.pid for r in splits.gallery])
    qc = np.array([r.camid for r in splits.query])
    gc = np.array([r.camid for r in splits.gallery])
    # each query's own gallery image is its nearest: list pid 0 must count as a valid, perfectly ranked query
    feats = {1: [1.0, 0.0, 0.0], 6: [0.0, 1.0, 0.0], 10: [0.0, 0.0, 1.0]}
    res = evaluate_reid(np.array([feats[p] for p in qp]), np.array([feats[p] for p in gp]), qp, gp, qc, gc)
    assert res["num_valid_queries"] == 2 and res["mAP"] == 1.0
