"""Configs: YAML files with ``_BASE_`` inheritance, ``key=value`` overrides, validation against a schema.

Every valid key and its default lives in :data:`DEFAULTS`; a key that is not there is refused with the
closest valid key. Values are parsed as YAML (``train.epochs=1`` is an int, ``model.pretrained=null`` is
None). ``loss.terms`` is a list of ``{name, weight, input, **params}``; its parameters are checked by the
loss registry when the loss is built.
"""
from __future__ import annotations

import copy
import difflib
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from reid_robust.data.transforms import DEFAULTS as TRANSFORM_DEFAULTS

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "output_dir": "runs/default",
    "device": "auto",  # auto | cpu | cuda | cuda:N
    "data": {
        "dataset": "synthetic_market",
        "root": "datasets/synthetic_market",
        "num_workers": 2,
        "test_batch_size": 128,
        "crop_bbox": False,
        "options": {},  # extra keyword options of the dataset loader (e.g. num_identities for synthetic data)
        "noise": {"rate": 0.0, "mode": "symmetric", "seed": 0, "list": None, "confusable": None},
        "sampler": {"num_identities": 16, "num_instances": 4, "batches_per_epoch": 0},
        "transforms": copy.deepcopy(TRANSFORM_DEFAULTS),  # reid_robust/data/transforms.py documents each key
    },
    "model": {
        "backbone": "resnet50",
        "pretrained": None,
        "embedding_dim": 0,
        "last_stride": 1,
        "pooling": "avg",
        "neck": "bnneck",
        "freeze_stages": 0,
    },
    "loss": {
        "terms": [
            {"name": "triplet", "weight": 1.0, "input": "feat", "margin": 0.3},
            {"name": "cross_entropy", "weight": 1.0, "input": "bn_feat", "epsilon": 0.1},
        ],
    },
    "train": {
        "epochs": 120,
        "optimizer": "adam",
        "lr": 3.5e-4,
        "loss_lr": None,
        "weight_decay": 5e-4,
        "momentum": 0.9,
        "scheduler": "multistep",
        "milestones": [40, 70],
        "gamma": 0.1,
        "warmup_epochs": 10,
        "warmup_factor": 0.01,
        "grad_clip": 0.0,
        "amp": False,
        "resume": None,
        "overwrite": False,
        "gather_embeddings": False,
        "checkpoint_every": 1,
        "best_metric": "mAP",
        "tensorboard": False,
        "progress": True,
        "num_threads": 0,
    },
    "eval": {
        "every": 10,
        "untrained": False,
        "flip": False,
        "metric": "cosine",
        "rerank": False,
    },
    "sweep": {
        # parameters tools/noise_sweep.py gives each loss it sweeps, by loss name, e.g.
        # {osm_caa: {margin: 1.2}, ranked_list: {margin: 0.4}}; a plain training run ignores them
        "presets": {},
    },
}

# the metrics each evaluation protocol reports (reid_robust.evaluation); any of them can select best.pth
PROTOCOL_METRICS: dict[str, tuple[str, ...]] = {
    "market": ("mAP", "rank1", "rank5", "rank10", "mINP"),
    "cub": ("recall@1", "recall@2", "recall@4", "recall@8", "map_at_r", "precision_at_1", "nmi"),
}

