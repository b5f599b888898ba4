"""DukeMTMC-reID loader (for holders of a copy) on a tiny generated tree."""
from pathlib import Path

import pytest
from PIL import Image

from reid_robust.data import build_dataset, summarize

TREE = {
    "bounding_box_train": ["0001_c2_f0046182.jpg", "0001_c5_f0051341.jpg", "0007_c8_f0000100.jpg",
                           "0016_c1_f0101010.jpg"],
    "query": ["0005_c2_f0046985.jpg", "0019_c7_f0102030.jpg"],
    "bounding_box_test": ["0005_c1_f0047000.jpg", "0005_c2_f0046999.jpg", "0019_c3_f0102040.jpg",
                          "0050_c4_f0000001.jpg", "0051_c6_f0000002.jpg"],  # 0050, 0051: distractor identities
}


def write_tree(base: Path, tree=TREE) -> Path:
    for folder, names in tree.items():
        (base / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            Image.new("RGB", (8, 16), (5, 60, 90)).save(base / folder / name)
    return base


def test_counts_relabelling_and_cameras(tmp_path):
    write_tree(tmp_path / "DukeMTMC-reID")
    splits = build_dataset("dukemtmc", tmp_path)
    assert splits.protocol == "market" and splits.name == "dukemtmc"
    assert [(r.pid, r.camid) for r in splits.train] == [(0, 1), (0, 4), (1, 7), (2, 0)]
    assert splits.num_train_classes == 3
    assert [(r.pid, r.camid) for r in splits.query] == [(5, 1), (19, 6)]
    # distractor identities keep their own ids: ordinary wrong matches, no junk (-1) or pid 0
    assert [r.pid for r in splits.gallery] == [5, 5, 19, 50, 51]
    gallery_row = next(line for line in summarize(splits).splitlines() if line.startswith("| gallery"))
    assert [c.strip() for c in gallery_row.strip("|").split("|")] == ["gallery", "4", "5", "5", "0", "0"]


def test_missing_tree_says_the_dataset_was_withdrawn(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"'bounding_box_train'.*DukeMTMC-reID.*withdrawn by its authors"):
        build_dataset("dukemtmc", tmp_path)
    write_tree(tmp_path, {k: v for k, v in TREE.items() if k != "bounding_box_test"})
    with pytest.raises(FileNotFoundError, match=r"gallery folder 'bounding_box_test/' at .*withdrawn"):
        build_dataset("dukemtmc", tmp_path)


@pytest.mark.parametrize("name, message", [("0005_c9_f0046985.jpg", "camera 9 is outside 1..8"),
                                           ("0005_c2s1_046985_01.jpg", "expected a name like '0001_c2_f0046182.jpg'")])
def test_bad_names_are_refused(tmp_path, name, message):
    write_tree(tmp_path, {**TREE, "bounding_box_train": TREE["bounding_box_train"] + [name]})
    with pytest.raises(ValueError, match=message):
        build_dataset("dukemtmc", tmp_path)


def test_junk_in_query_is_rejected(tmp_path):
    write_tree(tmp_path, {**TREE, "query": TREE["query"] + ["0000_c1_f0000003.jpg"]})
    with pytest.raises(ValueError, match="query folder .* junk/distractor .*0000_c1_f0000003.jpg"):
        build_dataset("dukemtmc", tmp_path)
