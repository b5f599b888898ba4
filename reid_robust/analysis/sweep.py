"""A loss x noise-mode x noise-rate x seed sweep: one training run per cell, resumable, one results table.

Fairness rule: every cell trains the base config unchanged (backbone, epochs, schedule, sampler, the
``cross_entropy`` term(s); a cleaning cell's ``train.cleaning`` too, whose restarts add epochs: a budget the
table states) except for three things: the seed, the label noise (rate, mode, noise seed = the
cell's seed, so all losses of one seed see the same wrong labels) and the *metric term*, which is replaced by
the cell's loss. The metric term keeps the weight and input of the config's active metric term (the first
non-cross-entropy term with a non-zero weight). Its parameters come from the config's ``sweep.presets``
section (``{loss name: {parameter: value}}``); the active term's own parameters are the preset of its loss
(``sweep.presets`` can override some of them); any other loss gets its defaults.

Classification losses (``CLASSIFICATION_LOSSES``: DM, IMAE, ProSelfLC, which reweight or correct the ID loss
rather than pairs) swap places: such a cell keeps the config's metric term unchanged and replaces the
``cross_entropy`` term(s) by the cell's loss, with the same weight and input, so that every cell has one
metric term and one classifier.

A cell is finished when its ``metrics.json`` exists (the trainer writes it atomically at the very end);
restarting the sweep skips finished cells and resumes an interrupted one from its ``checkpoints/last.pth``,
but only when the config stored there (else in the cell's ``config.yaml``) is that cell's config, up to the
keys in ``RUN_KEYS`` and paths made absolute: a sweep rerun with another base config into the same folder is
refused before any training, naming the keys that differ. Rate 0 is trained once per (loss, seed) (mode
``clean``) and shared by every noise mode.

Cleaning is a dimension too (``CLEANINGS``): ``off`` cells train with ``train.cleaning.action=off`` in today's
folders (``<loss>/<mode>_r<rate>/seed<k>``), so existing sweeps stay valid; ``drop``, ``relabel`` and ``weight``
cells take that action, the other ``train.cleaning`` keys from the base config, in
``<loss>/<mode>_r<rate>/clean-<action>/seed<k>``; ``oracle`` cells train without the images whose injected
label is wrong (the upper bound of perfect cleaning; it reads the truth, so it is a baseline, not a method, and
is not trained at rate 0 where it equals ``off``). ``off`` and ``oracle`` cells run no round, so the other
``train.cleaning`` keys (rate_scale, restart_epochs, ...) do not apply to them: a sweep that tunes those keys
shares these cells with one that does not. Each cell's cleaning precision and recall are read from the last
row of its ``cleaning.csv``.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import os
import resource
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from reid_robust.atomic import atomic_write_text
from reid_robust.config import Config
from reid_robust.config.sections import ROUND_ACTIONS, CleaningConfig
from reid_robust.progress import interactive

log = logging.getLogger("reid_robust")

KEPT_TERMS = ("cross_entropy",)
CLASSIFICATION_LOSSES = ("dm", "imae", "proselflc", "mae", "gce", "sce")  # replace the cross-entropy term, not the metric term
CLEAN = "clean"
CLEANINGS = ("off", "drop", "relabel", "weight", "oracle")
REID_METRICS = ("mAP", "rank1")
RETRIEVAL_METRICS = ("recall@1", "map_at_r")
# keys that say how a run is driven, not what it trains (loading is seeded per image: workers and the cache give
# the same run): they may differ between a cell's stored config and now
RUN_KEYS = ("output_dir", "train.resume", "train.overwrite", "train.progress", "train.num_threads",
            "data.num_workers", "data.cache_images")
CLEANING_RESULTS = ("clean_precision", "clean_recall", "clean_rate")  # the last round of a cell's cleaning.csv
RESULT_COLUMNS = ("loss", "mode", "rate", "seed", "cleaning", "mAP", "rank1", "recall@1", "map_at_r", "train_time_s",
                  "cpu_time_s", "realised_rate", *CLEANING_RESULTS, "run_dir")


@dataclass(frozen=True)
class Cell:
    """One training run of the sweep."""

    loss: str
    mode: str   # a noise mode, or "clean" for rate 0
    rate: float
    seed: int
    cleaning: str = "off"  # one of CLEANINGS

    @property
    def relpath(self) -> str:
        noise = CLEAN if self.mode == CLEAN else f"{self.mode}_r{self.rate:g}"
        cleaning = "" if self.cleaning == "off" else f"clean-{self.cleaning}/"
        return f"{self.loss}/{noise}/{cleaning}seed{self.seed}"


def build_cells(losses: Sequence[str], rates: Sequence[float], modes: Sequence[str], seeds: Sequence[int],
                cleanings: Sequence[str] = ("off",)) -> list[Cell]:
    """All cells, clean ones first (the pattern mode needs a clean model); rate 0 appears once per (loss, seed,
    cleaning), without ``oracle`` (no wrong label to leave out)."""
    if not losses or not rates or not modes or not seeds or not cleanings:
        raise ValueError("a sweep needs at least one loss, rate, mode, seed and cleaning")
    unknown = [c for c in cleanings if c not in CLEANINGS]
    if unknown or len(set(cleanings)) != len(cleanings):
        raise ValueError(f"cleanings must be distinct names among {', '.join(CLEANINGS)}, got {list(cleanings)}")
    for rate in rates:
        if not 0.0 <= float(rate) <= 1.0:
            raise ValueError(f"noise rate must be in [0, 1], got {rate}")
    if len(set(losses)) != len(losses):
        raise ValueError(f"losses listed twice: {list(losses)}")
    cells = []
    if any(float(r) == 0.0 for r in rates):
        cells += [Cell(loss, CLEAN, 0.0, int(s), c) for c in cleanings if c != "oracle" for s in seeds
                  for loss in losses]
    for mode in modes:
        for rate in sorted(float(r) for r in rates if float(r) > 0):
            cells += [Cell(loss, mode, rate, int(s), c) for c in cleanings for s in seeds for loss in losses]
    return cells


def split_loss_terms(cfg: Config) -> tuple[list[dict], dict, dict[str, dict]]:
    """``(kept cross-entropy terms, active metric term, presets by loss name)`` of a config, each term in its
    YAML form ``{"name", "weight", "input", **parameters}``; each preset is ``{"name": ..., **parameters}``."""
    terms = [t.to_dict() for t in cfg.loss.terms]
    kept = [t for t in terms if t["name"] in KEPT_TERMS]
    active = [t for t in terms if t["name"] not in KEPT_TERMS and float(t["weight"]) != 0.0]
    if not active:
        raise ValueError("the sweep replaces the config's metric term, but loss.terms has no non-cross-entropy "
                         f"term with a non-zero weight: {[t['name'] for t in terms]}")
    own = {k: v for k, v in active[0].items() if k not in ("weight", "input")}
    presets: dict[str, dict] = {active[0]["name"]: own}
    for name, params in cfg.sweep.presets.items():
        presets[name] = {**presets.get(name, {"name": name}), **params}
    return kept, active[0], presets


def cell_terms(base: Config, loss: str) -> list[dict]:
    """The loss terms of a cell training ``loss`` (see the module docstring)."""
    kept, active, presets = split_loss_terms(base)
    swept = dict(presets.get(loss, {"name": loss}))
    if loss in CLASSIFICATION_LOSSES:
        if not kept:
            raise ValueError(f"'{loss}' replaces the config's cross_entropy term, but loss.terms has none: "
                             f"{[t.name for t in base.loss.terms]}")
        return [active] + [{**swept, "weight": float(t["weight"]), "input": t["input"]} for t in kept]
    return [{**swept, "weight": float(active["weight"]), "input": active["input"]}] + kept


def cell_config(base: Config, cell: Cell, out_root: str | os.PathLike, confusable: str | None = None) -> Config:
    """The resolved config of one cell (see the module docstring for what changes between cells)."""
    from reid_robust.config import with_overrides
    from reid_robust.losses import LOSSES

    if cell.loss not in LOSSES:
        raise ValueError(f"unknown loss '{cell.loss}' in the sweep; valid names: {', '.join(sorted(LOSSES))}")
    if cell.loss in KEPT_TERMS:
        raise ValueError(f"'{cell.loss}' is the kept classification term, not a metric loss to sweep")
    if cell.mode == "pattern" and not confusable:
        raise ValueError(f"cell {cell.relpath}: pattern noise needs the confusable identities of a clean model")
    output_dir = Path(out_root) / cell.relpath
    last = output_dir / "checkpoints" / "last.pth"
    overrides = {"loss.terms": cell_terms(base, cell.loss), "seed": int(cell.seed),
                 "data.noise.rate": float(cell.rate), "data.noise.seed": int(cell.seed), "data.noise.list": None,
                 "data.noise.mode": "symmetric" if cell.mode == CLEAN else cell.mode,
                 "data.noise.confusable": confusable if cell.mode == "pattern" else None,
                 "train.cleaning.action": cell.cleaning, "output_dir": str(output_dir), "train.progress": False,
                 "train.resume": str(last) if last.is_file() else None}
    if cell.cleaning not in ROUND_ACTIONS:  # off, oracle: no round, so the round keys take their defaults (the
        defaults = CleaningConfig().to_dict()  # cells stay shared, and a stopped one resumes under any base)
        overrides.update({f"train.cleaning.{key}": value for key, value in defaults.items() if key != "action"})
    return with_overrides(base, overrides, f"sweep cell {cell.relpath}")


def _cpu_seconds() -> float:
    """CPU seconds (user + system) of this process and its finished children: the cost on a shared machine."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def is_finished(out_root: str | os.PathLike, cell: Cell) -> bool:
    return (Path(out_root) / cell.relpath / "metrics.json").is_file()


