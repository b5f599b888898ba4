"""Dataset registry: names, clear errors, synthetic datasets through the real loaders."""
import pytest

from reid_robust.data import build_dataset, dataset_names, register_dataset, summarize

EXPECTED = {"market1501", "cub200", "msmt17", "cars196", "sop", "cuhk03_np", "veri776", "inshop", "dukemtmc", "folder",
            "synthetic_market", "synthetic_cub"}


def test_all_documented_names_registered():
    assert set(dataset_names()) == EXPECTED


def test_unknown_name_lists_valid_names(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'market'.*market1501.*synthetic_cub"):
        build_dataset("market", tmp_path)


def test_unknown_option_is_rejected(tmp_path):
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['crop_box'\].*crop_bbox"):
        build_dataset("cub200", tmp_path, crop_box=True)


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("market1501")(lambda root: None)


def test_synthetic_market_goes_through_market_loader(tmp_path):
    splits = build_dataset("synthetic_market", tmp_path / "syn", num_identities=4, height=32, width=16,
                           num_distractors=2, num_junk=1)
    assert splits.protocol == "market"
    assert splits.num_train_classes == 2 and {r.pid for r in splits.train} == {0, 1}
    gallery_pids = {r.pid for r in splits.gallery}
    assert -1 in gallery_pids and 0 in gallery_pids
    assert "synthetic_market" in summarize(splits)


def test_synthetic_cub_goes_through_cub_loader(tmp_path):
    splits = build_dataset("synthetic_cub", tmp_path / "syn", num_identities=4, height=32, width=32,
                           images_per_class=(2, 3), crop_bbox=True)
    assert splits.protocol == "cub" and splits.query is splits.gallery
    assert splits.num_train_classes == 2 and {r.pid for r in splits.gallery} == {3, 4}
    assert all(r.bbox is not None and len(r.bbox) == 4 for r in splits.train)


def test_concurrent_synthetic_generation_is_serialised(tmp_path):
    """Two processes asking for the same synthetic tree at once: one writes it, the other reuses it."""
    import subprocess
    import sys

    code = ("import sys; from reid_robust.data import build_dataset; "
            "s = build_dataset('synthetic_market', sys.argv[1], num_identities=6, height=32, width=16); "
            "print(len(s.train), len(s.query), len(s.gallery))")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "syn")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1500:] for o in outs]
    assert outs[0][0] == outs[1][0]
