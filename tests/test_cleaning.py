"""Self-cleaning rounds (issue 15): the rate estimate, the drop / relabel / weight decisions, the config rules,
cleaning.csv, independence from the noise manifest, exact resume across a round, DDP's shared decision."""
from __future__ import annotations

import csv
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO, tiny_overrides

from reid_robust.cleaning.decisions import (
    CleaningState,
    decide,
    drop_flagged,
    flag_top,
    relabel_flagged,
)
from reid_robust.cleaning.rate import estimate_rate
from reid_robust.cleaning.report import Manifest, round_metrics
from reid_robust.cleaning.scoring import WRONG_SIDE
from reid_robust.config import ConfigError, load_config
from reid_robust.config.sections import CleaningConfig, SamplerConfig

QUICKSTART = REPO / "configs" / "quickstart.yaml"


@pytest.mark.parametrize("share", [0.1, 0.25, 0.4])
def test_rate_estimate_recovers_the_planted_share(share):
    rng = np.random.default_rng(1)
    n = 3000
    k = int(share * n)
    values = np.concatenate([rng.normal(0.0, 1.0, n - k), rng.normal(4.5, 0.8, k)])
    estimate = estimate_rate(rng.permutation(values))
    assert abs(estimate.rate - share) < 0.02
    assert estimate.separation > 2
    assert estimate.means[1] > estimate.means[0]


def test_rate_estimate_needs_the_suspect_component_beyond_the_boundary():
    """Two separated populations of clean margins (a core and a tail, both closer to their own centre) are
    not wrong labels: with the margin's boundary 0 the estimate is 0; shifted past 0 the split counts."""
    rng = np.random.default_rng(3)
    core_and_tail = np.concatenate([rng.normal(-0.6, 0.05, 900), rng.normal(-0.2, 0.05, 300)])
    assert estimate_rate(core_and_tail).rate > 0.2            # without a boundary the tail is "noise"
    assert estimate_rate(core_and_tail, boundary=0.0).rate == 0.0
    assert abs(estimate_rate(core_and_tail + 0.4, boundary=0.0).rate - 0.25) < 0.03
    assert WRONG_SIDE["margin"] == 0.0 and WRONG_SIDE["knn"] == 0.5


def test_rate_estimate_is_zero_for_one_population_and_capped_by_max_rate():
    rng = np.random.default_rng(2)
    assert estimate_rate(rng.normal(0, 1, 2000)).rate == 0.0
    assert estimate_rate(rng.exponential(1.0, 2000)).rate == 0.0   # skewed but one population
    assert estimate_rate(np.full(10, 3.0)).rate == 0.0
    two = np.concatenate([rng.normal(0, 1, 500), rng.normal(6, 1, 500)])
    assert estimate_rate(two, max_rate=0.3).rate == 0.3
    with pytest.raises(ValueError, match="NaN"):
        estimate_rate(np.array([0.0, np.nan, 1.0]))


def test_flag_top_takes_the_highest_scores_ties_by_index():
    assert flag_top(np.array([0.1, 0.9, 0.5, 0.9, 0.2]), 0.4).tolist() == [False, True, False, True, False]
    assert flag_top(np.array([0.5, 0.5, 0.5, 0.5]), 0.5).tolist() == [True, True, False, False]
    assert not flag_top(np.arange(5.0), 0.0).any()


def test_drop_removes_identities_below_min_images_and_counts_the_resampled():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 3])
    flagged = np.zeros(12, dtype=bool)
    flagged[[0, 4, 5, 6]] = True   # identity 0 keeps 3 (< K=4: resampled), identity 1 keeps 1 (< 2: removed)
    keep, counts = drop_flagged(flagged, labels, num_identities=2, num_instances=4, min_images=2)
    assert keep.tolist() == [False, True, True, True] + [False] * 4 + [True] * 4
    # identity 3 has one image but lost none: neither removed nor counted
    assert counts == {"identities_removed": 1, "identities_resampled": 1}
    with pytest.raises(ValueError, match="fewer than the P=4"):
        drop_flagged(flagged, labels, num_identities=4, num_instances=4, min_images=2)


