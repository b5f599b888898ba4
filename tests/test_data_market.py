"""Market-1501 loader on a tiny fake tree with the official naming, junk/distractor files and stray files."""
import re
from pathlib import Path

import pytest
from PIL import Image

from reid_robust.data import build_dataset, load_market_folder, parse_market_filename, summarize

TREE = {
    "bounding_box_train": ["0002_c1s1_000451_03.jpg", "0002_c2s1_000551_01.jpg", "0002_c3s1_000651_01.jpg",
                           "0007_c1s2_000100_01.jpg", "0007_c6s2_000200_02.jpg", "0010_c4s3_000300_01.jpg",
                           "0000_c1s1_000001_01.jpg", "-1_c2s1_000002_01.jpg"],
    "query": ["0003_c1s1_001000_00.jpg", "0003_c2s1_001100_00.jpg", "0005_c4s2_001200_00.jpg"],
    "bounding_box_test": ["0003_c1s1_001001_01.jpg", "0003_c3s1_001300_01.jpg", "0005_c5s2_001400_02.jpg",
                          "0000_c1s1_000010_01.jpg", "0000_c2s1_000020_02.jpg", "-1_c1s1_000030_01.jpg",
                          "-1_c3s1_000040_03.jpg"],
}
STRAY = ["Thumbs.db", "readme.txt", "labels.csv"]


def write_market_tree(root: Path, tree=TREE) -> Path:
    for folder, names in tree.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (8, 16), (10, 20, 30)).save(root / folder / name)
        for stray in STRAY:
            (root / folder / stray).write_text("not an image")
    return root


def test_parse_market_filename():
    assert parse_market_filename("0002_c1s1_000451_03.jpg") == (2, 0)
    assert parse_market_filename("/data/x/-1_c6s2_000030_01.jpg") == (-1, 5)
    assert parse_market_filename("0000_c3s1_000010_01.jpg") == (0, 2)
    assert parse_market_filename("1501_c12s1_000010_01.png") == (1501, 11)


@pytest.mark.parametrize("name", ["abc_c1s1_000451_03.jpg", "0002-c1s1.jpg", "0002_s1_000451.jpg", "0002_c0s1_0.jpg",
                                  "0002_c1_whatever copy.jpg", "0002_c1s1_000451_03 (1).jpg", "2_c1s1_000451_03.jpg",
                                  "0002_c1s1_451_03.jpg", "0002_c1s1_000451_03.jpg.txt"])
def test_parse_market_filename_rejects_and_names_file(name):
    with pytest.raises(ValueError, match=re.escape(name.split(".")[0])):
        parse_market_filename(name)


def test_loose_parsing_for_a_users_own_camera_network():
    assert parse_market_filename("0002_c1_whatever.jpg", strict=False) == (2, 0)
    assert parse_market_filename("17_c12_frame9.png", strict=False) == (17, 11)
    for name in ("0002_c.jpg", "0002_c0_a.jpg", "x_c1_a.jpg"):
        with pytest.raises(ValueError, match=name):
            parse_market_filename(name, strict=False)


def test_market_protocol_counts(tmp_path):
    splits = build_dataset("market1501", write_market_tree(tmp_path))
    assert splits.protocol == "market" and splits.name == "market1501"
    # training: junk (-1) and distractor (0000) images dropped, 3 identities relabelled 0..2 in pid order
    assert splits.num_train_classes == 3
    assert [(Path(r.path).name[:4], r.pid) for r in splits.train] == [
        ("0002", 0), ("0002", 0), ("0002", 0), ("0007", 1), ("0007", 1), ("0010", 2)]
    assert [r.camid for r in splits.train] == [0, 1, 2, 0, 5, 3]
    assert len(splits.query) == 3 and {r.pid for r in splits.query} == {3, 5}
    # gallery keeps junk and distractors with their original ids
    assert sorted(r.pid for r in splits.gallery) == [-1, -1, 0, 0, 3, 3, 5]
    assert all(Path(r.path).is_absolute() and r.path.endswith(".jpg") for r in splits.gallery)
    table = summarize(splits)
    assert "| train" in table and "| gallery" in table
    gallery_row = next(line for line in table.splitlines() if line.startswith("| gallery"))
    assert [c.strip() for c in gallery_row.strip("|").split("|")] == ["gallery", "2", "7", "4", "2", "2"]


def test_load_market_folder_keeps_everything_unless_relabel(tmp_path):
    folder = write_market_tree(tmp_path) / "bounding_box_train"
    assert len(load_market_folder(folder)) == 8
    assert sorted({r.pid for r in load_market_folder(folder, relabel=True)}) == [0, 1, 2]


def test_nested_archive_folder_is_found(tmp_path):
    write_market_tree(tmp_path / "Market-1501-v15.09.15")
    assert len(build_dataset("market1501", tmp_path).train) == 6


def test_missing_root_and_subfolder_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build_dataset("market1501", tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="bounding_box_train"):
        build_dataset("market1501", tmp_path)
    tree = {k: v for k, v in TREE.items() if k != "query"}
    write_market_tree(tmp_path, tree)
    with pytest.raises(FileNotFoundError, match=r"query/"):
        build_dataset("market1501", tmp_path)


def test_unparsable_image_name_is_an_error_naming_it(tmp_path):
    write_market_tree(tmp_path)
    Image.new("RGB", (4, 4)).save(tmp_path / "bounding_box_test" / "person_12.jpg")
    with pytest.raises(ValueError, match="person_12.jpg"):
        build_dataset("market1501", tmp_path)


def test_empty_split_is_named(tmp_path):
    write_market_tree(tmp_path, {**TREE, "query": []})
    with pytest.raises(ValueError, match="query split is empty"):
        build_dataset("market1501", tmp_path)


def test_junk_in_query_is_rejected(tmp_path):
    write_market_tree(tmp_path, {**TREE, "query": TREE["query"] + ["-1_c1s1_000050_01.jpg"]})
    with pytest.raises(ValueError, match="query folder .* junk/distractor .*-1_c1s1_000050_01.jpg"):
        build_dataset("market1501", tmp_path)