def _same(stored: Any, now: Any) -> bool:
    """Equal values, or two spellings of one path (the trainer stores data and file paths made absolute)."""
    if stored == now:
        return True
    if isinstance(stored, str) and isinstance(now, str) and stored and now:
        return Path(stored).expanduser().resolve() == Path(now).expanduser().resolve()
    return False


def config_differences(stored: Mapping, cfg: Config) -> list[str]:
    """Dotted keys (not in ``RUN_KEYS``) whose value differs between a stored run config (a plain mapping,
    read like a checkpoint's: keys it lacks take their defaults) and ``cfg``; the round keys of
    ``train.cleaning`` do not count for a run without rounds (action ``off`` or ``oracle``)."""
    from reid_robust.config import config_from_mapping
    from reid_robust.config.loader import flatten

    old = flatten(config_from_mapping(stored, "stored cell config", lambda _: None).to_dict())
    new = flatten(cfg.to_dict())
    unused = "train.cleaning." if cfg.train.cleaning.action not in ROUND_ACTIONS else None  # keys of the rounds
    return [key for key in sorted(set(old) | set(new))
            if key not in RUN_KEYS and not (unused and key.startswith(unused) and key != "train.cleaning.action")
            and not _same(old.get(key, "<absent>"), new.get(key, "<absent>"))]