CHOICES: dict[str, tuple | None] = {
    "device": None,  # free-form, validated when the device is created
    "data.noise.mode": ("symmetric", "pair", "pattern", "open_set"),
    "model.pooling": ("avg", "gem"),
    "model.neck": ("bnneck", "none"),
    "train.optimizer": ("sgd", "adam", "adamw"),
    "train.scheduler": ("cosine", "multistep", "constant"),
    "eval.metric": ("cosine", "euclidean"),
    "train.best_metric": PROTOCOL_METRICS["market"] + PROTOCOL_METRICS["cub"],
}
# numeric keys with a valid range: (description, test); checked when the config loads, naming the key
RANGES: dict[str, tuple[str, Callable[[float], bool]]] = {
    "seed": (">= 0", lambda v: v >= 0),
    "data.num_workers": (">= 0", lambda v: v >= 0),
    "data.test_batch_size": (">= 1", lambda v: v >= 1),
    "data.noise.rate": ("in [0, 1]", lambda v: 0.0 <= v <= 1.0),
    "data.noise.seed": (">= 0", lambda v: v >= 0),
    "data.sampler.num_identities": (">= 2 (pairs need two identities)", lambda v: v >= 2),
    "data.sampler.num_instances": (">= 1", lambda v: v >= 1),
    "data.sampler.batches_per_epoch": (">= 0 (0: one pass over the data)", lambda v: v >= 0),
    "model.embedding_dim": (">= 0 (0: the backbone's width)", lambda v: v >= 0),
    "model.last_stride": ("1 or 2", lambda v: v in (1, 2)),
    "model.freeze_stages": (">= 0", lambda v: v >= 0),
    "train.epochs": (">= 0", lambda v: v >= 0),
    "train.lr": ("> 0", lambda v: v > 0),
    "train.loss_lr": ("> 0 (or null: train.lr)", lambda v: v > 0),
    "train.weight_decay": (">= 0", lambda v: v >= 0),
    "train.momentum": ("in [0, 1)", lambda v: 0 <= v < 1),
    "train.gamma": ("in (0, 1]", lambda v: 0 < v <= 1),
    "train.warmup_epochs": (">= 0", lambda v: v >= 0),
    "train.warmup_factor": ("in (0, 1]", lambda v: 0 < v <= 1),
    "train.grad_clip": (">= 0 (0: off)", lambda v: v >= 0),
    "train.checkpoint_every": (">= 1", lambda v: v >= 1),
    "train.num_threads": (">= 0 (0: torch's default)", lambda v: v >= 0),
    "eval.every": (">= 0 (0: only after the last epoch)", lambda v: v >= 0),
}
# keys whose default is null, by the type a value must have when given
NULLABLE: dict[str, type] = {
    "model.pretrained": str, "train.resume": str, "data.noise.list": str, "data.noise.confusable": str,
    "train.loss_lr": float,
}
# keys whose value is a free-form list or mapping (not validated key by key)
OPEN_KEYS = {"loss.terms", "data.options", "data.transforms.size", "data.transforms.mean", "data.transforms.std",
             "data.transforms.erasing_scale", "data.transforms.erasing_ratio", "train.milestones", "sweep.presets"}


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and full not in OPEN_KEYS:
            out.update(_flatten(value, full + "."))
        else:
            out[full] = value
    return out


VALID_KEYS = sorted(_flatten(DEFAULTS))


def _suggest(key: str) -> str:
    candidates = VALID_KEYS + sorted({k.rsplit(".", 1)[0] for k in VALID_KEYS if "." in k})
    close = difflib.get_close_matches(key, candidates, n=1, cutoff=0.5)
    if not close:  # compare the last component only (e.g. "epohcs" inside another section)
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in VALID_KEYS}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)]
    return f" (did you mean '{close[0]}'?)" if close else ""


