"""Label audit: neighbourhood and loss-weight scores, detection metrics, invariance to file names, the tool."""
from __future__ import annotations

import csv
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from reid_robust.cleaning.scoring import (
    audit_metrics,
    combine,
    neighbourhood_scores,
    reliability_weights,
    suspicion_scores,
)
from reid_robust.engine.builders import LossTerm
from reid_robust.engine.inference import extract_outputs
from reid_robust.losses import build_loss

REPO = Path(__file__).resolve().parents[1]


def _planted(num_classes=6, per_class=20, dim=8, rate=0.2, seed=0):
    """Separated Gaussian clusters (centres 4 e_c: orthogonal, equal norms); `rate` of each class relabelled to
    another class (features unchanged)."""
    rng = np.random.default_rng(seed)
    centres = 4.0 * np.eye(num_classes, dim)
    clean = np.repeat(np.arange(num_classes), per_class)
    feats = centres[clean] + rng.normal(size=(len(clean), dim))
    noisy = clean.copy()
    for c in range(num_classes):
        members = np.flatnonzero(clean == c)
        chosen = rng.choice(members, int(rate * per_class), replace=False)
        noisy[chosen] = (c + rng.integers(1, num_classes, size=len(chosen))) % num_classes
    return feats.astype(np.float32), clean, noisy, noisy != clean


def test_neighbourhood_scores_by_hand():
    # 1-D points on a line (as 2-D vectors with a constant second coordinate would change cosines, use angles)
    angles = np.array([0.0, 0.1, 0.2, 1.5, 1.6, 0.15])
    feats = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    labels = np.array([0, 0, 0, 1, 1, 1])                  # the last image sits among class 0
    s = neighbourhood_scores(feats, labels, k=2)
    # neighbours (cosine) of image 5 at 0.15: images 1 (0.1) and 2 (0.2), both labelled 0
    assert s["knn"][5] == 1.0 and s["knn"][0] == 0.5 and s["knn"][3] == 0.5
    # margin of image 5: cos to class-0 centre minus cos to the leave-one-out centre of class 1 (images 3, 4)
    unit0 = feats[:3].sum(0) / np.linalg.norm(feats[:3].sum(0))
    loo = feats[3] + feats[4]
    expected = feats[5] @ unit0 - feats[5] @ loo / np.linalg.norm(loo)
    assert s["margin"][5] == pytest.approx(expected)
    assert np.argmax(s["margin"]) == 5
    # blocking does not change anything
    small = neighbourhood_scores(feats, labels, k=2, block=2)
    assert np.allclose(small["margin"], s["margin"]) and np.array_equal(small["knn"], s["knn"])


def test_neighbourhood_scores_find_planted_noise():
    feats, _, noisy, is_noisy = _planted()
    s = neighbourhood_scores(feats, noisy, k=5)
    for name in ("knn", "margin"):
        assert audit_metrics(s[name], is_noisy)["auroc"] > 0.95
    assert audit_metrics(combine(s), is_noisy)["precision_at_num_noisy"] > 0.9


def test_singleton_class_and_bad_input():
    s = neighbourhood_scores(np.eye(3), np.array([0, 0, 1]), k=5)
    assert s["margin"][2] == pytest.approx(1.0)     # no own centre: cosine -1 to it; cosine 0 to class 0
    assert np.isfinite(s["margin"]).all() and np.isfinite(s["knn"]).all()
    with pytest.raises(ValueError, match="same N"):
        neighbourhood_scores(np.zeros((3, 2)), np.array([0, 1]))
    with pytest.raises(ValueError, match="NaN"):
        neighbourhood_scores(np.full((2, 2), np.nan), np.array([0, 1]))