def stored_config(cell_dir: str | os.PathLike) -> tuple[dict | None, Path | None]:
    """``(config, file)`` a cell folder was trained with: its ``checkpoints/last.pth``'s (read without running
    code), else its ``config.yaml``; ``(None, None)`` when it holds neither."""
    import yaml

    from reid_robust.engine.checkpoint import load_checkpoint

    cell_dir = Path(cell_dir)
    last, saved = cell_dir / "checkpoints" / "last.pth", cell_dir / "config.yaml"
    if last.is_file():
        return dict(load_checkpoint(last)["config"]), last
    if saved.is_file():
        try:
            cfg = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ValueError(f"{saved} cannot be read as YAML ({type(exc).__name__})") from None
        if not isinstance(cfg, dict):
            raise ValueError(f"{saved} is not a config (a mapping of sections)")
        return cfg, saved
    return None, None


def check_cell_config(cfg: Config, cell: Cell) -> None:
    """Refuse in one line a cell folder whose stored config (:func:`stored_config`) is not ``cfg``."""
    stored, source = stored_config(cfg.output_dir)
    if stored is None:
        return
    differing = config_differences(stored, cfg)
    if differing:
        shown = ", ".join(differing[:8]) + (f" and {len(differing) - 8} more" if len(differing) > 8 else "")
        raise ValueError(f"sweep cell {cell.relpath} was trained with another config ({source}) than this sweep "
                         f"gives it; differing keys: {shown}. Use another --out for this sweep, or move the "
                         "cell's folder away to train it anew")


def compute_confusable(checkpoint: str | os.PathLike, cfg: Config, path: str | os.PathLike) -> Path:
    """Most confusable identity of each training identity from a clean-trained checkpoint, saved as ``.npy``
    (the training images embedded through :class:`reid_robust.engine.embed.Embedder`)."""
    from reid_robust.atomic import atomic_write
    from reid_robust.data.noise import confusable_identities
    from reid_robust.engine.builders import build_dataset_from_config
    from reid_robust.engine.embed import Embedder

    embedder = Embedder.from_checkpoint(checkpoint, cfg.device, batch_size=cfg.data.test_batch_size,
                                        num_workers=cfg.data.num_workers, progress=None if cfg.train.progress else False)
    train = embedder.embed_records(build_dataset_from_config(cfg.data).train, "training images")
    confusable = confusable_identities(train.feats, train.labelled())
    atomic_write(path, lambda fh: np.save(fh, confusable, allow_pickle=False))
    return Path(path)