def _as_number(value: Any) -> Any:
    """YAML 1.1 reads ``1e-3`` (no dot) as a string: such strings become floats; anything else is unchanged."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_value(key: str, value: Any, default: Any, where: str) -> Any:
    kind: type | tuple[type, ...]
    if default is None and value is not None and key in NULLABLE:
        kind = NULLABLE[key]
        if kind is float:
            value = _as_number(value)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"{where}: '{key}' must be a number or null, got {value!r}")
            value = float(value)
        elif not isinstance(value, kind):
            raise ConfigError(f"{where}: '{key}' must be a path (a string) or null, got {value!r}")
    if key in OPEN_KEYS or default is None or value is None:
        kind = dict if isinstance(default, dict) else (list, tuple)
        if key in OPEN_KEYS and value is not None and not isinstance(value, kind):
            raise ConfigError(f"{where}: '{key}' must be a {'mapping' if kind is dict else 'list'}, got {value!r}")
        return _check_range(key, value, where)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: '{key}' must be true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: '{key}' must be an integer, got {value!r}")
    elif isinstance(default, float):
        value = _as_number(value)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
        value = float(value)
    elif isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: '{key}' must be a string, got {value!r}")
    choices = CHOICES.get(key)
    if choices and value not in choices:
        raise ConfigError(f"{where}: '{key}' must be one of {', '.join(choices)}; got {value!r}")
    return _check_range(key, value, where)


def _check_range(key: str, value: Any, where: str) -> Any:
    rule = RANGES.get(key)
    if rule is not None and value is not None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: '{key}' must be a number, got {value!r}")
        if not rule[1](value):
            raise ConfigError(f"{where}: '{key}' must be {rule[0]}, got {value!r}")
    return value


def _set(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _open_mapping_prefix(key: str, defaults: dict[str, Any]) -> str | None:
    """The free-form mapping key (``data.options``, ``sweep.presets``) that ``key`` reaches inside, if any."""
    for prefix in OPEN_KEYS:
        if isinstance(defaults.get(prefix), dict) and key.startswith(prefix + ".") and len(key) > len(prefix) + 1:
            return prefix
    return None


def _merge_flat(cfg: dict, flat: dict[str, Any], where: str) -> None:
    defaults = _flatten(DEFAULTS)
    for key, value in flat.items():
        if isinstance(value, dict) and key not in defaults and any(k.startswith(key + ".") for k in defaults):
            # a whole section given as a mapping (data.sampler={num_instances: 8}): its keys one by one
            _merge_flat(cfg, _flatten(value, key + "."), where)
            continue
        mapping = _open_mapping_prefix(key, defaults)
        if mapping is not None:  # e.g. data.options.num_identities=50: one entry inside a free-form mapping
            _set(cfg, key, value)
            continue
        if key not in defaults and any(k.startswith(key + ".") for k in defaults):  # e.g. "data: null"
            raise ConfigError(f"{where}: '{key}' is a section: give a mapping of its keys or leave it out, "
                              f"got {value!r}")
        if key not in defaults:
            raise ConfigError(f"{where}: unknown config key '{key}'{_suggest(key)}")
        _set(cfg, key, _check_value(key, value, defaults[key], where))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line L, column C: problem`` (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).strip().splitlines()[0]
    if mark is None and getattr(exc, "position", None) is not None:  # a ReaderError: a forbidden character
        return f"character {exc.position}: {problem}"  # type: ignore[attr-defined]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    """The top-level mapping of one YAML file; every way the file can be wrong is one ConfigError naming it."""
    if path.is_dir():
        raise ConfigError(f"config {path} is a folder; give a YAML file")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                          "save the file as UTF-8") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(exc)})") from None
    if raw is None:  # an empty file (or only comments)
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got a {type(raw).__name__}")
    return raw


def _read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read one YAML file and its ``_BASE_`` chain into a flat dict (later files win).

    ``chain``: the files that inherit this one (to name a loop). ``_BASE_`` is a path relative to the file.
    """
    path = Path(path)
    raw = _read_yaml_mapping(path)
    flat: dict[str, Any] = {}
    base = raw.pop("_BASE_", None)
    if base is not None:
        if not isinstance(base, str) or not base.strip():
            raise ConfigError(f"{path}: _BASE_ must be the path of one YAML file (relative to {path.parent}), "
                              f"got {base!r}")
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: _BASE_ file not found: {base_path}")
        resolved = [p.resolve() for p in chain + (path,)]
        if base_path.resolve() in resolved:
            loop = " -> ".join(str(p) for p in chain[resolved.index(base_path.resolve()):] + (path, base_path))
            raise ConfigError(f"{path}: _BASE_ inheritance loops back ({loop})")
        flat.update(_read_yaml(base_path, chain + (path,)))
    flat.update(_flatten(raw))
    return flat