def test_relabel_only_flagged_images_above_the_confidence():
    labels = np.array([0, 0, 1, 1])
    probs = np.array([[0.1, 0.9], [0.05, 0.95], [0.8, 0.2], [0.5, 0.5]])
    flagged = np.array([True, False, True, True])
    assert relabel_flagged(flagged, labels, probs, 0.9).tolist() == [1, 0, 1, 1]   # 0.9 >= 0.9; 0.8 < 0.9
    assert relabel_flagged(flagged, labels, probs, 0.75).tolist() == [1, 0, 0, 1]
    with pytest.raises(ValueError, match="class space"):
        relabel_flagged(flagged, np.array([0, 0, 1, 2]), probs, 0.5)


def _clusters(per_class: int = 8, classes: int = 6, wrong: int = 1, seed: int = 0):
    """Well-separated class clusters [N, 16]; ``wrong`` images per class carry the next class's label."""
    rng = np.random.default_rng(seed)
    centres = np.eye(16)[:classes] * 5
    truth = np.repeat(np.arange(classes), per_class)
    feats = centres[truth] + rng.normal(0, 0.3, (len(truth), 16))
    labels = truth.copy()
    noisy = np.concatenate([np.flatnonzero(truth == c)[:wrong] for c in range(classes)])
    labels[noisy] = (truth[noisy] + 1) % classes
    return torch.tensor(feats, dtype=torch.float32), truth, labels, noisy


def _classifier_term(feats: torch.Tensor, truth: np.ndarray, classes: int):
    from reid_robust.losses import build_loss

    module = build_loss("cross_entropy", num_classes=classes, embedding_dim=feats.shape[1])
    with torch.no_grad():  # a classifier that knows the true classes: weight rows = scaled class centres
        module.classifier.weight.copy_(torch.stack([feats[truth == c].mean(0) for c in range(classes)]) * 2)
    return SimpleNamespace(name="cross_entropy", input="bn_feat", module=module)


def test_decide_drop_relabel_weight_on_a_hand_built_case():
    feats, truth, labels, noisy = _clusters()
    outputs = {"bn_feat": feats, "feat": feats}
    state = CleaningState.initial(labels)
    sampler = SamplerConfig(num_identities=2, num_instances=4)
    term = _classifier_term(feats, truth, 6)
    base = CleaningConfig(action="drop", rate=6 / 48, start_epoch=1, k=4)
    drop = decide(outputs, state, [term], base, sampler)
    assert set(np.flatnonzero(drop.flagged)) == set(noisy)
    assert set(np.flatnonzero(~drop.keep)) == set(noisy) and drop.counts["images_dropped"] == 6
    assert (drop.labels == labels).all() and (drop.weights == 1).all()
    relabel = decide(outputs, state, [term], replace(base, action="relabel", relabel_confidence=0.5), sampler)
    assert (relabel.labels == truth).all() and relabel.keep.all() and relabel.counts["images_relabelled"] == 6
    weight = decide(outputs, state, [term], replace(base, action="weight", rate=None, component="margin"), sampler)
    assert weight.estimated_rate == pytest.approx(6 / 48, abs=0.03)
    assert (weight.weights[~weight.flagged] == 1).all() and (weight.weights[noisy] < 0.5).all()
    assert weight.keep.all() and (weight.labels == labels).all()
    more = decide(outputs, state, [term], replace(base, rate=None, component="margin", rate_scale=2.0), sampler)
    assert more.rate == pytest.approx(2 * more.estimated_rate) and more.flagged[noisy].all()
    assert more.counts["images_flagged"] == round(more.rate * 48)
    capped = decide(outputs, state, [term], replace(base, rate=None, rate_scale=10.0, max_rate=0.3), sampler)
    assert capped.rate == 0.3


def test_round_metrics_against_the_manifest():
    truth = np.array([False, True, True, False])
    manifest = Manifest(truth, clean=np.array([10, 10, 11, 11]), noisy=np.array([10, 11, 10, 11]))
    trained = np.array([0, 1, 0, 1])          # the run's class space: 10 -> 0, 11 -> 1
    flagged = np.array([False, True, False, True])
    found = round_metrics(flagged, np.ones(4, bool), np.array([0, 0, 0, 1]), manifest, trained)
    assert found == {"precision": 0.5, "recall": 0.5, "labels_correct": 0.75}
    none = round_metrics(np.zeros(4, bool), np.array([True, False, False, True]), trained, manifest, trained)
    assert none == {"precision": None, "recall": 0.0, "labels_correct": 1.0}