def _train_cell(cfg: Config, train_fn: Callable[[Config], dict] | None, num_threads: int, quiet: bool) -> str:
    """Train one cell (in this process or a worker) and record its CPU and wall time next to its metrics."""
    import contextlib

    import torch

    if train_fn is None:
        from reid_robust.engine.trainer import train
        train_fn = train
    if num_threads:
        torch.set_num_threads(num_threads)
    cpu0, wall0 = _cpu_seconds(), time.time()
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        train_fn(cfg)  # a worker's per-epoch log still goes to the cell's train.log
    cell_dir = Path(cfg.output_dir)
    cell_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(cell_dir / "cell_time.json", json.dumps(
        {"cpu_time_s": round(_cpu_seconds() - cpu0, 1), "wall_time_s": round(time.time() - wall0, 1)}))
    return str(cell_dir)


def run_sweep(base: Config, losses: Sequence[str], rates: Sequence[float], modes: Sequence[str],
              seeds: Sequence[int], out_root: str | os.PathLike,
              train_fn: Callable[[Config], dict] | None = None, progress: bool = True, jobs: int = 1,
              cleanings: Sequence[str] = ("off",)) -> list[dict]:
    """Train every unfinished cell, then write ``results.csv``, ``results.md`` and ``noise_curves.png``.

    Returns the result rows. ``train_fn`` defaults to ``reid_robust.engine.trainer.train``. ``jobs > 1``
    trains that many cells at once in worker processes, each with ``cores // jobs`` threads (unless the
    config sets ``train.num_threads``): small CPU models use many cores far better as parallel runs than as
    threads of one run. Pattern-noise cells start once the clean reference cell is done.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    grid = build_cells(losses, rates, modes, seeds, cleanings)
    cells = list(grid)
    for loss in losses:  # fail before any training on an unknown loss, a config without a metric term or a
        for cleaning in cleanings:  # cleaning it cannot do (relabel without a classifier term)
            cell_config(base, Cell(loss, CLEAN, 0.0, int(seeds[0]), cleaning), out_root)
    confusable_path = out_root / "confusable.npy"
    reference = Cell(losses[0], CLEAN, 0.0, int(seeds[0]))  # cleaning off
    if "pattern" in modes and reference not in cells:
        cells.insert(0, reference)  # a dedicated clean run for the confusable identities only
    for cell in cells:  # finished and interrupted cells alike: before any training
        check_cell_config(cell_config(base, cell, out_root, str(confusable_path)), cell)
    todo = [c for c in cells if not is_finished(out_root, c)]
    log.info("sweep: %d cells, %d finished, %d to train (%d at a time), results in %s", len(cells),
             len(cells) - len(todo), len(todo), jobs, out_root)
    bar = None
    if progress and interactive():  # without a terminal, each finished cell is a log line (see finished())
        from tqdm.auto import tqdm
        bar = tqdm(total=len(cells), initial=len(cells) - len(todo), desc="sweep", unit="cell", dynamic_ncols=True)
    threads = base.train.num_threads or (max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else 0)

    def config_of(cell: Cell) -> Config:
        confusable = None
        if cell.mode == "pattern":
            if not confusable_path.is_file():
                compute_confusable(out_root / reference.relpath / "checkpoints" / "last.pth",
                                   cell_config(base, reference, out_root), confusable_path)
            confusable = str(confusable_path)
        return cell_config(base, cell, out_root, confusable)

    def finished(cell: Cell) -> None:
        if bar is not None:
            bar.set_postfix_str(cell.relpath)
            bar.update(1)
        elif progress:
            log.info("sweep: finished %s", cell.relpath)
        write_results(collect_results(out_root, grid), out_root, plot=False, loss_order=losses)

    # two phases: everything but pattern noise, then pattern noise (it needs the clean reference model)
    phases = [[c for c in todo if c.mode != "pattern"], [c for c in todo if c.mode == "pattern"]]
    try:
        if jobs == 1:
            for cell in phases[0] + phases[1]:
                if bar is not None:
                    bar.set_postfix_str(cell.relpath)
                _train_cell(config_of(cell), train_fn, threads, quiet=False)
                finished(cell)
        else:
            _train_in_workers(phases, config_of, train_fn, threads, jobs, finished)
    finally:
        if bar is not None:
            bar.close()
    rows = collect_results(out_root, grid)
    write_results(rows, out_root, plot=True, loss_order=losses)
    return rows


def _train_in_workers(phases: Sequence[Sequence[Cell]], config_of: Callable[[Cell], Config],
                      train_fn: Callable[[Config], dict] | None, threads: int, jobs: int,
                      finished: Callable[[Cell], None]) -> None:
    """Train the cells of each phase in ``jobs`` spawned worker processes; ``finished(cell)`` after each."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")  # no fork of a process holding OpenMP/torch threads
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        for phase in phases:
            running = {pool.submit(_train_cell, config_of(c), train_fn, threads, True): c for c in phase}
            try:
                while running:
                    done, _ = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        cell = running.pop(future)
                        future.result()  # a failed (or Ctrl-C'd) cell stops the sweep with its error
                        finished(cell)
            except BaseException:
                # Ctrl-C or a failed cell: cells not started yet are dropped; the running ones end
                # (on Ctrl-C each saves its checkpoint) before the pool closes; a restart resumes them
                for future in running:
                    future.cancel()
                raise