def test_reliability_weights_from_osm_caa_attention():
    """A classifier that knows the true clusters gives low attention to the relabelled images."""
    torch.manual_seed(0)
    num_classes, per_class = 6, 12
    feats, clean, noisy, is_noisy = _planted(num_classes, per_class, dim=num_classes, rate=0.25)
    loss = build_loss("osm_caa", num_classes=num_classes, embedding_dim=num_classes)
    with torch.no_grad():                      # classifier = nearest cluster centre, sharp
        centres = np.stack([feats[clean == c].mean(0) for c in range(num_classes)])
        loss.classifier.weight.copy_(torch.as_tensor(centres) * 3)
    terms = [LossTerm("osm_caa", 1.0, "feat", loss)]
    outputs = {"feat": torch.as_tensor(feats), "bn_feat": torch.as_tensor(feats)}
    w = reliability_weights(outputs, noisy, terms, num_identities=4, num_instances=4, passes=4)
    assert w.shape == (len(noisy),) and np.isfinite(w).all()
    assert audit_metrics(1.0 - w, is_noisy)["auroc"] > 0.95
    # the same numbers every time (seeded batches)
    assert np.array_equal(w, reliability_weights(outputs, noisy, terms, 4, 4, passes=4))
    # no reliability term: the cross-entropy classifier's class-aware attention
    ce = build_loss("cross_entropy", num_classes=num_classes, embedding_dim=num_classes)
    with torch.no_grad():
        ce.classifier.weight.copy_(loss.classifier.weight)
    w_ce = reliability_weights(outputs, noisy, [LossTerm("cross_entropy", 1.0, "feat", ce)], 4, 4)
    assert audit_metrics(1.0 - w_ce, is_noisy)["auroc"] > 0.95
    assert reliability_weights(outputs, noisy, [LossTerm("triplet", 1.0, "feat", build_loss("triplet"))], 4, 4) is None


@pytest.mark.parametrize("name", ["dm", "imae", "proselflc"])
def test_reliability_of_example_weighting_losses_follows_the_classifier(name):
    """DM/IMAE weights are not monotone in p (a confident, correct example weighs as little as a wrong one):
    the audit ranks by the classifier's p_y, so a sharp classifier finds the relabelled images."""
    num_classes, per_class = 6, 12
    feats, clean, noisy, is_noisy = _planted(num_classes, per_class, dim=num_classes, rate=0.25)
    loss = build_loss(name, num_classes=num_classes, embedding_dim=num_classes)
    with torch.no_grad():
        centres = np.stack([feats[clean == c].mean(0) for c in range(num_classes)])
        loss.classifier.weight.copy_(torch.as_tensor(centres) * 3)
    outputs = {"feat": torch.as_tensor(feats)}
    w = reliability_weights(outputs, noisy, [LossTerm(name, 1.0, "feat", loss)], 4, 4)
    assert audit_metrics(1.0 - w, is_noisy)["auroc"] > 0.95


def test_reliability_of_prism_comes_from_its_memory_in_eval_mode():
    from reid_robust.data.samplers import PKSampler

    num_classes, per_class = 6, 12
    feats, _, noisy, is_noisy = _planted(num_classes, per_class, dim=num_classes, rate=0.25)
    loss = build_loss("prism", num_classes=num_classes, embedding_dim=num_classes, memory_size=256)
    x, y = torch.as_tensor(feats), torch.as_tensor(noisy)
    for positions in PKSampler(noisy, 4, 4, seed=0, num_batches=8):  # training fills the memory
        idx = torch.as_tensor(positions)
        loss(x[idx], y[idx])
    w = reliability_weights({"feat": x}, noisy, [LossTerm("prism", 1.0, "feat", loss)], 4, 4, passes=2)
    assert np.ptp(w) > 0  # eval mode still reports clean probabilities
    assert audit_metrics(1.0 - w, is_noisy)["auroc"] > 0.9


def test_audit_metrics_by_hand():
    m = audit_metrics(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0]))
    # top-2 = images 0 and 1: one of the two is wrong; positive-negative pairs ordered right: 3 of 4
    assert m["precision_at_num_noisy"] == 0.5 and m["auroc"] == 0.75 and m["num_noisy"] == 2
    perfect = audit_metrics(np.array([3.0, 2.0, 1.0]), np.array([True, True, False]))
    assert perfect["auroc"] == 1.0 and perfect["precision_at_num_noisy"] == 1.0
    assert np.isnan(audit_metrics(np.ones(3), np.zeros(3))["auroc"])
    with pytest.raises(ValueError, match="shape"):
        audit_metrics(np.ones(3), np.ones(2))


