"""Progress of the long steps without a terminal (a log line about every LOG_INTERVAL_S seconds, here 0): the
evaluation protocols, re-ranking, training steps; silent when switched off, and the results unchanged."""
from __future__ import annotations

import logging

import numpy as np
import pytest

import reid_robust.progress as progress_lib
from reid_robust.evaluation import evaluate_reid, evaluate_retrieval
from reid_robust.evaluation.rerank import iter_rerank_blocks


@pytest.fixture
def no_terminal(monkeypatch, caplog):
    """No tty, a log line at every item, INFO records of the ``reid_robust`` logger captured."""
    monkeypatch.setattr(progress_lib, "interactive", lambda: False)
    monkeypatch.setattr(progress_lib, "LOG_INTERVAL_S", 0.0)
    monkeypatch.setattr(logging.getLogger("reid_robust"), "propagate", True)  # a train() before turns it off
    caplog.set_level(logging.INFO, logger="reid_robust")
    return caplog


def lines(caplog, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


def reid_data(num_query: int = 10, num_gallery: int = 30, dim: int = 8):
    rng = np.random.default_rng(0)
    qf, gf = rng.normal(size=(num_query, dim)), rng.normal(size=(num_gallery, dim))
    q_pids, g_pids = np.arange(num_query) % 5 + 1, np.arange(num_gallery) % 5 + 1
    return qf, gf, q_pids, g_pids, np.zeros(num_query, int), np.ones(num_gallery, int)


@pytest.mark.parametrize("options", [{}, {"rerank": True, "rerank_params": {"k1": 4, "k2": 2}}],
                         ids=["exact", "rerank"])
def test_evaluate_reid_logs_its_query_blocks_only_when_asked(no_terminal, options):
    data = reid_data()
    silent = evaluate_reid(*data, block_size=3, **options)  # the library default: off
    assert not no_terminal.records
    shown = evaluate_reid(*data, block_size=3, progress=None, **options)
    assert shown == silent
    what = "re-ranking 10 queries" if options else "evaluating 10 queries"
    assert [m.split(" (")[0] for m in lines(no_terminal, what)] == [f"{what}: {k}/4 block" for k in range(1, 5)] + [
        f"{what}: done, 4 block in 0 s"]
    if options:
        assert lines(no_terminal, "re-ranking: neighbours of 40 items: done")


def test_evaluate_retrieval_logs_its_query_blocks(no_terminal):
    rng = np.random.default_rng(1)
    feats, labels = rng.normal(size=(12, 8)), np.arange(12) % 4
    silent = evaluate_retrieval(feats, labels, compute_nmi=False, block_size=5)
    assert not no_terminal.records
    shown = evaluate_retrieval(feats, labels, compute_nmi=False, block_size=5, progress=None)
    assert {k: v for k, v in shown.items() if k != "nmi"} == {k: v for k, v in silent.items() if k != "nmi"}
    assert [m.split(" (")[0] for m in lines(no_terminal, "evaluating 12 queries")][:3] == [
        "evaluating 12 queries: 1/3 block", "evaluating 12 queries: 2/3 block", "evaluating 12 queries: 3/3 block"]


def test_rerank_blocks_are_the_same_with_progress(no_terminal):
    qf, gf, *_ = reid_data()
    quiet = [d.copy() for _, _, d in iter_rerank_blocks(qf, gf, k1=4, k2=2, block_size=4)]
    assert not no_terminal.records
    shown = [d.copy() for _, _, d in iter_rerank_blocks(qf, gf, k1=4, k2=2, block_size=4, progress=True)]
    for a, b in zip(quiet, shown, strict=True):
        np.testing.assert_array_equal(a, b)
    assert len(lines(no_terminal, "re-ranking: neighbours of 40 items: ")) == 10 + 1  # 10 blocks of 4, the end
    assert len(lines(no_terminal, "re-ranking 10 queries: ")) == 3 + 1


def test_training_steps_log_step_total_and_values_without_a_terminal(no_terminal):
    from reid_robust.engine.logs import LoggedSteps, progress_bar

    batches = ["a", "b", "c"]
    assert progress_bar(batches, "epoch 1/2", False, 0, 5) is batches  # train.progress=false: nothing
    bar = progress_bar(iter(batches), "epoch 1/2", True, 2, 5)  # resumed at step 2 of 5
    assert isinstance(bar, LoggedSteps)
    for k, _ in enumerate(bar):
        bar.set_postfix({"loss": f"{1.5 - k:.3f}", "img/s": "812.4"})
    assert lines(no_terminal, "epoch 1/2") == ["epoch 1/2: step 3/5  loss=1.500  img/s=812.4",
                                               "epoch 1/2: step 4/5  loss=0.500  img/s=812.4",
                                               "epoch 1/2: step 5/5  loss=-0.500  img/s=812.4"]


def test_training_steps_are_logged_at_the_interval_only(no_terminal, monkeypatch):
    from reid_robust.engine import logs

    clock = iter([0.0, 10.0, 31.0, 40.0, 62.0])
    monkeypatch.setattr(logs.time, "monotonic", lambda: next(clock))
    bar = logs.LoggedSteps(range(4), "epoch 2/3", 0, 4, interval_s=30.0)
    for _ in bar:
        bar.set_postfix({"loss": "1.000"})
    assert lines(no_terminal, "epoch 2/3") == ["epoch 2/3: step 2/4  loss=1.000", "epoch 2/3: step 4/4  loss=1.000"]


def test_a_training_run_without_a_terminal_logs_its_steps(no_terminal, tiny_market_root, tmp_path):
    """train() in a batch job: train.log holds the step lines; train.progress=false leaves them out."""
    from conftest import REPO, tiny_overrides

    from reid_robust.config import load_config
    from reid_robust.engine.trainer import train

    for shown in (True, False):
        out = tmp_path / f"run_{shown}"
        overrides = tiny_overrides(tiny_market_root, out) + ["train.epochs=1", f"train.progress={str(shown).lower()}"]
        train(load_config(REPO / "configs/quickstart.yaml", overrides))
        logged = (out / "train.log").read_text(encoding="utf-8")
        assert ("epoch 1/1: step 2/2  " in logged) is shown
        assert ("img/s=" in logged and "loss=" in logged.split("epoch 1/1: step 2/2")[-1]) is shown


@pytest.mark.parametrize("extra", [[], ["--rerank", "--k1", "4", "--k2", "2"]], ids=["exact", "rerank"])
def test_reid_eval_shows_evaluation_progress_on_stderr_unless_no_progress(no_terminal, tmp_path, capsys, extra):
    """The command's log lines reach stderr (they would go nowhere without a handler); --no-progress: none."""
    from reid_robust.cli import eval as tool
    from reid_robust.evaluation.report import FeatureSet, save_features

    qf, gf, q_pids, g_pids, q_cams, g_cams = reid_data(num_query=300, num_gallery=40)
    save_features(tmp_path / "q.npz", FeatureSet(qf, q_pids, q_cams))
    save_features(tmp_path / "g.npz", FeatureSet(gf, g_pids, g_cams))
    args = ["--query", str(tmp_path / "q.npz"), "--gallery", str(tmp_path / "g.npz"), *extra]
    what = "re-ranking 300 queries" if extra else "evaluating 300 queries"
    assert tool.main(args) == 0
    err = capsys.readouterr().err
    assert f"{what}: 1/" in err and f"{what}: done" in err
    assert tool.main(args + ["--no-progress"]) == 0
    assert what not in capsys.readouterr().err


def test_audit_scoring_shows_its_batched_passes(no_terminal):
    """suspicion_scores: the neighbourhood blocks and PRISM's PK passes; the scores are the same silent."""
    import torch

    from reid_robust.cleaning.scoring import suspicion_scores
    from reid_robust.engine.builders import LossTerm
    from reid_robust.losses import build_loss

    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(6), 8)
    feats = torch.as_tensor(rng.normal(size=(48, 6)).astype(np.float32))
    term = LossTerm("prism", 1.0, "feat", build_loss("prism", num_classes=6, embedding_dim=6, memory_size=64))
    outputs = {"feat": feats, "bn_feat": feats}
    silent = suspicion_scores(outputs, labels, [term], 3, 4, passes=3)
    assert not no_terminal.records
    shown = suspicion_scores(outputs, labels, [term], 3, 4, passes=3, progress=None)
    for key in silent:
        np.testing.assert_array_equal(silent[key], shown[key])
    assert [m.split(" (")[0] for m in lines(no_terminal, "reliability of 48 images")] == [
        "reliability of 48 images"] * 4  # three passes and the end
    assert lines(no_terminal, "reliability of 48 images (prism): 3/3 pass")
    assert lines(no_terminal, "neighbourhood scores of 48 images: done, 1 block")