def test_cleaning_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    from reid_robust.engine.checkpoint import atomic_save

    state = CleaningState(2, np.array([True, False]), np.array([3, 1]), np.array([1.0, 0.25], np.float32),
                          [{"round": 1, "precision": ""}])
    atomic_save({"cleaning": state.to_plain()}, tmp_path / "c.pth")
    back = CleaningState.from_plain(torch.load(tmp_path / "c.pth", weights_only=True)["cleaning"], 2, "c.pth")
    assert back.round == 2 and back.keep.tolist() == [True, False] and back.labels.tolist() == [3, 1]
    assert back.weights.tolist() == [1.0, 0.25] and back.rows == state.rows
    with pytest.raises(ValueError, match="covers 2 images"):
        CleaningState.from_plain(state.to_plain(), 3, "c.pth")


def test_config_rules_are_one_line_errors():
    with pytest.raises(ConfigError, match="relabel needs a classifier term"):
        load_config(QUICKSTART, ["train.cleaning.action=relabel", "loss.terms=[{name: triplet}]"])
    with pytest.raises(ConfigError, match="component=reliability needs"):
        load_config(QUICKSTART, ["train.cleaning.action=drop", "train.cleaning.component=reliability",
                                 "loss.terms=[{name: triplet}]"])
    for key, value in (("rate", 1.0), ("start_epoch", 0), ("every", 0), ("min_images", 0),
                       ("relabel_confidence", 0), ("max_rate", 1.0), ("action", "prune")):
        with pytest.raises(ConfigError, match=f"train.cleaning.{key}"):
            load_config(QUICKSTART, [f"train.cleaning.{key}={value}"])
    assert load_config(QUICKSTART, ["train.cleaning.action=relabel"]).train.cleaning.action == "relabel"
    assert load_config(QUICKSTART, ["train.cleaning.action=off"]).train.cleaning.action == "off"  # YAML: false


def test_round_schedule():
    from reid_robust.engine.cleaning import round_due

    c = CleaningConfig(action="drop", start_epoch=3, every=2)
    assert [e for e in range(1, 10) if round_due(c, e)] == [3, 5, 7, 9]
    assert not any(round_due(replace(c, action="off"), e) for e in range(1, 10))


def _cfg(root, out, *extra):
    return load_config(QUICKSTART, tiny_overrides(root, out) + ["data.noise.rate=0.3", "train.cleaning.start_epoch=1",
                                                              "train.cleaning.every=1", *extra])


def _read_rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _cleaning_of(out):
    from reid_robust.engine.checkpoint import load_checkpoint

    saved = load_checkpoint(out / "checkpoints" / "last.pth")
    return saved["model"], CleaningState.from_plain(saved["cleaning"], len(saved["cleaning"]["keep"]), str(out))


