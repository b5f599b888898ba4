"""CUHK03-NP loader (labeled and detected) on tiny generated trees."""
from pathlib import Path

import pytest
from PIL import Image

from reid_robust.data import build_dataset, summarize

TREE = {
    "bounding_box_train": ["0005_c1_1.png", "0005_c2_6.png", "0009_c1_2.png", "0012_c2_7.png", "0012_c2_8.png"],
    "query": ["0003_c1_1.png", "0003_c2_6.png", "0004_c2_7.png"],
    "bounding_box_test": ["0003_c1_2.png", "0003_c2_7.png", "0004_c1_1.png", "0004_c2_8.png"],
}


def write_tree(base: Path, tree=TREE) -> Path:
    for folder, names in tree.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (8, 16), (40, 50, 60)).save(base / folder / name)
        (base / folder / "Thumbs.db").write_text("not an image")
    return base


def test_labeled_and_detected(tmp_path):
    write_tree(tmp_path / "cuhk03-np" / "labeled")
    write_tree(tmp_path / "cuhk03-np" / "detected", {**TREE, "bounding_box_train": TREE["bounding_box_train"][:2]})
    labeled = build_dataset("cuhk03_np", tmp_path)  # the parent of cuhk03-np/ is accepted
    assert labeled.protocol == "market" and labeled.name == "cuhk03_np_labeled"
    assert [(Path(r.path).name[:4], r.pid, r.camid) for r in labeled.train] == [
        ("0005", 0, 0), ("0005", 0, 1), ("0009", 1, 0), ("0012", 2, 1), ("0012", 2, 1)]
    assert labeled.num_train_classes == 3
    assert [(r.pid, r.camid) for r in labeled.query] == [(3, 0), (3, 1), (4, 1)]
    assert sorted(r.pid for r in labeled.gallery) == [3, 3, 4, 4]
    assert all("/labeled/" in r.path for r in labeled.train + labeled.query + labeled.gallery)
    detected = build_dataset("cuhk03_np", tmp_path / "cuhk03-np", variant="detected")
    assert detected.name == "cuhk03_np_detected" and len(detected.train) == 2 and detected.num_train_classes == 1
    assert "/detected/" in detected.gallery[0].path
    assert "cuhk03_np_labeled" in summarize(labeled)


def test_missing_variant_names_path_and_source(tmp_path):
    write_tree(tmp_path / "labeled")
    with pytest.raises(FileNotFoundError, match=r"'detected'.*cuhk03-np.*zhunzhong07/person-re-ranking"):
        build_dataset("cuhk03_np", tmp_path, variant="detected")
    with pytest.raises(ValueError, match="variant must be 'labeled' or 'detected', got 'label'"):
        build_dataset("cuhk03_np", tmp_path, variant="label")


def test_missing_query_folder_is_named(tmp_path):
    write_tree(tmp_path / "labeled", {k: v for k, v in TREE.items() if k != "query"})
    with pytest.raises(FileNotFoundError, match=r"query folder 'query/' at .*labeled/query.*person-re-ranking"):
        build_dataset("cuhk03_np", tmp_path)


@pytest.mark.parametrize("name, message", [("0003_c3_1.png", "camera 3 is outside 1..2"),
                                           ("3_c1_1.png", "expected a name like '0001_c1_1.png'"),
                                           ("0003_c1s1_000451_03.png", "cannot parse CUHK03-NP file name")])
def test_bad_file_names_are_named(tmp_path, name, message):
    write_tree(tmp_path / "labeled", {**TREE, "bounding_box_test": TREE["bounding_box_test"] + [name]})
    with pytest.raises(ValueError, match=message) as error:
        build_dataset("cuhk03_np", tmp_path)
    assert f"bounding_box_test/{name}" in str(error.value)
