"""CUB-200-2011 loader on a tiny fake tree: metric-learning split, bounding boxes, errors."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from reid_robust.data import build_dataset, summarize

# 4 classes, so the metric split is classes 1-2 train, 3-4 test (the real tree: 1-100 / 101-200)
CLASSES = {1: "001.Black_footed_Albatross", 2: "002.Laysan_Albatross", 3: "003.Sooty_Albatross",
           4: "004.Groove_billed_Ani"}
IMAGES = [(1, 1), (2, 1), (3, 2), (4, 3), (5, 3), (6, 3), (7, 4)]  # (image id, class)


def write_cub_tree(root: Path, drop: str | None = None) -> Path:
    lines = {"images.txt": [], "image_class_labels.txt": [], "classes.txt": [], "train_test_split.txt": [],
             "bounding_boxes.txt": []}
    for cls, folder in CLASSES.items():
        lines["classes.txt"].append(f"{cls} {folder}")
        (root / "images" / folder).mkdir(parents=True, exist_ok=True)
    for image_id, cls in IMAGES:
        rel = f"{CLASSES[cls]}/{CLASSES[cls].split('.')[1]}_{image_id:04d}.jpg"
        Image.new("RGB", (20, 10), (image_id, 0, 0)).save(root / "images" / rel)
        lines["images.txt"].append(f"{image_id} {rel}")
        lines["image_class_labels.txt"].append(f"{image_id} {cls}")
        lines["train_test_split.txt"].append(f"{image_id} {image_id % 2}")
        lines["bounding_boxes.txt"].append(f"{image_id} 2.0 1.0 {10 + image_id}.0 8.0")
    (root / "images" / "README").write_text("stray file")
    for name, content in lines.items():
        if name != drop:
            (root / name).write_text("\n".join(content) + "\n")
    return root


def test_metric_split_counts(tmp_path):
    splits = build_dataset("cub200", write_cub_tree(tmp_path))
    assert splits.protocol == "cub" and splits.query is splits.gallery
    assert [r.pid for r in splits.train] == [0, 0, 1] and splits.num_train_classes == 2
    assert [r.pid for r in splits.gallery] == [3, 3, 3, 4]  # test keeps the original class ids
    assert all(r.bbox is None and r.camid == 0 and Path(r.path).is_file() for r in splits.train + splits.gallery)
    assert "test (query = gallery)" in summarize(splits)


def test_bbox_option_and_classification_split(tmp_path):
    write_cub_tree(tmp_path)
    splits = build_dataset("cub200", tmp_path, crop_bbox=True)
    assert splits.train[0].bbox == (2.0, 1.0, 11.0, 8.0)
    classification = build_dataset("cub200", tmp_path, split="classification")
    assert len(classification.train) == 4 and len(classification.gallery) == 3  # odd image ids train


def test_nested_folder(tmp_path):
    write_cub_tree(tmp_path / "CUB_200_2011")
    assert len(build_dataset("cub200", tmp_path).train) == 3


@pytest.mark.parametrize("drop, message", [("images.txt", "images.txt"),
                                           ("image_class_labels.txt", "image_class_labels.txt"),
                                           ("classes.txt", "classes.txt")])
def test_missing_files_are_named(tmp_path, drop, message):
    write_cub_tree(tmp_path, drop=drop)
    with pytest.raises(FileNotFoundError, match=message):
        build_dataset("cub200", tmp_path)


def test_missing_boxes_only_matter_with_crop(tmp_path):
    write_cub_tree(tmp_path, drop="bounding_boxes.txt")
    assert len(build_dataset("cub200", tmp_path).train) == 3
    with pytest.raises(FileNotFoundError, match="bounding_boxes.txt"):
        build_dataset("cub200", tmp_path, crop_bbox=True)


def test_missing_image_and_bad_line_are_named(tmp_path):
    write_cub_tree(tmp_path)
    victim = next((tmp_path / "images" / CLASSES[3]).glob("*.jpg"))
    victim.unlink()
    with pytest.raises(FileNotFoundError, match=victim.name):
        build_dataset("cub200", tmp_path)
    (tmp_path / "image_class_labels.txt").write_text("1 1\nseven 2\n")
    with pytest.raises(ValueError, match=r"image_class_labels.txt:2"):
        build_dataset("cub200", tmp_path)


def test_class_id_without_a_name_is_named(tmp_path):
    write_cub_tree(tmp_path)
    lines = (tmp_path / "classes.txt").read_text().splitlines()
    (tmp_path / "classes.txt").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(ValueError, match=r"class id \d+ has no entry in .*classes.txt"):
        build_dataset("cub200", tmp_path)
