"""Bad evaluation input (issue 12): every case is refused in one line, and features without cameras are
evaluated without the same-camera rule only when asked (``camera_filter=False`` / ``--no-camera-filter``)."""

import importlib.util
import json
import pickle
import re
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

from reid_robust.evaluation import evaluate_reid, evaluate_reid_distances, evaluate_retrieval
from reid_robust.evaluation.report import FeatureSet, load_features

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("eval_tool_faults", REPO / "tools" / "eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_without_camera_rule(qf, gf, q_pids, g_pids, max_rank=10):
    """Plain loop: cosine distances, stable argsort, identity -1 deleted, every same-identity item a match."""
    qf = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gf = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    aps, inps, cmcs = [], [], []
    for i in range(len(qf)):
        order = np.argsort(-(gf @ qf[i]), kind="stable")
        pids = g_pids[order][g_pids[order] != -1]
        match = (pids == q_pids[i]) & (q_pids[i] > 0)
        if not match.any():
            continue
        ranks = np.flatnonzero(match) + 1
        aps.append(np.mean(np.arange(1, len(ranks) + 1) / ranks))
        inps.append(len(ranks) / ranks[-1])
        cmcs.append((np.arange(1, max_rank + 1) >= ranks[0]).astype(float))
    cmc = np.mean(cmcs, axis=0)
    return {"mAP": np.mean(aps), "mINP": np.mean(inps), "rank1": cmc[0], "rank5": cmc[4], "cmc": cmc,
            "num_valid_queries": len(aps)}


def camera_data(seed=0):
    """Clustered features where cameras matter: queries share a camera with half their gallery matches."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(6, 8))
    g_pids = np.concatenate([np.repeat(np.arange(1, 7), 4), [0, 0, -1, 9]])
    q_pids = np.arange(1, 8)  # identity 7 is absent from the gallery: skipped either way
    gf = centres[np.clip(g_pids - 1, 0, 5)] + 0.9 * rng.normal(size=(len(g_pids), 8))
    qf = centres[np.clip(q_pids - 1, 0, 5)] + 0.9 * rng.normal(size=(len(q_pids), 8))
    g_cams = np.tile([0, 0, 1, 2], 8)[: len(g_pids)]
    q_cams = np.zeros(len(q_pids), dtype=np.int64)
    return qf.astype(np.float32), gf.astype(np.float32), q_pids, g_pids, q_cams, g_cams


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _assert_metrics(result, expected):
    for key in ("mAP", "mINP", "rank1", "rank5"):
        assert result[key] == pytest.approx(expected[key], abs=1e-6), key
    np.testing.assert_allclose(result["cmc"], expected["cmc"], atol=1e-6)
    assert result["num_valid_queries"] == expected["num_valid_queries"]


# ------------------------------------------------------------------ cameras


def test_missing_cameras_are_refused_unless_the_camera_rule_is_turned_off():
    qf, gf, q_pids, g_pids, q_cams, g_cams = camera_data()
    with pytest.raises(ValueError, match=r"^query_camids is None: the Market-1501 protocol drops same-camera "
                                         r"matches; pass camera_filter=False"):
        evaluate_reid(qf, gf, q_pids, g_pids)
    with pytest.raises(ValueError, match="^gallery_camids is None"):
        evaluate_reid(qf, gf, q_pids, g_pids, q_cams, None)
    with pytest.raises(ValueError, match="camera_filter must be True or False"):
        evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, camera_filter="no")


def test_without_the_camera_rule_metrics_equal_a_plain_loop_reference():
    qf, gf, q_pids, g_pids, q_cams, g_cams = camera_data()
    expected = reference_without_camera_rule(qf, gf, q_pids, g_pids)
    result = _quiet(evaluate_reid, qf, gf, q_pids, g_pids, camera_filter=False, max_rank=10)
    _assert_metrics(result, expected)
    # given cameras are ignored without the rule; the distance entry and the block size agree
    _assert_metrics(_quiet(evaluate_reid, qf, gf, q_pids, g_pids, q_cams, g_cams, camera_filter=False,
                           max_rank=10, block_size=2), expected)
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    _assert_metrics(_quiet(evaluate_reid_distances, 1 - qn @ gn.T, q_pids, g_pids, camera_filter=False,
                           max_rank=10), expected)
    # the camera rule changes the numbers on this data (the old reader's camera 0 on both sides dropped
    # every gallery match as same-camera junk)
    with_rule = _quiet(evaluate_reid, qf, gf, q_pids, g_pids, q_cams, g_cams, max_rank=10)
    assert with_rule["mAP"] != pytest.approx(expected["mAP"], abs=1e-3)


def test_feature_files_without_camids_give_the_reference_metrics(tool, tmp_path, capsys):
    qf, gf, q_pids, g_pids, _, _ = camera_data(1)
    np.savez(tmp_path / "q.npz", feats=qf, pids=q_pids)
    np.savez(tmp_path / "g.npz", feats=gf, pids=g_pids)
    assert load_features(tmp_path / "q.npz").camids is None and FeatureSet(qf, q_pids).camids is None
    out = tmp_path / "m.json"
    argv = ["--query", str(tmp_path / "q.npz"), "--gallery", str(tmp_path / "g.npz"), "--max-rank", "10"]
    assert tool.main(argv + ["--no-camera-filter", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())
    _assert_metrics(saved, reference_without_camera_rule(qf, gf, q_pids, g_pids))
    assert saved["camera_filter"] is False
    capsys.readouterr()
    assert tool.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: query features file {str(tmp_path / 'q.npz')!r} has no camids: the Market-1501 "
                   "protocol drops same-camera "
                   "matches; pass --no-camera-filter (camera_filter=False) to evaluate without that rule"]


def test_no_camera_filter_is_for_the_market_protocol_only(tool, tmp_path, capsys):
    np.savez(tmp_path / "test.npz", feats=np.eye(4) + 0.1, pids=[0, 0, 1, 1])
    assert tool.main(["--query", str(tmp_path / "test.npz"), "--protocol", "cub", "--no-camera-filter"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == ["error: --no-camera-filter applies to protocol market only"]


# ------------------------------------------------------------------ feature values


def _bad_rows(kind, rows=24, dim=6):
    x = np.random.default_rng(0).normal(size=(rows, dim))
    if kind == "nan":
        x[17, 2] = np.nan
        x[20, 0] = np.nan
    elif kind == "inf":
        x[17, 0] = -np.inf
    elif kind == "zero":
        x[17] = 0.0
    elif kind == "tiny":  # float32 subnormals: no float32 norm to divide by
        x[17] = 1e-40
    elif kind == "large":  # finite in float32, but its squared norm overflows float32
        x[17] = 1e20
    elif kind == "float64_only":  # overflows the float32 cast
        x[17, 1] = 1e300
    return x


@pytest.mark.parametrize("kind, message", [
    ("nan", r"row 17 is not finite \(NaN or infinite; 2 such row"),
    ("inf", "row 17 is not finite"),
    ("zero", "row 17 is all zeros: the cosine metric cannot normalise it"),
    ("tiny", "row 17 has norm 2.45e-40, too small: the cosine metric cannot normalise it"),
    ("large", r"row 17 is too large to score in float32 \(norm 2.45e\+20"),
    ("float64_only", "row 17 is too large to score in float32"),
])
def test_bad_feature_rows_are_refused_with_the_first_bad_row(kind, message):
    bad, good = _bad_rows(kind), _bad_rows("none")
    pids = np.repeat(np.arange(1, 13), 2)
    cams = np.arange(24) % 2
    with pytest.raises(ValueError, match="^query_feats " + message):
        evaluate_reid(bad, good, pids, pids, cams, 1 - cams)
    with pytest.raises(ValueError, match="^gallery_feats " + message):
        evaluate_reid(good, bad, pids, pids, cams, 1 - cams)
    with pytest.raises(ValueError, match="^feats " + message):
        evaluate_retrieval(bad, pids, compute_nmi=False)


def test_zero_rows_are_fine_under_the_euclidean_metric_and_large_rows_are_not():
    pids = np.repeat(np.arange(1, 13), 2)
    zero = _bad_rows("zero")
    assert 0 <= evaluate_retrieval(zero, pids, metric="euclidean", compute_nmi=False)["recall@1"] <= 1
    with pytest.raises(ValueError, match="^feats row 17 is too large"):
        evaluate_retrieval(_bad_rows("large"), pids, metric="euclidean", compute_nmi=False)


def test_small_but_normal_rows_are_normalised_exactly_under_cosine():
    """Squares of 1e-30 underflow in float32 (the old normalisation divided such a row by 1e-12, so it
    scored about 0 against everything); norms taken in float64 rank it like its unscaled copy."""
    x = _bad_rows("none")
    pids = np.repeat(np.arange(1, 13), 2)
    scaled = x.copy()
    scaled[::3] *= 1e-31
    a = evaluate_retrieval(x, pids, compute_nmi=False, per_query=True)
    b = evaluate_retrieval(scaled, pids, compute_nmi=False, per_query=True)
    np.testing.assert_array_equal(a["per_query"]["first_rank"], b["per_query"]["first_rank"])
    assert a["map_at_r"] == pytest.approx(b["map_at_r"], abs=1e-9)


# ------------------------------------------------------------------ integer options


@pytest.mark.parametrize("ks, message", [
    ((1.5,), "each of ks must be a positive integer, got 1.5"),
    ((1, True), "each of ks must be a positive integer, got True"),
    ((0,), "got 0"),
    ((), "at least one cutoff"),
    (4, "ks must be a sequence of positive integers, got 4"),
    ("14", "ks must be a sequence"),
])
def test_ks_accept_only_positive_integers(ks, message):
    x = np.eye(4) + 0.1
    with pytest.raises(ValueError, match=message):
        evaluate_retrieval(x, [0, 0, 1, 1], ks=ks, compute_nmi=False)


def test_integer_options_refuse_floats_and_bools():
    x, labels = np.eye(4) + 0.1, [0, 0, 1, 1]
    assert set(evaluate_retrieval(x, labels, ks=(np.int64(2), 3), compute_nmi=False)) >= {"recall@2", "recall@3"}
    qf, gf, q_pids, g_pids, q_cams, g_cams = camera_data()
    for options, message in (({"max_rank": 1.5}, "max_rank must be a positive integer, got 1.5"),
                             ({"max_rank": True}, "max_rank must be a positive integer, got True"),
                             ({"block_size": 0.5}, "block_size must be a positive integer")):
        with pytest.raises(ValueError, match=message):
            evaluate_reid(qf, gf, q_pids, g_pids, q_cams, g_cams, **options)
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        evaluate_retrieval(x, labels, block_size=2.0, compute_nmi=False)


# ------------------------------------------------------------------ feature files


def _write_case(case: str, directory: Path) -> Path:
    """One broken feature file; returns its path."""
    rng = np.random.default_rng(0)
    feats, pids = rng.normal(size=(5, 4)), np.arange(1, 6)
    path = directory / f"{case}.npz"
    if case == "empty":
        path.write_bytes(b"")
    elif case in ("truncated", "corrupt"):
        np.savez(path, feats=feats, pids=pids, camids=pids)
        data = bytearray(path.read_bytes())
        if case == "truncated":
            data = data[: len(data) // 2]
        else:
            start = data.find(b"NUMPY") + 130
            data[start:start + 8] = b"\x00" * 8
        path.write_bytes(bytes(data))
    elif case == "npy":
        path = directory / "feats.npy"
        np.save(path, feats)
    elif case == "pickle":
        path.write_bytes(pickle.dumps({"feats": feats}))
    elif case == "object":
        np.savez(path, feats=feats.astype(object), pids=pids)
    elif case == "zero_d":
        np.savez(path, feats=np.float32(3.0), pids=pids[:1])
    elif case == "one_d":
        np.savez(path, feats=feats[:, 0], pids=pids)
    elif case == "lengths":
        np.savez(path, feats=feats, pids=pids, camids=pids[:4])
    elif case == "paths":
        np.savez(path, feats=feats, pids=pids, paths=np.array(["a.jpg"] * 4))
    elif case == "no_pids":
        np.savez(path, feats=feats, camids=pids)
    elif case == "pids_2d":
        np.savez(path, feats=feats, pids=pids[:, None])
    elif case == "short_member":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("feats.npy", b"\x93NUMPY\x01\x00v\x00{'descr': '<f8'")
            archive.writestr("pids.npy", b"")
    return path


FILE_CASES = [
    ("empty", r"is empty \(0 bytes\), not an .npz archive"),
    ("truncated", "is a truncated or corrupt .npz archive"),
    ("corrupt", r"array 'feats' cannot be read \(Bad CRC-32"),
    ("npy", "holds a single .npy array, not an .npz archive"),
    ("pickle", r"is not an .npz archive \(no zip signature"),
    ("object", r"array 'feats' cannot be read \(Object arrays cannot be loaded"),
    ("zero_d", r"feats must be a 2-D array \[N, D\], got shape \(\)"),
    ("one_d", r"feats must be a 2-D array \[N, D\], got shape \(5,\)"),
    ("lengths", r"arrays have different lengths \{'feats': 5, 'pids': 5, 'camids': 4\}"),
    ("paths", "arrays have different lengths"),
    ("pids_2d", r"pids must be 1-D \[N\], got shape \(5, 1\)"),
    ("short_member", "array 'feats' cannot be read"),
]


@pytest.mark.parametrize("case, message", FILE_CASES)
def test_broken_feature_files_are_one_value_error_naming_the_file(case, message, tmp_path):
    path = _write_case(case, tmp_path)
    with pytest.raises(ValueError, match=message) as caught:
        load_features(path, "gallery features")
    text = str(caught.value)
    assert text.startswith(f"gallery features file {str(path)!r}") and "\n" not in text


@pytest.mark.parametrize("case, message", FILE_CASES)
def test_tool_reports_broken_feature_files_in_one_line(tool, case, message, tmp_path, capsys):
    good = tmp_path / "good.npz"
    np.savez(good, feats=np.random.default_rng(1).normal(size=(5, 4)), pids=np.arange(1, 6))
    path = _write_case(case, tmp_path)
    assert tool.main(["--query", str(good), "--gallery", str(path), "--no-camera-filter"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: gallery features file {str(path)!r}"), err
    assert re.search(message, err[0]), err


def test_a_file_without_pids_loads_but_is_refused_for_evaluation(tool, tmp_path, capsys):
    """pids are optional in a feature file (reid-embed of plain images); evaluating it is one line."""
    path = _write_case("no_pids", tmp_path)
    assert load_features(path).pids is None
    good = tmp_path / "good.npz"
    np.savez(good, feats=np.random.default_rng(1).normal(size=(5, 4)), pids=np.arange(1, 6))
    assert tool.main(["--query", str(good), "--gallery", str(path), "--no-camera-filter"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: gallery features file {str(path)!r} has no pids"), err


def test_a_pickle_given_as_features_is_never_unpickled(tmp_path):
    marker = tmp_path / "marker"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / "evil.npz"
    path.write_bytes(pickle.dumps(Payload()))
    with pytest.raises(ValueError, match="not an .npz archive"):
        load_features(path)
    assert not marker.exists()


def test_tool_refuses_bad_rows_in_a_file_naming_it(tool, tmp_path, capsys):
    good = tmp_path / "good.npz"
    np.savez(good, feats=_bad_rows("none"), pids=np.repeat(np.arange(1, 13), 2))
    for kind, message in (("zero", "feats row 17 is all zeros"), ("large", "feats row 17 is too large")):
        bad = tmp_path / f"{kind}.npz"
        np.savez(bad, feats=_bad_rows(kind), pids=np.repeat(np.arange(1, 13), 2))
        assert tool.main(["--query", str(bad), "--gallery", str(good), "--no-camera-filter"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err == [f"error: query features file {str(bad)!r}: {message}" + err[0].split(message)[1]], err


# ------------------------------------------------------------------ outputs


def test_output_paths_that_cannot_be_written_are_one_line_before_any_work(tool, tmp_path, capsys):
    qf, gf, q_pids, g_pids, q_cams, g_cams = camera_data()
    np.savez(tmp_path / "q.npz", feats=qf, pids=q_pids, camids=q_cams)
    np.savez(tmp_path / "g.npz", feats=gf, pids=g_pids, camids=g_cams)
    argv = ["--query", str(tmp_path / "q.npz"), "--gallery", str(tmp_path / "g.npz")]
    folder, a_file = tmp_path / "out", tmp_path / "q.npz"
    folder.mkdir()
    cases = [(["--json", str(folder)], f"--json {str(folder)!r} is an existing folder; give a file path"),
             (["--json", str(a_file / "m.json")], f"--json {str(a_file / 'm.json')!r} lies under {str(a_file)!r}, "
                                                   "which is a file"),
             (["--visualize", "1", "--visualize-dir", str(a_file)],
              f"--visualize-dir {str(a_file)!r} is an existing file, not a folder")]
    for extra, message in cases:
        assert tool.main(argv + extra) == 2
        captured = capsys.readouterr()
        assert captured.err.strip().splitlines() == [f"error: {message}"] and "mAP" not in captured.out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["g.npz", "out", "q.npz"] and not any(folder.iterdir())


def test_command_line_fault_has_no_traceback(tmp_path):
    (tmp_path / "g.npz").write_bytes(b"")
    np.savez(tmp_path / "q.npz", feats=np.eye(3) + 0.1, pids=[1, 2, 3])
    for gallery in ("g.npz", "q.npz"):
        proc = subprocess.run([sys.executable, str(REPO / "tools" / "eval.py"), "--query", "q.npz", "--gallery",
                               gallery], capture_output=True, text=True, cwd=tmp_path, check=False)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1 and proc.stderr.startswith("error: ")
