"""DeepFashion In-Shop loader on tiny generated trees (release layout and flattened copy)."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_robust.data import build_dataset

ROWS = [("img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "id_00000002", "train"),
        ("img/WOMEN/Dresses/id_00000002/02_2_side.jpg", "id_00000002", "train"),
        ("img/MEN/Denim/id_00000080/01_1_front.jpg", "id_00000080", "train"),
        ("img/WOMEN/Skirts/id_00000007/01_1_front.jpg", "id_00000007", "query"),
        ("img/MEN/Tees_Tanks/id_00000011/03_4_full.jpg", "id_00000011", "query"),
        ("img/WOMEN/Skirts/id_00000007/01_2_side.jpg", "id_00000007", "gallery"),
        ("img/MEN/Tees_Tanks/id_00000011/03_1_front.jpg", "id_00000011", "gallery"),
        ("img/MEN/Tees_Tanks/id_00000011/03_2_side.jpg", "id_00000011", "gallery")]


def write_tree(root: Path, release: bool = True, rows=ROWS, declared: int | None = None) -> Path:
    image_root = root / "Img" if release else root
    list_dir = root / "Eval" if release else root
    list_dir.mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows) if declared is None else declared), "image_name item_id evaluation_status"]
    lines += [f"{path}   {item}   {status}" for path, item, status in rows]
    (list_dir / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    for path, _, _ in rows:
        (image_root / path).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 24), (200, 100, 50)).save(image_root / path)
    return root


@pytest.mark.parametrize("release", [True, False])
def test_counts_relabelling_and_cameras(tmp_path, release):
    splits = build_dataset("inshop", write_tree(tmp_path, release))
    assert splits.protocol == "market" and splits.name == "inshop"
    assert [r.pid for r in splits.train] == [0, 0, 1] and splits.num_train_classes == 2
    assert [(r.pid, r.camid) for r in splits.query] == [(7, 0), (11, 0)]
    assert [(r.pid, r.camid) for r in splits.gallery] == [(7, 1), (11, 1), (11, 1)]
    prefix = str(tmp_path / "Img" / "img") if release else str(tmp_path / "img")
    assert all(r.path.startswith(prefix) and Path(r.path).is_file() for r in splits.train + splits.gallery)


def test_release_found_from_its_parent_folder(tmp_path):
    write_tree(tmp_path / "In-shop Clothes Retrieval Benchmark")
    assert len(build_dataset("inshop", tmp_path).gallery) == 3


def test_every_gallery_match_counts(tmp_path):
    """No same-camera exclusion: query and gallery cameras differ, so rank-k is the papers' Recall@K."""
    from reid_robust.evaluation import evaluate_reid

    splits = build_dataset("inshop", write_tree(tmp_path))
    feats = {7: [1.0, 0.0], 11: [0.0, 1.0]}
    qp, gp = np.array([r.pid for r in splits.query]), np.array([r.pid for r in splits.gallery])
    qc, gc = np.array([r.camid for r in splits.query]), np.array([r.camid for r in splits.gallery])
    gf = np.array([feats[p] for p in gp]) + np.array([[0.0, 0.1], [0.1, 0.0], [0.2, 0.0]])
    result = evaluate_reid(np.array([feats[p] for p in qp]), gf, qp, gp, qc, gc)
    assert result["num_valid_queries"] == 2 and result["rank1"] == 1.0 and result["mAP"] == 1.0
    without_cameras = evaluate_reid(np.array([feats[p] for p in qp]), gf, qp, gp, qc, gc, camera_filter=False)
    assert {k: without_cameras[k] for k in ("mAP", "cmc", "mINP")} == {k: result[k] for k in ("mAP", "cmc", "mINP")}


def test_missing_files_are_named_with_the_source(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"expected 'img'.*mmlab.ie.cuhk.edu.hk"):
        build_dataset("inshop", tmp_path)
    write_tree(tmp_path)
    (tmp_path / "Eval" / "list_eval_partition.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"partition list at .*Eval/list_eval_partition.txt.*DeepFashion"):
        build_dataset("inshop", tmp_path)
    write_tree(tmp_path)
    (tmp_path / "Img" / ROWS[-1][0]).unlink()
    with pytest.raises(FileNotFoundError, match=r"1 of 3 images listed in .*list_eval_partition.txt.*03_2_side"):
        build_dataset("inshop", tmp_path)


@pytest.mark.parametrize("rows, declared, message", [
    (ROWS + [("img/x/id_00000003/1.jpg", "id_00000003", "val")], None, r"list_eval_partition.txt:11: expected"),
    (ROWS[:-1] + [(ROWS[-1][0], "00000011", "gallery")], None, r"txt:10: expected an item id like 'id_00000002'"),
    (ROWS[:-1] + [(ROWS[-1][0], "id_00000000", "gallery")], None, r"number >= 1\), got 'id_00000000'"),
    (ROWS, 9, "announces 9 images but 8 are listed"),
    ([r for r in ROWS if r[2] != "query"], None, "query split is empty"),
])
def test_malformed_lists_are_refused(tmp_path, rows, declared, message):
    write_tree(tmp_path, rows=rows, declared=declared)
    with pytest.raises(ValueError, match=message):
        build_dataset("inshop", tmp_path)


@pytest.mark.parametrize("entry, message", [("../outside.jpg", "climbs out with '..'"),
                                            ("/etc/passwd", "is an absolute path")])
def test_list_entries_outside_the_dataset_are_refused(tmp_path, entry, message):
    """An entry of list_eval_partition.txt that leaves the dataset folder is refused naming file:line (issue 12)."""
    root = write_tree(tmp_path / "inshop")
    rows = ROWS[:-1] + [(entry, ROWS[-1][1], "gallery")]
    lines = [str(len(rows)), "image_name item_id evaluation_status"] + [f"{p} {i} {s}" for p, i, s in rows]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    Image.new("RGB", (16, 24)).save(tmp_path / "inshop" / "outside.jpg")
    with pytest.raises(ValueError, match=rf"list_eval_partition.txt:10: entry .* {message}"):
        build_dataset("inshop", root)