@pytest.fixture(scope="module")
def tiny_run(tiny_market_root, tmp_path_factory):
    """A 2-batch OSM+CAA training run with 30 % symmetric noise on the tiny synthetic tree."""
    from conftest import tiny_overrides

    from reid_robust.config import load_config
    from reid_robust.engine.trainer import train

    out = tmp_path_factory.mktemp("audit_run")
    cfg = load_config(REPO / "configs" / "quickstart.yaml", tiny_overrides(tiny_market_root, out) + [
        "train.epochs=1", "data.noise.rate=0.3",
        "loss.terms=[{name: osm_caa, weight: 1.0, input: feat}, {name: cross_entropy, weight: 1.0, input: bn_feat}]"])
    train(cfg)
    return cfg, out


def test_scores_do_not_depend_on_file_names(tiny_run, tmp_path):
    from reid_robust.data import build_transforms
    from reid_robust.engine.builders import build_dataset_from_config, build_loss_terms
    from reid_robust.engine.checkpoint import load_checkpoint, load_model_from_checkpoint
    from reid_robust.engine.noise import apply_label_noise

    cfg, out = tiny_run
    model, _ = load_model_from_checkpoint(out / "checkpoints" / "last.pth")
    terms = build_loss_terms(cfg.loss.terms, build_dataset_from_config(cfg.data).num_train_classes, model.out_dim)
    for term, sd in zip(terms, load_checkpoint(out / "checkpoints" / "last.pth")["losses"]):
        term.module.load_state_dict(sd)
    records = build_dataset_from_config(cfg.data).train
    labels = apply_label_noise(cfg.data.noise, records, np.array([r.pid for r in records]), None)
    # new names that say nothing, listed in the order a loader sorting them by name would give
    renamed = []
    for i, r in enumerate(records):
        target = tmp_path / f"{(7919 * i) % 1000:03d}_x.jpg"
        shutil.copy(r.path, target)
        renamed.append(replace(r, path=str(target)))
    shuffle = np.argsort([r.path for r in renamed], kind="stable")
    assert not np.array_equal(shuffle, np.arange(len(records)))
    tf = build_transforms(cfg.data.transforms, train=False)
    a = suspicion_scores(extract_outputs(model, records, tf, outputs=None), labels, terms, 4, 2, k=3, passes=3)
    b = suspicion_scores(extract_outputs(model, [renamed[i] for i in shuffle], tf, outputs=None), labels[shuffle],
                         terms, 4, 2, k=3, passes=3)
    assert set(a) == {"reliability", "knn", "margin", "score"}
    for key in a:  # the same score for the same image (up to float rounding of the reordered forward pass)
        np.testing.assert_allclose(a[key][shuffle], b[key], rtol=1e-5, atol=1e-6, err_msg=key)


def test_audit_tool_writes_suspects_metrics_and_figures(tiny_run, tmp_path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("audit_tool", REPO / "tools" / "audit_labels.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    main = tool.main
    _, out = tiny_run
    assert main(["--checkpoint", str(out / "checkpoints" / "last.pth"), "--out", str(tmp_path), "--top", "3",
                 "--k", "3", "--passes", "2"]) == 0
    with open(tmp_path / "suspects.csv") as fh:
        rows = list(csv.DictReader(fh))
    with open(out / "noise_manifest.csv") as fh:
        manifest = list(csv.DictReader(fh))
    assert len(rows) == len(manifest)
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True) and [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert {r["path"] for r in rows} == {r["path"] for r in manifest}
    summary = json.loads((tmp_path / "audit.json").read_text())
    truth = {r["path"]: r["is_noisy"] == "1" for r in manifest}
    injected = np.array([truth[r["path"]] for r in rows])
    assert summary["metrics"]["num_noisy"] == injected.sum()
    assert summary["metrics"]["precision_at_num_noisy"] == pytest.approx(injected[:injected.sum()].mean())
    assert (tmp_path / "contact_sheet.png").stat().st_size > 1000
    assert (tmp_path / "precision_recall.png").stat().st_size > 1000