def test_decisions_do_not_depend_on_the_noise_manifest(tiny_market_root, tmp_path, monkeypatch):
    from reid_robust.engine.cleaning import CLEANING_COLUMNS
    from reid_robust.engine.trainer import train

    extra = ["train.epochs=2", "train.cleaning.action=drop", "train.cleaning.rate=0.25"]
    train(_cfg(tiny_market_root, tmp_path / "with", *extra))
    rows = _read_rows(tmp_path / "with" / "cleaning.csv")
    assert [r["round"] for r in rows] == ["1", "2"] and list(rows[0]) == list(CLEANING_COLUMNS)
    n = len(_cleaning_of(tmp_path / "with")[1].keep)
    assert all(int(r["images_flagged"]) == round(0.25 * n) and r["precision"] != "" and r["recall"] != ""
               for r in rows)
    # the same run without a manifest on disk (the trainer writes none): the same decisions, no detection columns
    monkeypatch.setattr("reid_robust.engine.noise.write_noise_manifest", lambda path, *a, **k: path)
    train(_cfg(tiny_market_root, tmp_path / "without", *extra))
    assert not (tmp_path / "without" / "noise_manifest.csv").exists()
    bare = _read_rows(tmp_path / "without" / "cleaning.csv")
    assert all(r["precision"] == r["recall"] == r["labels_correct"] == "" for r in bare)
    keys = ("images_flagged", "images_dropped", "identities_removed", "identities_resampled", "estimated_rate")
    assert [[r[k] for k in keys] for r in rows] == [[r[k] for k in keys] for r in bare]
    (wa, a), (wb, b) = _cleaning_of(tmp_path / "with"), _cleaning_of(tmp_path / "without")
    assert (a.keep == b.keep).all() and (a.labels == b.labels).all() and (~a.keep).sum() == round(0.25 * n)
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def test_resume_after_a_round_continues_bit_identically(tiny_market_root, tmp_path):
    from reid_robust.engine.trainer import train

    extra = ["train.cleaning.action=relabel", "train.cleaning.rate=0.3", "train.cleaning.relabel_confidence=0.1"]
    train(_cfg(tiny_market_root, tmp_path / "full", "train.epochs=3", *extra))
    train(_cfg(tiny_market_root, tmp_path / "part", "train.epochs=2", *extra))
    last = tmp_path / "part" / "checkpoints" / "last.pth"
    train(_cfg(tiny_market_root, tmp_path / "part", "train.epochs=3", *extra, f"train.resume={last}"))
    (wa, a), (wb, b) = _cleaning_of(tmp_path / "full"), _cleaning_of(tmp_path / "part")
    assert a.round == b.round == 3 and (a.labels == b.labels).all() and (a.keep == b.keep).all()
    rows = _read_rows(tmp_path / "full" / "cleaning.csv")
    assert sum(int(r["images_relabelled"]) for r in rows) > 0  # the rounds did change labels
    assert rows == _read_rows(tmp_path / "part" / "cleaning.csv")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def _broadcast_worker(rank: int, store_path: str) -> None:
    from reid_robust.engine.cleaning import broadcast_state
    from reid_robust.engine.distributed import DistInfo

    torch.distributed.init_process_group("gloo", init_method=f"file://{store_path}", rank=rank, world_size=2)
    try:
        rng = np.random.default_rng(rank)  # each rank starts from its own state; rank 0's must win
        state = CleaningState(1, rng.random(20) > 0.5, rng.integers(0, 5, 20), rng.random(20).astype(np.float32))
        broadcast_state(state, DistInfo(rank=rank, world_size=2), torch.device("cpu"))
        ref = np.random.default_rng(0)
        assert (state.keep == (ref.random(20) > 0.5)).all()
        assert (state.labels == ref.integers(0, 5, 20)).all() and state.labels.dtype == np.int64
        assert (state.weights == ref.random(20).astype(np.float32)).all() and state.keep.dtype == bool
    finally:
        torch.distributed.destroy_process_group()


def test_every_rank_takes_rank_0s_decision(tmp_path):
    torch.multiprocessing.spawn(_broadcast_worker, args=(str(tmp_path / "store"),), nprocs=2, join=True)


def test_oracle_leaves_out_exactly_the_wrong_injected_labels_and_has_no_rounds():
    from reid_robust.engine.cleaning import initial_cleaning, round_due

    data = SimpleNamespace(labels=np.array([0, 1, 1, 2]), noisy=np.array([0, 1, 1, 2]), clean=np.array([0, 2, 1, 2]))
    state = initial_cleaning(CleaningConfig(action="oracle"), data)
    assert state.keep.tolist() == [True, False, True, True] and (state.labels == data.labels).all()
    assert initial_cleaning(CleaningConfig(), data) is None
    assert not any(round_due(CleaningConfig(action="oracle", start_epoch=1, every=1), e) for e in range(1, 5))


