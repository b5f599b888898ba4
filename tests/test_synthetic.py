"""Synthetic Market-1501 / CUB-200-2011 generator: determinism, official layouts, protocol invariants."""
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reid_robust.data import build_dataset
from reid_robust.data.synthetic import MARKER_NAME, PALETTE, _FrameClock, _identity_looks, generate_synthetic

MARKET_NAME = re.compile(r"^(-1|\d{4})_c([1-9])s([1-6])_(\d{6})_(\d{2})\.jpg$")
TINY = {"num_identities": 6, "num_cameras": 3, "height": 48, "width": 24, "num_distractors": 5, "num_junk": 3}
TINY_CUB = {"num_identities": 6, "height": 40, "width": 40, "images_per_class": (2, 4)}


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _market_files(root: Path, split: str) -> list[tuple[int, int, str]]:
    out = []
    for path in sorted((root / split).iterdir()):
        match = MARKET_NAME.match(path.name)
        assert match, f"{path.name} does not follow the Market-1501 naming"
        out.append((int(match.group(1)), int(match.group(2)), path.name))
    return out


@pytest.fixture(scope="module")
def market(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("market"), seed=3, **TINY)


@pytest.fixture(scope="module")
def cub(tmp_path_factory) -> Path:
    return generate_synthetic(tmp_path_factory.mktemp("cub"), layout="cub", seed=3, **TINY_CUB)


def test_same_seed_gives_identical_files_and_other_seed_differs(tmp_path, market):
    again = generate_synthetic(tmp_path / "again", seed=3, **TINY)
    assert _digest(again) == _digest(market)
    other = _digest(generate_synthetic(tmp_path / "other", seed=4, **TINY))
    assert other != _digest(market)


def test_market_tree_names_and_image_size(market):
    for split in ("bounding_box_train", "query", "bounding_box_test"):
        files = _market_files(market, split)
        assert files, f"{split} is empty"
        for _, cam, _name in files:
            assert 1 <= cam <= TINY["num_cameras"]
        with Image.open(market / split / files[0][2]) as img:
            assert img.size == (TINY["width"], TINY["height"]) and img.mode == "RGB"
    names = [n for s in ("bounding_box_train", "query", "bounding_box_test") for *_, n in _market_files(market, s)]
    assert len(names) == len(set(names)), "file names must be unique across splits"
    marker = json.loads((market / MARKER_NAME).read_text())
    assert marker["num_images"] == len(names)


def test_market_splits_follow_the_protocol(market):
    train = _market_files(market, "bounding_box_train")
    query = _market_files(market, "query")
    gallery = _market_files(market, "bounding_box_test")
    train_ids = {p for p, _, _ in train}
    test_ids = {p for p, _, _ in query}
    assert len(train_ids) == TINY["num_identities"] // 2 and len(test_ids) == TINY["num_identities"] // 2
    assert not train_ids & test_ids and not {0, -1} & (train_ids | test_ids)
    gallery_pids = Counter(p for p, _, _ in gallery)
    assert gallery_pids[0] == TINY["num_distractors"] and gallery_pids[-1] == TINY["num_junk"]
    assert set(gallery_pids) - {0, -1} == test_ids
    assert max(Counter((p, c) for p, c, _ in query).values()) == 1, "at most one query per (pid, camera)"
    gallery_pairs = {(p, c) for p, c, _ in gallery}
    for pid, cam, name in query:  # every query has a true match seen by another camera
        assert any(p == pid and c != cam for p, c in gallery_pairs), name
    for pid in train_ids:  # training identities are seen by at least two cameras
        assert len({c for p, c, _ in train if p == pid}) >= 2


def test_frame_clock_keeps_names_unique_and_frames_six_digits():
    clock = _FrameClock(np.random.default_rng(0), num_cameras=2)
    boxes = [box for _ in range(60_000) for box in clock.tracklet(1, 1)]
    assert len(set(boxes)) == len(boxes)
    assert max(frame for _, frame in boxes) <= 999_999 and boxes[-1][0] >= 2


def test_identities_share_colours_but_never_the_whole_look():
    looks = _identity_looks(np.random.default_rng(0), 100)
    assert len(set(looks)) == 100
    schemes = Counter((lk.upper, lk.lower, lk.secondary) for lk in looks)
    assert min(schemes.values()) >= 2, "every colour scheme is worn by at least two identities"
    upper = Counter(lk.upper for lk in looks)
    assert len(upper) <= len(PALETTE) and max(upper.values()) >= 5
    for scheme in schemes:  # identities with the same colours differ in shape/texture attributes
        group = [lk for lk in looks if (lk.upper, lk.lower, lk.secondary) == scheme]
        shapes = {(lk.texture, lk.long_sleeves, lk.lower_style, lk.bag, lk.hat, lk.logo) for lk in group}
        assert len(shapes) == len(group)


