"""Cars196 (.mat and text annotations) and Stanford Online Products loaders on tiny fake trees."""
import numpy as np
import pytest
from PIL import Image

from reid_robust.data import build_dataset

CARS = [("car_ims/000001.jpg", 1), ("car_ims/000002.jpg", 1), ("car_ims/000003.jpg", 2), ("car_ims/000004.jpg", 3),
        ("car_ims/000005.jpg", 4), ("car_ims/000006.jpg", 4)]  # 4 classes: 1-2 train, 3-4 test


def write_images(root, paths):
    for rel in paths:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (30, 20)).save(root / rel)


def test_cars_from_mat(tmp_path):
    scipy_io = pytest.importorskip("scipy.io")
    write_images(tmp_path, [p for p, _ in CARS])
    dtype = [("relative_im_path", "O"), ("bbox_x1", "O"), ("bbox_y1", "O"), ("bbox_x2", "O"), ("bbox_y2", "O"),
             ("class", "O"), ("test", "O")]
    annotations = np.array([(p, 3, 2, 12, 9, c, 0) for p, c in CARS], dtype=dtype)
    scipy_io.savemat(tmp_path / "cars_annos.mat", {"annotations": annotations})
    splits = build_dataset("cars196", tmp_path, crop_bbox=True)
    assert splits.protocol == "cub" and splits.num_train_classes == 2
    assert [r.pid for r in splits.train] == [0, 0, 1] and [r.pid for r in splits.gallery] == [3, 4, 4]
    assert splits.train[0].bbox == (2.0, 1.0, 10.0, 8.0)  # 1-based inclusive corners -> (x, y, w, h)


def test_cars_from_text_list(tmp_path):
    write_images(tmp_path, [p for p, _ in CARS])
    lines = ["# path class [x1 y1 x2 y2]"] + [f"{p} {c}" for p, c in CARS]
    (tmp_path / "cars_annos.txt").write_text("\n".join(lines) + "\n")
    splits = build_dataset("cars196", tmp_path)
    assert len(splits.train) == 3 and len(splits.gallery) == 3 and splits.train[0].bbox is None
    with pytest.raises(ValueError, match="has no box"):
        build_dataset("cars196", tmp_path, crop_bbox=True)


def test_cars_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="cars_annos.mat' or 'cars_annos.txt"):
        build_dataset("cars196", tmp_path)
    (tmp_path / "cars_annos.txt").write_text("car_ims/1.jpg one\n")
    with pytest.raises(ValueError, match="cars_annos.txt:1"):
        build_dataset("cars196", tmp_path)


def write_sop(root, drop_image=False):
    root.mkdir(parents=True, exist_ok=True)
    train = [(1, 1, 1, "bicycle_final/111_0.JPG"), (2, 1, 1, "bicycle_final/111_1.JPG"),
             (3, 2, 2, "chair_final/222_0.JPG")]
    test = [(4, 3, 1, "bicycle_final/333_0.JPG"), (5, 3, 1, "bicycle_final/333_1.JPG"), (6, 4, 2, "chair_final/444_0.JPG")]
    for name, rows in (("Ebay_train.txt", train), ("Ebay_test.txt", test)):
        text = "image_id class_id super_class_id path\n" + "".join(f"{a} {b} {c} {d}\n" for a, b, c, d in rows)
        (root / name).write_text(text)
    write_images(root, [r[3] for r in train + test][: -1 if drop_image else None])
    return root


def test_sop(tmp_path):
    splits = build_dataset("sop", write_sop(tmp_path / "Stanford_Online_Products").parent)
    assert splits.protocol == "cub" and splits.num_train_classes == 2
    assert [r.pid for r in splits.train] == [0, 0, 1] and [r.pid for r in splits.query] == [3, 3, 4]


def test_sop_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="Ebay_train.txt"):
        build_dataset("sop", tmp_path)
    write_sop(tmp_path, drop_image=True)
    with pytest.raises(FileNotFoundError, match="444_0.JPG"):
        build_dataset("sop", tmp_path)
