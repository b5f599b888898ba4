"""Identity-label noise: exact per-identity counts, every mode, determinism, manifests and published lists."""
import csv

import numpy as np
import pytest
import torch

from reid_robust.data import ImageRecord
from reid_robust.data.noise import (
    confusable_identities,
    inject_identity_noise,
    load_noisy_label_list,
    noise_summary,
    write_noise_manifest,
)

SIZES = [4, 5, 6, 7, 3, 8]
LABELS = np.repeat(np.arange(len(SIZES)), SIZES)
CONFUSABLE = np.array([1, 0, 3, 2, 5, 4])
# round(rate * n_c) with numpy's half-to-even rounding, by hand
EXPECTED_WRONG = {0.4: [2, 2, 2, 3, 1, 3], 0.5: [2, 2, 3, 4, 2, 4], 0.2: [1, 1, 1, 1, 1, 2]}


def wrong_per_identity(clean, is_noisy):
    return [int(is_noisy[clean == c].sum()) for c in np.unique(clean)]


@pytest.mark.parametrize("mode", ["symmetric", "pair", "pattern"])
@pytest.mark.parametrize("rate", [0.2, 0.4, 0.5])
def test_closed_set_exact_count_per_identity(mode, rate):
    noisy, is_noisy = inject_identity_noise(LABELS, rate, mode, seed=3, confusable=CONFUSABLE)
    assert noisy.dtype == np.int64 and is_noisy.dtype == bool and noisy.shape == LABELS.shape
    assert wrong_per_identity(LABELS, is_noisy) == EXPECTED_WRONG[rate]
    assert np.array_equal(is_noisy, noisy != LABELS)  # a flagged label always differs
    assert set(noisy.tolist()) <= set(LABELS.tolist())
    assert noise_summary(LABELS, noisy)["rate"] == pytest.approx(sum(EXPECTED_WRONG[rate]) / len(LABELS))


@pytest.mark.parametrize("mode", ["symmetric", "pair", "pattern", "open_set"])
def test_deterministic_from_seed(mode):
    a = inject_identity_noise(LABELS, 0.5, mode, seed=11, confusable=CONFUSABLE)
    b = inject_identity_noise(LABELS, 0.5, mode, seed=11, confusable=CONFUSABLE)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    others = [inject_identity_noise(LABELS, 0.5, mode, seed=s, confusable=CONFUSABLE)[0] for s in range(12, 16)]
    assert any(not np.array_equal(a[0], o) for o in others)


def test_pattern_uses_confusable_identity():
    noisy, is_noisy = inject_identity_noise(LABELS, 0.5, "pattern", seed=0, confusable=CONFUSABLE)
    assert np.array_equal(noisy[is_noisy], CONFUSABLE[LABELS[is_noisy]])


def test_pair_sends_each_identity_to_one_other_identity():
    noisy, is_noisy = inject_identity_noise(LABELS, 0.5, "pair", seed=5)
    targets = {}
    for c in np.unique(LABELS):
        wrong = set(noisy[(LABELS == c) & is_noisy].tolist())
        assert len(wrong) == 1 and c not in wrong
        targets[c] = wrong.pop()
    assert sorted(targets.values()) == sorted(targets)  # a permutation of the identities (cyclic pairing)


def test_symmetric_targets_spread_over_other_identities():
    labels = np.repeat(np.arange(10), 100)
    noisy, is_noisy = inject_identity_noise(labels, 0.5, "symmetric", seed=0)
    assert int(is_noisy.sum()) == 500
    counts = np.bincount(noisy[is_noisy], minlength=10)
    assert counts.min() >= 25 and counts.max() <= 80  # expected 50 per identity
    for c in range(10):  # each identity's wrong labels reach several others, never itself
        wrong = noisy[(labels == c) & is_noisy]
        assert c not in wrong and len(set(wrong.tolist())) >= 5


def test_open_set_hides_identities():
    labels = np.repeat(np.arange(10), 6)
    noisy, is_noisy = inject_identity_noise(labels, 0.3, "open_set", seed=2)
    hidden = sorted(set(labels.tolist()) - set(noisy.tolist()))
    assert len(hidden) == 3  # round(0.3 * 10)
    assert np.array_equal(is_noisy, np.isin(labels, hidden))
    assert np.array_equal(noisy[~is_noisy], labels[~is_noisy])
    summary = noise_summary(labels, noisy)
    assert summary["rate"] == pytest.approx(0.3) and summary["num_classes_in_noisy_labels"] == 7
    with pytest.raises(ValueError, match="hide all 10"):
        inject_identity_noise(labels, 1.0, "open_set")


def test_non_contiguous_labels_and_extreme_rates():
    labels = np.array([3, 3, 7, 7, 9, 9, 9])
    noisy, is_noisy = inject_identity_noise(labels, 1.0, "symmetric", seed=0)
    assert is_noisy.all() and set(noisy.tolist()) <= {3, 7, 9}
    noisy, is_noisy = inject_identity_noise(labels, 0.0, "pair", seed=0)
    assert np.array_equal(noisy, labels) and not is_noisy.any()


def test_errors():
    with pytest.raises(ValueError, match="needs `confusable`"):
        inject_identity_noise(LABELS, 0.2, "pattern")
    with pytest.raises(ValueError, match="unknown noise mode 'random'.*open_set"):
        inject_identity_noise(LABELS, 0.2, "random")
    with pytest.raises(ValueError, match=r"rate must be a number in \[0, 1\], got 1.5"):
        inject_identity_noise(LABELS, 1.5)
    with pytest.raises(ValueError, match="got '0.2'"):
        inject_identity_noise(LABELS, "0.2")
    with pytest.raises(ValueError, match="maps identity 2 to itself"):
        inject_identity_noise(LABELS, 0.2, "pattern", confusable=np.array([1, 0, 2, 2, 5, 4]))
    with pytest.raises(ValueError, match="integer ids"):
        inject_identity_noise(LABELS.astype(float), 0.2)
    with pytest.raises(ValueError, match="at least 2 identities"):
        inject_identity_noise([4, 4, 4], 0.5)