def test_existing_complete_tree_is_reused_and_changed_parameters_regenerate(tmp_path):
    root = generate_synthetic(tmp_path / "d", seed=1, **TINY)
    probe = next((root / "query").iterdir())
    stamp = probe.stat().st_mtime_ns
    generate_synthetic(root, seed=1, **TINY)
    assert probe.stat().st_mtime_ns == stamp, "a complete tree with the same parameters must be reused"
    before = _digest(root)
    generate_synthetic(root, seed=2, **TINY)
    assert json.loads((root / MARKER_NAME).read_text())["params"]["seed"] == 2
    assert _digest(root) != before
    fresh = _digest(generate_synthetic(tmp_path / "fresh", seed=2, **TINY))
    assert _digest(root) == fresh, "regenerating must leave no stale files behind"


def test_incomplete_tree_is_regenerated(tmp_path):
    root = generate_synthetic(tmp_path / "d", seed=1, **TINY)
    reference = _digest(root)
    next((root / "bounding_box_test").iterdir()).unlink()
    generate_synthetic(root, seed=1, **TINY)
    assert _digest(root) == reference


def test_refuses_to_overwrite_a_tree_without_marker(tmp_path):
    (tmp_path / "bounding_box_train").mkdir()
    (tmp_path / "bounding_box_train" / "0001_c1s1_000001_00.jpg").write_bytes(b"real data")
    with pytest.raises(FileExistsError, match="SYNTHETIC.json"):
        generate_synthetic(tmp_path, **TINY)
    assert (tmp_path / "bounding_box_train" / "0001_c1s1_000001_00.jpg").read_bytes() == b"real data"


@pytest.mark.parametrize("kwargs, message", [
    ({"layout": "duke"}, "layout"),
    ({"num_cameras": 1}, "num_cameras"),
    ({"num_identities": 1}, "num_identities"),
    ({"height": 8}, "height"),
    ({"train_fraction": 1.0}, "train_fraction"),
    ({"seed": -1}, "seed"),
    ({"layout": "cub", "images_per_class": (1, 3)}, "images_per_class"),
])
def test_bad_arguments_are_rejected_with_their_name(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_synthetic(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir()), "nothing is written for rejected arguments"


def _read(path: Path) -> dict[int, list[str]]:
    rows = [line.split() for line in path.read_text().splitlines()]
    return {int(r[0]): r[1:] for r in rows}


def test_cub_files_are_consistent(cub):
    images = _read(cub / "images.txt")
    labels = {i: int(v[0]) for i, v in _read(cub / "image_class_labels.txt").items()}
    classes = _read(cub / "classes.txt")
    split = {i: int(v[0]) for i, v in _read(cub / "train_test_split.txt").items()}
    boxes = {i: [float(x) for x in v] for i, v in _read(cub / "bounding_boxes.txt").items()}
    n = TINY_CUB["num_identities"]
    assert sorted(classes) == list(range(1, n + 1))
    assert list(images) == list(range(1, len(images) + 1))
    assert set(images) == set(labels) == set(split) == set(boxes)
    assert set(split.values()) == {0, 1}
    per_class = Counter(labels.values())
    lo, hi = TINY_CUB["images_per_class"]
    assert set(per_class) == set(range(1, n + 1)) and all(lo <= c <= hi for c in per_class.values())
    on_disk = {str(p.relative_to(cub / "images")) for p in (cub / "images").glob("*/*.jpg")}
    assert on_disk == {v[0] for v in images.values()}
    for image_id, (rel,) in images.items():
        folder = rel.split("/")[0]
        assert re.match(r"^\d{3}\.\w+$", folder) and int(folder[:3]) == labels[image_id]
        assert classes[labels[image_id]] == [folder]
        x, y, w, h = boxes[image_id]
        assert w > 0 and h > 0 and x >= 0 and y >= 0
        assert x + w <= TINY_CUB["width"] and y + h <= TINY_CUB["height"]


def test_cub_same_seed_is_identical(tmp_path, cub):
    assert _digest(generate_synthetic(tmp_path, layout="cub", seed=3, **TINY_CUB)) == _digest(cub)


def test_market_tree_loads_through_the_market1501_loader(market):
    splits = build_dataset("market1501", market)
    counts = {s: len(list((market / s).iterdir())) for s in ("bounding_box_train", "query", "bounding_box_test")}
    assert len(splits.train) == counts["bounding_box_train"]
    assert len(splits.query) == counts["query"] and len(splits.gallery) == counts["bounding_box_test"]
    assert splits.num_train_classes == TINY["num_identities"] // 2
    assert {r.camid for r in splits.gallery} <= set(range(TINY["num_cameras"]))


def test_cub_tree_loads_through_the_cub200_loader(cub):
    splits = build_dataset("cub200", cub, crop_bbox=True)
    n = TINY_CUB["num_identities"]
    assert splits.num_train_classes == n // 2
    assert {r.pid for r in splits.query} == set(range(n // 2 + 1, n + 1))
    assert all(Path(r.path).is_file() for r in splits.train + splits.query)