def require_sections(cfg: Any, where: str, sections: Iterable[str] = ("model", "data"), hint: str = "") -> dict:
    """``cfg``, a resolved config read back from a file (a checkpoint's), if it is a mapping whose
    ``sections`` (dotted: ``data.transforms``) are mappings; otherwise one ConfigError naming ``where`` and the
    missing or wrong key, followed by ``hint``."""
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: its config is a {type(cfg).__name__}, not a mapping of config keys{hint}")
    for dotted in sections:
        node: Any = cfg
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            raise ConfigError(f"{where}: its config has no '{dotted}' section{hint}")
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: its config's '{dotted}' section is {node!r}, not a mapping of keys{hint}")
    return cfg


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """Parse ``["a.b=1", "c=[1, 2]"]`` into a flat dict with YAML-typed values."""
    flat: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' is not of the form key=value")
        key, text = item.split("=", 1)
        try:
            flat[key.strip()] = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError:
            flat[key.strip()] = text
    return flat


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> dict[str, Any]:
    """Defaults <- YAML file (with its ``_BASE_`` chain) <- ``key=value`` overrides; validated."""
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        _merge_flat(cfg, _read_yaml(Path(path)), str(path))
    _merge_flat(cfg, parse_overrides(overrides), "command line")
    validate_loss_terms(cfg["loss"]["terms"])
    validate_sweep_presets(cfg["sweep"]["presets"])
    validate_model(cfg["model"])
    validate_data(cfg["data"])
    validate_train(cfg)
    validate_positives(cfg)
    return cfg


def _closest(name: str, valid: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), sorted(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else f"; valid names: {', '.join(sorted(valid))}"


def validate_model(model: dict) -> None:
    """The backbone is registered and a pretrained weights file exists (before any data is generated)."""
    from reid_robust.models import IMAGENET, backbone_problem

    problem = backbone_problem(model["backbone"])
    if problem is not None:
        raise ConfigError(f"model.backbone: {problem}")
    if model["pretrained"] not in (None, IMAGENET) and not Path(model["pretrained"]).is_file():
        raise ConfigError(f"model.pretrained: file not found: {model['pretrained']} (a state-dict file, or "
                          "`imagenet` for the backbone's official weights)")


def validate_data(data: dict) -> None:
    """The dataset is registered and its loader accepts every entry of ``data.options``."""
    from reid_robust.data.registry import dataset_names, dataset_options

    names = dataset_names()
    if data["dataset"] not in names:
        raise ConfigError(f"data.dataset: unknown dataset '{data['dataset']}'{_closest(data['dataset'], names)}")
    accepted = dataset_options(data["dataset"])
    for option in data["options"] or {}:
        if option not in accepted:
            raise ConfigError(f"data.options.{option}: dataset '{data['dataset']}' has no option '{option}'; "
                              f"it accepts: {', '.join(accepted) or 'none'}")


def validate_train(cfg: dict) -> None:
    """Device, multistep milestones and the TensorBoard package, before any data is generated."""
    import importlib.util

    import torch

    device = cfg["device"]
    if device != "auto":
        try:
            torch.device(device)
        except (RuntimeError, ValueError):
            raise ConfigError(f"device: '{device}' is not a device; use auto, cpu, cuda or cuda:N") from None
    train = cfg["train"]
    milestones = train["milestones"]
    if any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in milestones) or \
            list(milestones) != sorted(set(milestones)):
        raise ConfigError(f"train.milestones: must be increasing epoch numbers >= 1, got {milestones!r}")
    if train["tensorboard"] and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard: the tensorboard package is not installed "
                          "(pip install tensorboard, or pip install -e \".[tensorboard]\")")


# train.resume with a key changed from the checkpoint's config: "applied" keys take effect (listed in the
# log), "ignored" keys only shape outputs, every other key (data, model, loss, seed, optimizer) is refused
RESUME_APPLIED = ("train.epochs", "train.lr", "train.loss_lr", "train.weight_decay", "train.momentum",
                  "train.scheduler", "train.milestones", "train.gamma", "train.warmup_epochs", "train.warmup_factor",
                  "train.grad_clip", "train.amp", "train.checkpoint_every", "train.best_metric",
                  "train.gather_embeddings", "device", "data.root", "eval.")
RESUME_IGNORED = ("output_dir", "train.resume", "train.overwrite", "train.progress", "train.num_threads",
                  "train.tensorboard", "data.num_workers", "data.test_batch_size", "model.pretrained", "sweep.")