def collect_results(out_root: str | os.PathLike, cells: Sequence[Cell]) -> list[dict]:
    """One row per finished cell, read from its ``metrics.json`` (the last checkpoint's test metrics)."""
    rows = []
    for cell in cells:
        path = Path(out_root) / cell.relpath / "metrics.json"
        if not path.is_file():
            continue
        m = json.loads(path.read_text(encoding="utf-8"))
        row: dict[str, Any] = {"loss": cell.loss, "mode": cell.mode, "rate": cell.rate, "seed": cell.seed,
                               "cleaning": cell.cleaning}
        for key in REID_METRICS + RETRIEVAL_METRICS:
            row[key] = float(m[key]) if m.get(key) is not None else None
        row["train_time_s"] = m.get("train_time_s")
        timing = path.parent / "cell_time.json"
        row["cpu_time_s"] = json.loads(timing.read_text(encoding="utf-8")).get("cpu_time_s") \
            if timing.is_file() else None
        row["realised_rate"] = (m.get("noise") or {}).get("realised_rate")
        row.update(last_cleaning_round(path.parent / "cleaning.csv"))
        row["run_dir"] = cell.relpath
        rows.append(row)
    return rows


def last_cleaning_round(path: Path) -> dict[str, float | None]:
    """``clean_precision``, ``clean_recall`` and ``clean_rate`` (the share flagged) of the last round in a cell's
    ``cleaning.csv``; None where there is no such file, no round or no manifest (empty fields)."""
    found: dict[str, float | None] = dict.fromkeys(CLEANING_RESULTS)
    if not path.is_file():
        return found
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows:
        last = rows[-1]
        for key, column in zip(CLEANING_RESULTS, ("precision", "recall", "rate")):
            found[key] = float(last[column]) if last.get(column) else None
    return found


def protocol_metrics(rows: Sequence[dict]) -> tuple[str, ...]:
    """``(mAP, rank1)`` for ReID results, ``(recall@1, map_at_r)`` for retrieval results."""
    if any(r.get("mAP") is not None for r in rows):
        return REID_METRICS
    return RETRIEVAL_METRICS


def expand_clean(rows: Sequence[dict]) -> list[dict]:
    """Rows with every ``clean`` row repeated as rate 0 of each noise mode present (for tables and curves)."""
    modes = sorted({r["mode"] for r in rows if r["mode"] != CLEAN})
    out = [r for r in rows if r["mode"] != CLEAN]
    for r in rows:
        if r["mode"] == CLEAN:
            out += [{**r, "mode": mode} for mode in (modes or [CLEAN])]
    return out