def test_restart_config_rules_and_schedule():
    from reid_robust.engine.cleaning import phase_start, restart_due, round_due, round_settings

    with pytest.raises(ConfigError, match="action=off runs none"):
        load_config(QUICKSTART, ["train.cleaning.restart_epochs=[3]"])
    with pytest.raises(ConfigError, match="action=oracle runs none"):
        load_config(QUICKSTART, ["train.cleaning.action=oracle", "train.cleaning.restart_epochs=[3]"])
    with pytest.raises(ConfigError, match="starts before the first round"):
        load_config(QUICKSTART, ["train.cleaning.action=drop", "train.cleaning.start_epoch=4",
                                 "train.cleaning.restart_epochs=[3, 9]"])
    for bad in ("[0]", "[5, 3]", "[4, 4]"):
        with pytest.raises(ConfigError, match="train.cleaning.restart_epochs"):
            load_config(QUICKSTART, ["train.cleaning.action=drop", f"train.cleaning.restart_epochs={bad}"])
    with pytest.raises(ConfigError, match="train.epochs=0: with train.cleaning.restart_epochs"):
        load_config(QUICKSTART, ["train.cleaning.action=drop", "train.cleaning.restart_epochs=[3]", "train.epochs=0"])
    with pytest.raises(ConfigError, match="restart_rate_scale=1.0 applies to the round at a second restart"):
        load_config(QUICKSTART, ["train.cleaning.action=drop", "train.cleaning.restart_epochs=[3]",
                                 "train.cleaning.restart_rate_scale=1.0"])
    cfg = load_config(QUICKSTART, ["train.cleaning.action=drop", "train.cleaning.restart_epochs=[4, 9]",
                                   "train.epochs=7", "train.cleaning.restart_rate_scale=1.0"])
    assert cfg.train.total_epochs == 16 and load_config(QUICKSTART, ["train.epochs=7"]).train.total_epochs == 7
    c = CleaningConfig(action="drop", start_epoch=2, every=2, restart_epochs=(5, 9))
    # the grid up to the first restart (and the restart epoch itself), then one round at each later restart
    assert [e for e in range(1, 20) if round_due(c, e)] == [2, 4, 5, 9]
    assert [e for e in range(1, 20) if restart_due(c, e)] == [5, 9]
    assert [phase_start(c, e) for e in (0, 4, 5, 8, 9, 19)] == [0, 0, 5, 5, 9, 9]
    later = replace(c, rate_scale=1.1, restart_rate_scale=1.0)
    assert [round_settings(later, e).rate_scale for e in (2, 4, 5, 9)] == [1.1, 1.1, 1.1, 1.0]
    assert round_settings(c, 9) is c
    none = replace(c, restart_epochs=())
    assert not any(restart_due(none, e) for e in range(1, 20)) and phase_start(none, 9) == 0
    assert [e for e in range(1, 10) if round_due(none, e)] == [2, 4, 6, 8]


def test_restart_starts_training_again_on_the_cleaned_set(tiny_market_root, tmp_path, monkeypatch):
    """After the round of a restart epoch the model, optimiser and schedule are those of a fresh start (same
    seed), the kept decision no longer changes, and ProSelfLC-style progress counts from the restart."""
    from reid_robust.engine import steps, trainer

    progress: list[tuple[int, int, int]] = []
    real = steps.weighted_loss

    def spy(terms, outputs, targets, step, total, *args, **kwargs):
        progress.append((len(progress), step, total))
        return real(terms, outputs, targets, step, total, *args, **kwargs)

    monkeypatch.setattr(steps, "weighted_loss", spy)
    restarted: list[tuple] = []
    real_restart = trainer.restart_training

    def capture(state, run, data):
        real_restart(state, run, data)
        restarted.append(({k: v.clone() for k, v in state.model.state_dict().items()}, state.optimizer.state_dict(),
                          state.scheduler.state_dict(), state.best, state.final))

    monkeypatch.setattr(trainer, "restart_training", capture)
    extra = ["train.cleaning.action=drop", "train.cleaning.rate=0.25", "train.cleaning.restart_epochs=[1]"]
    model_cfg = load_config(QUICKSTART, tiny_overrides(tiny_market_root, tmp_path)).model
    trainer.seed_everything(0)
    fresh = trainer.build_model_from_config(model_cfg)
    trainer.train(_cfg(tiny_market_root, tmp_path / "run", "train.epochs=2", *extra))
    (weights, optimizer, scheduler, best, final), = restarted
    assert scheduler["last_epoch"] == 0 and not optimizer["state"] and best is None and final is None
    for key, value in fresh.state_dict().items():  # the restarted model is the seed's initialisation
        torch.testing.assert_close(weights[key], value, rtol=0, atol=0, msg=key)
    assert [s for _, s, _ in progress] == [0, 1, 0, 1, 2, 3] and {t for *_, t in progress} == {4}
    rows = _read_rows(tmp_path / "run" / "cleaning.csv")
    assert [r["epoch"] for r in rows] == ["1"]   # no round after the restart
    assert [r["epoch"] for r in _read_rows(tmp_path / "run" / "log.csv")] == ["1", "2", "3"]
    _, state = _cleaning_of(tmp_path / "run")
    assert (~state.keep).sum() == int(rows[0]["images_dropped"]) > 0


class _Killed(Exception):
    """Stands for a crash right after a checkpoint was written."""


