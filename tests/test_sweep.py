"""Noise sweep: cells, fair per-cell configs, resume without repeating finished cells, results files."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from reid_robust.analysis.sweep import (
    CLEAN,
    Cell,
    build_cells,
    cell_config,
    markdown_table,
    read_results,
    run_sweep,
    split_loss_terms,
    summarize,
)
from reid_robust.config import Config, ConfigError, load_config
from reid_robust.config.sections import CleaningConfig

REPO = Path(__file__).resolve().parents[1]
TERMS = ("loss.terms=[{name: triplet, weight: 1.0, input: feat, margin: 0.3}, "
         "{name: cross_entropy, weight: 0.5, input: bn_feat, epsilon: 0.1}]")
PRESETS = "sweep.presets={osm_caa: {sigma_caa: 0.5}}"


def _base(tmp_path: Path, extra=()) -> Config:
    return load_config(REPO / "configs" / "quickstart.yaml", [f"output_dir={tmp_path}/x", TERMS, PRESETS, *extra])


def test_cells_share_rate_zero_across_modes_and_come_first():
    cells = build_cells(["triplet", "osm_caa"], [0.4, 0, 0.2], ["symmetric", "pattern"], [0, 1])
    assert len(cells) == 2 * 2 + 2 * 2 * 2 * 2
    assert all(c.mode == CLEAN for c in cells[:4]) and all(c.mode != CLEAN for c in cells[4:])
    assert len({c.relpath for c in cells}) == len(cells)
    with pytest.raises(ValueError, match="noise rate"):
        build_cells(["triplet"], [1.5], ["symmetric"], [0])
    with pytest.raises(ValueError, match="twice"):
        build_cells(["triplet", "triplet"], [0], ["symmetric"], [0])


def test_cell_config_changes_only_metric_term_seed_and_noise(tmp_path):
    base = _base(tmp_path)
    kept, active, _ = split_loss_terms(base)
    assert [t["name"] for t in kept] == ["cross_entropy"] and active["name"] == "triplet"
    a = cell_config(base, Cell("triplet", "symmetric", 0.4, 1), tmp_path).to_dict()
    b = cell_config(base, Cell("osm_caa", "symmetric", 0.4, 1), tmp_path).to_dict()
    assert a["loss"]["terms"][1:] == b["loss"]["terms"][1:] == kept        # same cross-entropy term
    # the preset's parameters, with the active metric term's weight and input
    assert b["loss"]["terms"][0] == {"name": "osm_caa", "weight": 1.0, "input": "feat", "sigma_caa": 0.5}
    assert cell_config(base, Cell("ice", CLEAN, 0.0, 0), tmp_path).loss.terms[0].to_dict() == \
        {"name": "ice", "weight": 1.0, "input": "feat"}
    # the active term is its own loss's preset, and sweep.presets can override part of it
    assert a["loss"]["terms"][0] == {"name": "triplet", "weight": 1.0, "input": "feat", "margin": 0.3}
    tuned = _base(tmp_path, ["sweep.presets.triplet.mining=semi_hard"])
    assert cell_config(tuned, Cell("triplet", CLEAN, 0.0, 0), tmp_path).loss.terms[0].to_dict() == \
        {"name": "triplet", "weight": 1.0, "input": "feat", "margin": 0.3, "mining": "semi_hard"}
    for cfg in (a, b):
        assert cfg["seed"] == 1 and cfg["data"]["noise"]["seed"] == 1 and cfg["data"]["noise"]["rate"] == 0.4
        assert cfg["model"] == base.model.to_dict() and cfg["train"]["epochs"] == base.train.epochs
        assert cfg["train"]["lr"] == base.train.lr and cfg["train"]["scheduler"] == base.train.scheduler
    assert a["output_dir"] != b["output_dir"]
    assert base.loss.terms[0].name == "triplet"                            # the base config is not modified
    with pytest.raises(ValueError, match="confusable"):
        cell_config(base, Cell("triplet", "pattern", 0.2, 0), tmp_path)
    with pytest.raises(ValueError, match="unknown loss 'nope'"):
        cell_config(base, Cell("nope", CLEAN, 0.0, 0), tmp_path)


@pytest.mark.parametrize("name", ["dm", "imae", "proselflc"])
def test_classification_losses_replace_the_cross_entropy_term(tmp_path, name):
    base = _base(tmp_path)
    kept, active, _ = split_loss_terms(base)
    terms = [t.to_dict() for t in cell_config(base, Cell(name, "symmetric", 0.4, 1), tmp_path).loss.terms]
    assert terms[0] == active                                    # the metric term is unchanged
    assert [t["name"] for t in terms] == [active["name"], name]  # one metric term, one classifier
    assert terms[1]["weight"] == kept[0]["weight"] and terms[1]["input"] == kept[0]["input"]


def test_presets_are_checked_when_the_config_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"sweep.presets.osm_ca: unknown loss 'osm_ca' \(did you mean 'osm_caa'"):
        _base(tmp_path, ["sweep.presets={osm_ca: {}}"])
    with pytest.raises(ConfigError, match=r"sweep.presets.osm_caa: unknown parameter.*margn \(did you mean 'margin'\?\)"):
        _base(tmp_path, ["sweep.presets.osm_caa.margn=1.0"])
    with pytest.raises(ConfigError, match="must be a mapping"):
        _base(tmp_path, ["sweep.presets={ice: 3}"])
    shipped = load_config(REPO / "configs" / "sweep_synthetic.yaml")
    assert [t.name for t in shipped.loss.terms] == ["triplet", "cross_entropy"]  # no idle terms
    assert set(split_loss_terms(shipped)[2]) == {"triplet", "osm_caa", "ranked_list", "multi_similarity", "ice"}


def test_config_without_metric_term_is_refused(tmp_path):
    base = load_config(REPO / "configs" / "quickstart.yaml",
                       ["loss.terms=[{name: cross_entropy, weight: 1.0, input: bn_feat}]"])
    with pytest.raises(ValueError, match="no non-cross-entropy term"):
        split_loss_terms(base)


def _fake_train(calls: list):
    """A stand-in for train(): a deterministic metric per cell, written like the trainer does."""
    def train(cfg: Config) -> dict:
        calls.append(cfg.output_dir)
        term = cfg.loss.terms[0].name
        rate = cfg.data.noise.rate
        metrics = {"mAP": 0.8 - (0.5 if term == "triplet" else 0.2) * rate + 0.01 * cfg.seed,
                   "rank1": 0.9 - rate / 2, "train_time_s": 1.5, "noise": {"realised_rate": rate}}
        out = Path(cfg.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(metrics))
        return metrics
    return train


def test_resume_skips_finished_cells_and_writes_results(tmp_path):
    base, out, calls = _base(tmp_path), tmp_path / "sweep", []
    args = (["triplet", "osm_caa"], [0, 0.2, 0.4], ["symmetric"], [0, 1])
    # "stop" the first run after 5 cells
    def train_then_stop(cfg):
        if len(calls) == 5:
            raise KeyboardInterrupt
        return _fake_train(calls)(cfg)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(base, *args, out, train_fn=train_then_stop, progress=False)
    assert len(calls) == 5 and len(read_results(out / "results.csv")) == 5
    first = list(calls)
    rows = run_sweep(base, *args, out, train_fn=_fake_train(calls), progress=False)
    assert len(calls) == 12 and not set(first) & set(calls[5:])          # nothing trained twice
    assert len(rows) == 12
    n = len(calls)
    run_sweep(base, *args, out, train_fn=_fake_train(calls), progress=False)
    assert len(calls) == n                                                  # all finished: no training
    saved = read_results(out / "results.csv")
    assert {(r["loss"], r["mode"], r["rate"], r["seed"]) for r in saved} == \
        {(r["loss"], r["mode"], r["rate"], r["seed"]) for r in rows}
    assert (out / "noise_curves.png").stat().st_size > 1000
    table = (out / "results.md").read_text()
    # triplet at 0.4: mAP 0.6 + 0.01 seed -> mean 60.50, sample std 0.71
    assert "| symmetric | 0.4 | triplet | 2 | 60.50 ± 0.71 |" in table
    assert "| symmetric | 0 | osm_caa | 2 | 80.50 ± 0.71 |" in table


def _interrupted_in_one_worker(cfg: Config) -> dict:
    """Worker-side stand-in for train(): the first clean triplet cell is Ctrl-C'd, the others take 2 s (long
    beside the moment the parent needs to react, so the count of cells still run is not a race)."""
    import time

    if cfg.loss.terms[0].name == "triplet" and cfg.data.noise.rate == 0 and cfg.seed == 0:
        raise KeyboardInterrupt
    time.sleep(2.0)
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"mAP": 0.5, "rank1": 0.5, "train_time_s": 0.5}))
    return {}


def test_ctrl_c_in_a_worker_stops_the_parallel_sweep_without_starting_more_cells(tmp_path):
    base, out = _base(tmp_path), tmp_path / "sweep"
    rates = [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    args = (["triplet", "osm_caa"], rates, ["symmetric"], [0])  # 16 cells, all in the first phase
    with pytest.raises(KeyboardInterrupt):
        run_sweep(base, *args, out, train_fn=_interrupted_in_one_worker, progress=False, jobs=2)
    trained = list(out.glob("*/*/seed0/metrics.json"))
    # only the cells running or already in the pool's call queue (jobs + 1) when the error arrives still
    # run: at most 5 of the other 15 (without the cancel, all 15 ran)
    assert len(trained) <= 5, trained


def test_jobs_must_be_positive(tmp_path):
    with pytest.raises(ValueError, match="jobs must be >= 1"):
        run_sweep(_base(tmp_path), ["triplet"], [0], ["symmetric"], [0], tmp_path / "s", progress=False, jobs=0)


def test_summarize_mean_and_sample_std():
    rows = [{"loss": "a", "mode": "symmetric", "rate": 0.2, "seed": s, "mAP": v, "rank1": 0.5, "train_time_s": 2.0}
            for s, v in enumerate([0.1, 0.2, 0.6])]
    rows.append({"loss": "a", "mode": CLEAN, "rate": 0.0, "seed": 0, "mAP": 0.9, "rank1": 1.0, "train_time_s": 1.0})
    summary = summarize(rows, ("mAP", "rank1"))
    noisy = next(e for e in summary if e["rate"] == 0.2)
    assert noisy["mAP_mean"] == pytest.approx(0.3) and noisy["mAP_std"] == pytest.approx(np.std([.1, .2, .6], ddof=1))
    clean = next(e for e in summary if e["rate"] == 0.0)
    assert clean["mode"] == "symmetric" and clean["n"] == 1 and clean["mAP_std"] == 0.0
    table = markdown_table(summary, ("mAP", "rank1"))
    assert "| symmetric | 0.2 | a | 3 | 30.00 ± 26.46 |" in table
    assert "| symmetric | 0 | a | 1 | 90.00 | 100.00 |" in table  # one seed: no ± 0.00


def test_real_sweep_with_pattern_noise(tiny_market_root, tmp_path):
    """Two real 2-batch trainings in worker processes (--jobs 2): the clean cell, then pattern noise from its
    confusable identities (the second phase starts once the clean reference model exists)."""
    from conftest import tiny_overrides

    out = tmp_path / "sweep"
    base = load_config(REPO / "configs" / "quickstart.yaml",
                       tiny_overrides(tiny_market_root, tmp_path / "base") + ["train.epochs=1"])
    rows = run_sweep(base, ["triplet"], [0, 0.5], ["pattern"], [0], out, progress=False, jobs=2)
    assert [(r["mode"], r["rate"]) for r in rows] == [(CLEAN, 0.0), ("pattern", 0.5)]
    assert all(r["cpu_time_s"] > 0 for r in rows)  # measured inside the worker that trained the cell
    confusable = np.load(out / "confusable.npy")
    with open(out / "triplet/pattern_r0.5/seed0/noise_manifest.csv") as fh:
        manifest = list(csv.DictReader(fh))
    wrong = [r for r in manifest if r["is_noisy"] == "1"]
    assert wrong and all(int(r["noisy_label"]) == confusable[int(r["clean_label"])] for r in wrong)
    assert all(0.0 <= r["mAP"] <= 1.0 and r["train_time_s"] > 0 for r in rows)
    assert (out / "results.md").exists() and (out / "noise_curves.png").exists()


def test_tool_collect_only_trains_nothing(tmp_path, monkeypatch):
    import importlib.util

    import reid_robust.engine.trainer as trainer

    out, calls = tmp_path / "sweep", []
    run_sweep(_base(tmp_path), ["triplet", "osm_caa"], [0, 0.4], ["symmetric"], [0], out,
              train_fn=_fake_train(calls), progress=False)
    (out / "results.csv").unlink()
    monkeypatch.setattr(trainer, "train", lambda cfg: pytest.fail("collect-only must not train"))
    spec = importlib.util.spec_from_file_location("sweep_tool", REPO / "tools" / "noise_sweep.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    # ranked_list and seed 1 were never trained: they are simply absent from the results
    assert tool.main(["--config", str(REPO / "configs" / "sweep_synthetic.yaml"), "--collect-only", "--out", str(out),
                      "--losses", "osm_caa,triplet,ranked_list", "--rates", "0,0.4", "--modes", "symmetric",
                      "--seeds", "0,1"]) == 0
    rows = read_results(out / "results.csv")
    assert len(rows) == 4 and {r["seed"] for r in rows} == {0}
    table = (out / "results.md").read_text().splitlines()
    assert [line.split(" | ")[2] for line in table[2:4]] == ["osm_caa", "triplet"]   # the order asked for


def test_without_a_terminal_each_finished_cell_is_a_log_line(tmp_path, monkeypatch, caplog):
    import logging

    import reid_robust.analysis.sweep as sweep

    monkeypatch.setattr(sweep, "interactive", lambda: False)
    calls: list = []
    with caplog.at_level(logging.INFO, logger="reid_robust"):
        run_sweep(_base(tmp_path), ["triplet"], [0, 0.2], ["symmetric"], [0], tmp_path / "s",
                  train_fn=_fake_train(calls), progress=True)
    finished = [r.message for r in caplog.records if r.message.startswith("sweep: finished")]
    assert finished == ["sweep: finished triplet/clean/seed0", "sweep: finished triplet/symmetric_r0.2/seed0"]


def test_cleaning_cells_keep_the_off_folders_and_get_their_own():
    off = build_cells(["triplet"], [0, 0.4], ["symmetric"], [0])
    cells = build_cells(["triplet"], [0, 0.4], ["symmetric"], [0], ["off", "drop", "oracle"])
    assert [c.relpath for c in cells if c.cleaning == "off"] == [c.relpath for c in off] == \
        ["triplet/clean/seed0", "triplet/symmetric_r0.4/seed0"]
    assert {c.relpath for c in cells if c.cleaning != "off"} == {
        "triplet/clean/clean-drop/seed0", "triplet/symmetric_r0.4/clean-drop/seed0",
        "triplet/symmetric_r0.4/clean-oracle/seed0"}  # no oracle at rate 0: it equals off there
    for bad in (["prune"], ["off", "off"], []):
        with pytest.raises(ValueError, match="cleaning"):
            build_cells(["triplet"], [0], ["symmetric"], [0], bad)


def test_cleaning_cell_config_sets_only_the_action_and_old_folders_stay_valid(tmp_path):
    from reid_robust.analysis.sweep import config_differences

    base = _base(tmp_path, ["train.cleaning.start_epoch=3"])
    drop = cell_config(base, Cell("triplet", "symmetric", 0.4, 0, "drop"), tmp_path)
    assert drop.train.cleaning.action == "drop" and drop.train.cleaning.start_epoch == 3
    assert drop.output_dir == str(tmp_path / "triplet/symmetric_r0.4/clean-drop/seed0")
    off = cell_config(_base(tmp_path), Cell("triplet", "symmetric", 0.4, 0), tmp_path)
    stored = off.to_dict()
    del stored["train"]["cleaning"]  # a cell trained before cleaning existed
    assert config_differences(stored, off) == []
    stored["data"].update(num_workers=2, cache_images=not off.data.cache_images)  # loading only: same cell
    assert config_differences(stored, off) == []
    stored["train"]["lr"] = off.train.lr * 2
    assert config_differences(stored, off) == ["train.lr"]
    with pytest.raises(ConfigError, match="relabel needs a classifier"):
        cell_config(_base(tmp_path, ["loss.terms=[{name: triplet}]"]), Cell("triplet", CLEAN, 0.0, 0, "relabel"),
                    tmp_path)
    # a restart belongs to the round actions; off and oracle cells run without it and stay shared
    restart = _base(tmp_path, ["train.cleaning.action=drop", "train.cleaning.restart_epochs=[4]"])
    drop_cell = cell_config(restart, Cell("triplet", "symmetric", 0.4, 0, "drop"), tmp_path)
    assert drop_cell.train.cleaning.restart_epochs == (4,)
    tuned_restart = _base(tmp_path, ["train.cleaning.action=drop", "train.cleaning.restart_epochs=[4, 9]",
                                     "train.cleaning.rate_scale=1.1", "train.cleaning.restart_rate_scale=1.0"])
    for action in ("off", "oracle"):  # every round key at its default: a stopped cell resumes under any base
        cell = cell_config(tuned_restart, Cell("triplet", "symmetric", 0.4, 0, action), tmp_path)
        assert cell.train.cleaning == CleaningConfig(action=action)
    stored["train"]["lr"] = off.train.lr
    tuned = _base(tmp_path, ["train.cleaning.action=drop", "train.cleaning.restart_epochs=[4, 9]",
                             "train.cleaning.rate_scale=1.1", "train.cleaning.start_epoch=3"])
    assert config_differences(stored, cell_config(tuned, Cell("triplet", "symmetric", 0.4, 0), tmp_path)) == []
    stored["train"]["cleaning"] = {"action": "drop", "rate_scale": 1.1}
    assert config_differences(stored, off) == ["train.cleaning.action"]
    assert config_differences(stored, drop) == ["train.cleaning.rate_scale", "train.cleaning.start_epoch"]


def _fake_train_with_cleaning(calls: list):
    """``_fake_train`` plus a cleaning.csv for cells that clean (two rounds; the table reads the last)."""
    plain = _fake_train(calls)

    def train(cfg: Config) -> dict:
        metrics = plain(cfg)
        if cfg.train.cleaning.action in ("drop", "relabel", "weight"):
            (Path(cfg.output_dir) / "cleaning.csv").write_text(
                "round,epoch,rate,precision,recall\n1,4,0.1,0.5,0.2\n2,6,0.25,0.8,0.6\n")
        return metrics
    return train


def test_sweep_table_shows_each_loss_with_and_without_cleaning(tmp_path):
    out, calls = tmp_path / "sweep", []
    rows = run_sweep(_base(tmp_path), ["triplet"], [0, 0.4], ["symmetric"], [0], out,
                     train_fn=_fake_train_with_cleaning(calls), progress=False, cleanings=["off", "drop", "oracle"])
    assert len(rows) == len(calls) == 5
    drop = next(r for r in rows if r["cleaning"] == "drop" and r["rate"] == 0.4)
    assert (drop["clean_precision"], drop["clean_recall"], drop["clean_rate"]) == (0.8, 0.6, 0.25)
    oracle = next(r for r in rows if r["cleaning"] == "oracle")
    assert oracle["clean_precision"] is None and oracle["run_dir"] == "triplet/symmetric_r0.4/clean-oracle/seed0"
    saved = read_results(out / "results.csv")
    assert [r["cleaning"] for r in saved] == [r["cleaning"] for r in rows]
    table = (out / "results.md").read_text()
    assert "| mode | noise rate | loss | cleaning | seeds | mAP (%) | rank1 (%) | flagged (%) | precision (%) | " \
           "recall (%) |" in table
    assert "| symmetric | 0.4 | triplet | drop | 1 | 60.00 | 70.00 | 25.00 | 80.00 | 60.00 |" in table
    assert "| symmetric | 0.4 | triplet | off | 1 | 60.00 | 70.00 |  |  |  |" in table
    assert "| symmetric | 0 | triplet | drop | 1 | 80.00 | 90.00 | 25.00 | 80.00 | 60.00 |" in table