def summarize(rows: Sequence[dict], metrics: Sequence[str], loss_order: Sequence[str] = ()) -> list[dict]:
    """Mean and sample standard deviation (ddof=1; 0 for one seed) over seeds per (loss, mode, rate).

    Entries are sorted by mode, rate, then ``loss_order`` (losses not in it follow in order of appearance)."""
    groups: dict[tuple, list[dict]] = {}
    for r in expand_clean(rows):
        groups.setdefault((r["mode"], r["loss"], r["rate"], r.get("cleaning") or "off"), []).append(r)
    out = []
    for (mode, loss, rate, cleaning), members in groups.items():
        entry: dict[str, Any] = {"loss": loss, "mode": mode, "rate": rate, "cleaning": cleaning, "n": len(members)}
        for key in list(metrics) + ["train_time_s", "cpu_time_s", *CLEANING_RESULTS]:
            values = np.array([m[key] for m in members if m.get(key) is not None], dtype=np.float64)
            entry[f"{key}_mean"] = float(values.mean()) if values.size else float("nan")
            entry[f"{key}_std"] = float(values.std(ddof=1)) if values.size > 1 else 0.0
        out.append(entry)
    loss_order = list(dict.fromkeys(list(loss_order) + [r["loss"] for r in rows]))
    out.sort(key=lambda e: (e["mode"], e["rate"], loss_order.index(e["loss"]), CLEANINGS.index(e["cleaning"])))
    return out


def markdown_table(summary: Sequence[dict], metrics: Sequence[str]) -> str:
    """A Markdown table: one row per (mode, rate, loss), metrics in percent as mean ± std over seeds (the mean
    alone for a single seed)."""
    cleaning = any(e.get("cleaning", "off") != "off" for e in summary)
    head = ["mode", "noise rate", "loss"] + (["cleaning"] if cleaning else []) + ["seeds"]
    head += [f"{m} (%)" for m in metrics] + (["flagged (%)", "precision (%)", "recall (%)"] if cleaning else [])
    head += ["train time (s)", "CPU time (s)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for e in summary:
        cells = [e["mode"], f"{e['rate']:g}", e["loss"]] + ([e["cleaning"]] if cleaning else []) + [str(e["n"])]
        # one seed has no spread: the mean alone (the CSV and the plot keep std 0)
        cells += [_percent(e, m) for m in metrics]
        if cleaning:  # the last cleaning round of each cell (empty: no round, no manifest, or cleaning off)
            cells += [_percent(e, m) for m in ("clean_rate", "clean_precision", "clean_recall")]
        cells.append(f"{e['train_time_s_mean']:.0f}")
        cpu = e.get("cpu_time_s_mean", float("nan"))
        cells.append("" if np.isnan(cpu) else f"{cpu:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _percent(entry: dict, key: str) -> str:
    """``mean ± std`` in percent (the mean alone for one seed); empty when no cell has the value."""
    mean, std = entry[f"{key}_mean"], entry[f"{key}_std"]
    if np.isnan(mean):
        return ""
    return f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if entry["n"] > 1 else "")


def write_results(rows: Sequence[dict], out_root: str | os.PathLike, plot: bool = True,
                  loss_order: Sequence[str] = ()) -> dict[str, Path]:
    """Write ``results.csv`` (one row per cell), ``results.md`` and, with ``plot``, ``noise_curves.png``."""
    out_root = Path(out_root)
    written = {"csv": out_root / "results.csv"}
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=RESULT_COLUMNS)
    writer.writeheader()
    for r in rows:
        writer.writerow({k: ("" if r.get(k) is None else r[k]) for k in RESULT_COLUMNS})
    atomic_write_text(written["csv"], text.getvalue())
    if not rows:
        return written
    metrics = protocol_metrics(rows)
    summary = summarize(rows, metrics, loss_order)
    written["md"] = out_root / "results.md"
    atomic_write_text(written["md"], markdown_table(summary, metrics))
    if plot:
        from reid_robust.analysis.plots import plot_noise_curves
        # a loss with cleaning is its own curve: "osm_caa + drop" beside "osm_caa"
        curves = [{**e, "loss": e["loss"] if e["cleaning"] == "off" else f"{e['loss']} + {e['cleaning']}"}
                  for e in summary]
        written["png"] = plot_noise_curves(curves, metrics[0], out_root / "noise_curves.png")
    return written


def read_results(path: str | os.PathLike) -> list[dict]:
    """Rows of a ``results.csv`` with numbers parsed (empty fields become None)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for raw in csv.DictReader(fh):
            row: dict[str, Any] = {}
            for k, v in raw.items():
                if k in ("loss", "mode", "run_dir"):
                    row[k] = v
                elif k == "cleaning":
                    row[k] = v or "off"
                elif k == "seed":
                    row[k] = int(v)
                else:
                    row[k] = float(v) if v != "" else None
            rows.append(row)
    return rows