def test_confusable_identities_hand_example_and_reference():
    feats = torch.tensor([[1.0, 0.0], [2.0, 0.1], [0.9, 0.2], [1.0, 0.3], [0.0, 1.0], [0.1, 3.0]])
    labels = np.array([0, 0, 1, 1, 2, 2])
    assert confusable_identities(feats, labels).tolist() == [1, 0, 1]
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(40, 5))
    labels = rng.integers(0, 6, size=40)
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    centres = [unit[labels == c].mean(0) for c in range(6)]
    expected = []
    for c in range(6):  # plain loop reference
        sims = [-np.inf if d == c else centres[c] @ centres[d] / np.linalg.norm(centres[c]) / np.linalg.norm(centres[d])
                for d in range(6)]
        expected.append(int(np.argmax(sims)))
    assert confusable_identities(feats, labels).tolist() == expected
    assert confusable_identities(feats[:4], np.array([0, 0, 3, 3])).tolist() == [3, -1, -1, 0]


@pytest.fixture
def records(tmp_path):
    out = []
    for folder, pid in [("a", 0), ("a", 1), ("b", 1), ("b", 2)]:
        out.append(ImageRecord(str(tmp_path / "train" / folder / f"img{pid}.jpg"), pid, 0))
    return out


def test_manifest_columns_and_round_trip(tmp_path, records):
    clean = np.array([r.pid for r in records])
    noisy = np.array([0, 2, 1, 0])
    path = write_noise_manifest(tmp_path / "run" / "noise_manifest.csv", records, clean, noisy, noisy != clean)
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["path", "clean_label", "noisy_label", "is_noisy"]
    assert rows[2] == [records[1].path, "1", "2", "1"] and rows[3][3] == "0"
    assert load_noisy_label_list(path, records).tolist() == [0, 2, 1, 0]


def test_manifest_write_is_atomic_on_a_full_disk(tmp_path, records, monkeypatch):
    """A full disk keeps the previous manifest and leaves no temporary file (it used a fixed-name .tmp)."""
    import errno
    import os

    clean = np.array([r.pid for r in records])
    path = write_noise_manifest(tmp_path / "noise_manifest.csv", records, clean, clean, clean != clean)
    before = path.read_bytes()

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(OSError, match=f"no space left on device while writing {path}"):
        write_noise_manifest(path, records, clean, np.array([0, 2, 1, 0]), np.array([0, 2, 1, 0]) != clean)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["noise_manifest.csv"]


def test_text_list_with_relative_paths(tmp_path, records):
    listing = tmp_path / "noisy.txt"
    listing.write_text("# published list\ntrain/a/img0.jpg 2\na/img1.jpg 0\nb/img1.jpg,1\n\nimg2.jpg 0\n")
    assert load_noisy_label_list(listing, records).tolist() == [2, 0, 1, 0]


@pytest.mark.parametrize("text, message", [
    ("a/img0.jpg 0\na/img1.jpg 0\nb/img1.jpg 0\nc/img2.jpg 0\n", r"noisy.txt:4: 'c/img2.jpg' matches no training image"),
    ("a/img0.jpg 0\nimg1.jpg 0\n", "ambiguous"),
    ("a/img0.jpg 0\na/img1.jpg 0\nb/img1.jpg 0\n", "no label for 1 of 4 training images, e.g. .*img2.jpg"),
    ("a/img0.jpg 0\na/img0.jpg 1\n", "listed twice"),
    ("a/img0.jpg 7\n", "label 7 outside the training labels 0..2"),
    ("a/img0.jpg x\n", "label 'x' is not an integer"),
])
def test_label_list_errors(tmp_path, records, text, message):
    listing = tmp_path / "noisy.txt"
    listing.write_text(text)
    with pytest.raises(ValueError, match=message):
        load_noisy_label_list(listing, records)
    with pytest.raises(FileNotFoundError, match="not found"):
        load_noisy_label_list(tmp_path / "absent.csv", records)


def test_confusable_identities_blocked_rows_match_dense():
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(1100), 2)  # more classes than one 1024-row block
    feats = rng.normal(size=(len(labels), 4))
    unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)
    centres = unit.reshape(1100, 2, 4).mean(1)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    dense = centres @ centres.T
    np.fill_diagonal(dense, -np.inf)
    assert np.array_equal(confusable_identities(feats, labels), dense.argmax(1))


def test_published_list_is_logged_by_file_and_realised_rate(tmp_path, records, caplog, monkeypatch):
    import logging

    from reid_robust.config import NoiseConfig
    from reid_robust.engine.noise import apply_label_noise

    listing = tmp_path / "noisy.txt"
    listing.write_text("a/img0.jpg 2\na/img1.jpg 1\nb/img1.jpg 1\nimg2.jpg 2\n")
    noise = NoiseConfig(list=str(listing))
    monkeypatch.setattr(logging.getLogger("reid_robust"), "propagate", True)  # a training run may have turned it off
    with caplog.at_level(logging.INFO, logger="reid_robust"):
        labels = apply_label_noise(noise, records, np.array([r.pid for r in records]), None)
    assert labels.tolist() == [2, 1, 1, 2]
    message = next(m for m in caplog.messages if m.startswith("label noise:"))
    assert f"list={listing}" in message and "realised rate=0.2500 (1 of 4" in message
    assert "mode=" not in message and "requested" not in message
