"""VeRi-776 loader on a tiny generated tree."""
from pathlib import Path

import pytest
from PIL import Image

from reid_robust.data import build_dataset

TREE = {
    "image_train": ["0002_c002_00030600_0.jpg", "0002_c020_00031000_1.jpg", "0010_c005_00081150_0.jpg",
                    "0776_c013_00011240_0.jpg"],
    "image_query": ["0006_c001_00016450_0.jpg", "0013_c014_00034520_0.jpg"],
    "image_test": ["0006_c001_00016460_1.jpg", "0006_c003_00016470_0.jpg", "0013_c009_00034530_0.jpg",
                   "0013_c014_00034500_0.jpg"],
}


def write_tree(base: Path, tree=TREE) -> Path:
    for folder, names in tree.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (16, 16), (90, 20, 30)).save(base / folder / name)
    (base / "name_train.txt").write_text("\n".join(tree.get("image_train", [])) + "\n")
    return base


def test_counts_relabelling_and_cameras(tmp_path):
    write_tree(tmp_path / "VeRi")
    splits = build_dataset("veri776", tmp_path)  # the parent of VeRi/ is accepted
    assert splits.protocol == "market" and splits.name == "veri776"
    assert [(r.pid, r.camid) for r in splits.train] == [(0, 1), (0, 19), (1, 4), (2, 12)]
    assert splits.num_train_classes == 3
    assert [(r.pid, r.camid) for r in splits.query] == [(6, 0), (13, 13)]
    assert [(r.pid, r.camid) for r in splits.gallery] == [(6, 0), (6, 2), (13, 8), (13, 13)]
    assert all(Path(r.path).is_absolute() and "/VeRi/image_test/" in r.path for r in splits.gallery)


def test_same_camera_rule_applies(tmp_path):
    import numpy as np

    from reid_robust.evaluation import evaluate_reid

    splits = build_dataset("veri776", write_tree(tmp_path))
    qp, gp = np.array([r.pid for r in splits.query]), np.array([r.pid for r in splits.gallery])
    qc, gc = np.array([r.camid for r in splits.query]), np.array([r.camid for r in splits.gallery])
    # every query is closest to its same-camera image, which must be ignored: the other camera ranks next
    qf = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    gf = np.array([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.6, 0.8, 0.0], [0.0, 1.0, 0.0]])
    result = evaluate_reid(qf, gf, qp, gp, qc, gc)
    assert result["num_valid_queries"] == 2 and result["rank1"] == 1.0 and result["mAP"] == 1.0


def test_errors_name_the_path_and_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'image_train'.*vehiclereid.github.io/VeRi"):
        build_dataset("veri776", tmp_path)
    write_tree(tmp_path, {k: v for k, v in TREE.items() if k != "image_query"})
    with pytest.raises(FileNotFoundError, match=r"query folder 'image_query/' at .*image_query.*vehiclereid"):
        build_dataset("veri776", tmp_path)


@pytest.mark.parametrize("name, message", [("0006_c021_00016450_0.jpg", "camera 21 is outside 1..20"),
                                           ("0006_c1_00016450_0.jpg", "expected a name like '0001_c001_00016450_0.jpg'"),
                                           ("0006_c000_00016450_0.jpg", "camera 0 is outside")])
def test_bad_names_are_refused(tmp_path, name, message):
    write_tree(tmp_path, {**TREE, "image_query": TREE["image_query"] + [name]})
    with pytest.raises(ValueError, match=message):
        build_dataset("veri776", tmp_path)