def resume_changes(saved: dict, cfg: dict) -> dict[str, list[tuple[str, Any, Any]]]:
    """Keys whose value in ``cfg`` differs from a checkpoint's config ``saved`` (a key the checkpoint lacks
    had its default), as ``{"applied": [...], "ignored": [...], "refused": [...]}`` of (key, old, new)."""
    old = _flatten(DEFAULTS)
    old.update({k: v for k, v in _flatten(saved).items() if k in old})
    new = _flatten(cfg)
    out: dict[str, list[tuple[str, Any, Any]]] = {"applied": [], "ignored": [], "refused": []}
    for key in sorted(new):
        if key in old and old[key] != new[key]:
            kind = "applied" if key.startswith(RESUME_APPLIED) else \
                "ignored" if key.startswith(RESUME_IGNORED) else "refused"
            out[kind].append((key, old[key], new[key]))
    return out


def validate_positives(cfg: dict) -> None:
    """Pair, triplet and ranking losses need a positive pair in the batch: ``data.sampler.num_instances``
    >= 2 (the loss class's ``needs_positives``; classification losses such as cross_entropy do not)."""
    from reid_robust.losses import LOSSES

    k = cfg["data"]["sampler"]["num_instances"]
    if k >= 2:
        return
    for i, term in enumerate(cfg["loss"]["terms"]):
        if getattr(LOSSES.get(term["name"]), "needs_positives", True):
            raise ConfigError(f"data.sampler.num_instances={k} gives no positive pairs, which loss.terms[{i}] "
                              f"({term['name']}) needs: use data.sampler.num_instances >= 2 (only classification "
                              "losses such as cross_entropy train with one image per identity)")


def validate_loss_terms(terms: Any) -> None:
    if not isinstance(terms, list) or not terms:
        raise ConfigError("'loss.terms' must be a non-empty list of {name, weight, input, ...}")
    for i, term in enumerate(terms):
        if not isinstance(term, dict) or "name" not in term:
            raise ConfigError(f"loss.terms[{i}] must be a mapping with at least a 'name', got {term!r}")
        weight = term.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"loss.terms[{i}] ({term['name']}): 'weight' must be a number, got {weight!r}")
        if term.get("input", "feat") not in ("feat", "bn_feat"):
            raise ConfigError(f"loss.terms[{i}] ({term['name']}): 'input' must be feat or bn_feat, "
                              f"got {term.get('input')!r}")
        _check_loss_parameters(f"loss.terms[{i}] ({term['name']})", term["name"],
                               set(term) - {"name", "weight", "input"})


def _check_loss_parameters(where: str, name: str, given: set) -> None:
    """``name`` is a registered loss and accepts every parameter in ``given`` (the registry's own check)."""
    from reid_robust.losses import check_loss_parameters

    try:
        check_loss_parameters(name, given, supplied_later=("num_classes", "embedding_dim"))
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def validate_sweep_presets(presets: Any) -> None:
    """Each preset names a known loss and only parameters that loss accepts (checked before any training)."""
    for name, params in (presets or {}).items():
        where = f"sweep.presets.{name}"
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: must be a mapping of the loss's parameters, got {params!r}")
        _check_loss_parameters(where, name, set(params))


def get(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        node = node[part]
    return node


PATH_KEYS = ("data.root", "data.noise.list", "data.noise.confusable", "model.pretrained")


def with_absolute_paths(cfg: dict) -> dict:
    """A copy of ``cfg`` whose file and folder keys (``PATH_KEYS``) are absolute, resolved against the current
    directory: the config saved with a run then finds its data from any directory (tools/eval.py, export,
    audit). ``output_dir`` keeps its form."""
    out = copy.deepcopy(cfg)
    for dotted in PATH_KEYS:
        *parents, leaf = dotted.split(".")
        node = out
        for part in parents:
            node = node[part]
        if node.get(leaf) is not None and not (dotted == "model.pretrained" and node[leaf] == "imagenet"):
            node[leaf] = str(Path(node[leaf]).expanduser().resolve())  # `imagenet` is a name, not a file
    return out


def save_config(cfg: dict, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML (atomically)."""
    from reid_robust.engine.run_dir import atomic_write_text

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, yaml.safe_dump(cfg, sort_keys=False))