def test_resume_across_a_restart_is_bit_identical(tiny_market_root, tmp_path, monkeypatch):
    """A run killed right after the checkpoint of a restart epoch, and again inside the last phase, resumes to
    the weights and cleaning.csv of the uninterrupted run."""
    from reid_robust.engine import trainer

    extra = ["train.cleaning.action=drop", "train.cleaning.rate=0.25", "train.cleaning.restart_epochs=[1, 2]",
             "train.epochs=2"]
    trainer.train(_cfg(tiny_market_root, tmp_path / "full", *extra))
    real_save = trainer.save_checkpoint
    last = tmp_path / "part" / "checkpoints" / "last.pth"
    for kill_at in (2, 3):   # after the second restart, then in the middle of the last phase
        def save_then_die(state, run, path, kill_at=kill_at):
            real_save(state, run, path)
            if path == run.last_path and state.epoch == kill_at:
                raise _Killed

        monkeypatch.setattr(trainer, "save_checkpoint", save_then_die)
        resume = [f"train.resume={last}"] if last.exists() else []
        with pytest.raises(_Killed):
            trainer.train(_cfg(tiny_market_root, tmp_path / "part", *extra, *resume))
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    trainer.train(_cfg(tiny_market_root, tmp_path / "part", *extra, f"train.resume={last}"))
    (wa, a), (wb, b) = _cleaning_of(tmp_path / "full"), _cleaning_of(tmp_path / "part")
    assert (a.keep == b.keep).all() and a.round == b.round == 2
    assert _read_rows(tmp_path / "full" / "cleaning.csv") == _read_rows(tmp_path / "part" / "cleaning.csv")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)


def test_a_restart_that_drops_nothing_ends_as_the_run_without_cleaning(tiny_market_root, tmp_path):
    """The restarted phase replays a fresh run on the cleaned set (same initialisation, batches, augmentations
    and schedule): with nothing flagged it ends with the weights of the same config without cleaning."""
    from reid_robust.engine.trainer import train

    train(_cfg(tiny_market_root, tmp_path / "off", "train.epochs=2", "train.cleaning.action=off"))
    train(_cfg(tiny_market_root, tmp_path / "restart", "train.epochs=2", "train.cleaning.action=drop",
               "train.cleaning.rate=0.0", "train.cleaning.restart_epochs=[1]"))
    assert _read_rows(tmp_path / "restart" / "cleaning.csv")[0]["images_flagged"] == "0"
    from reid_robust.engine.checkpoint import load_checkpoint

    off = load_checkpoint(tmp_path / "off" / "checkpoints" / "last.pth")["model"]
    restarted = load_checkpoint(tmp_path / "restart" / "checkpoints" / "last.pth")
    assert restarted["epoch"] == 3
    for key, value in off.items():
        torch.testing.assert_close(restarted["model"][key], value, rtol=0, atol=0, msg=key)


def test_ctrl_c_inside_a_restarted_phase_resumes_bit_identically(tiny_market_root, tmp_path, monkeypatch):
    """Ctrl-C during the first step after a restart saves a mid-epoch checkpoint of the restarted model; the
    resumed run ends with the weights of the uninterrupted one."""
    import os
    import signal

    from reid_robust.engine import trainer
    from reid_robust.engine.checkpoint import load_checkpoint

    extra = ["train.cleaning.action=drop", "train.cleaning.rate=0.25", "train.cleaning.restart_epochs=[1]",
             "train.epochs=2"]
    trainer.train(_cfg(tiny_market_root, tmp_path / "full", *extra))
    real_build = trainer.build_model_from_config
    built = {"n": 0}

    def build_with_interrupt(model_cfg):
        model = real_build(model_cfg)
        built["n"] += 1
        if built["n"] == 2:  # the model of the restart: Ctrl-C in its first training step
            fired = {"done": False}

            def hook(module, inputs, output):
                if module.training and not fired["done"]:
                    fired["done"] = True
                    os.kill(os.getpid(), signal.SIGINT)
            model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(trainer, "build_model_from_config", build_with_interrupt)
    out = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        trainer.train(_cfg(tiny_market_root, out, *extra))
    saved = load_checkpoint(out / "checkpoints" / "last.pth")
    assert (saved["epoch"], saved["iteration"]) == (1, 1) and saved["scheduler"]["last_epoch"] == 1
    monkeypatch.setattr(trainer, "build_model_from_config", real_build)
    trainer.train(_cfg(tiny_market_root, out, *extra, f"train.resume={out}/checkpoints/last.pth"))
    (wa, a), (wb, b) = _cleaning_of(tmp_path / "full"), _cleaning_of(out)
    assert (a.keep == b.keep).all()
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], rtol=0, atol=0, msg=key)
