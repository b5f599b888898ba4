"""Loading configs: defaults <- YAML file (with its ``_BASE_`` chain) <- ``key=value`` overrides, each key
checked against the section dataclasses as it is merged (naming the file or "command line"), then built
into a frozen :class:`~reid_robust.config.sections.Config`.

The same path reloads the plain mapping stored in a checkpoint (:func:`config_from_mapping`: keys added
since then take their defaults, keys removed since then are dropped with a notice) and applies a tool's
overrides to a loaded config (:func:`with_overrides`), so nothing patches a config past validation.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from reid_robust.config.fields import ConfigError, Section, check_field, to_plain, type_hints
from reid_robust.config.sections import Config

Leaf = tuple[type, dataclasses.Field, str]  # (section class, field, prefix)


def _leaves(section: type = Config, prefix: str = "") -> dict[str, Leaf]:
    """Every settable dotted key: fields that are not themselves sections."""
    out: dict[str, Leaf] = {}
    for field in dataclasses.fields(section):
        hint = type_hints(section)[field.name]
        if isinstance(hint, type) and issubclass(hint, Section):
            out.update(_leaves(hint, f"{prefix}{field.name}."))
        else:
            out[f"{prefix}{field.name}"] = (section, field, prefix)
    return out


LEAVES = _leaves()
VALID_KEYS = sorted(LEAVES)
SECTIONS = sorted({key.rsplit(".", 1)[0] for key in VALID_KEYS if "." in key})
FREE_MAPPINGS = tuple(k for k, (cls, f, _) in LEAVES.items() if type_hints(cls)[f.name] is dict)  # data.options, ...


def default_mapping() -> dict[str, Any]:
    """The defaults as a plain nested mapping."""
    return Config().to_dict()


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, VALID_KEYS + SECTIONS, n=1, cutoff=0.5)
    if not close:  # compare the last component only (e.g. "epohcs" inside another section)
        leaf = key.rsplit(".", 1)[-1]
        by_leaf = {k.rsplit(".", 1)[-1]: k for k in VALID_KEYS}
        close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)]
    return f" (did you mean '{close[0]}'?)" if close else ""


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"lr": 1}}`` -> ``{"train.lr": 1}``; stops at leaves (lists, free-form mappings)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        full = f"{prefix}{key}"
        if isinstance(value, dict) and full not in LEAVES:
            out.update(flatten(value, full + "."))
        else:
            out[full] = value
    return out


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = tree
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[leaf] = value


def _free_mapping_of(key: str) -> str | None:
    """The free-form mapping (``data.options``, ``sweep.presets``) that ``key`` reaches inside, if any."""
    return next((m for m in FREE_MAPPINGS if key.startswith(m + ".")), None)


def merge(tree: dict, flat: Mapping[str, Any], where: str, unknown: Callable[[str], None] | None = None) -> None:
    """Set each dotted key of ``flat`` in ``tree``, checked against its field; an unknown key is refused
    (or passed to ``unknown`` when given)."""
    for key, value in flat.items():
        if isinstance(value, dict) and key not in LEAVES and any(k.startswith(key + ".") for k in LEAVES):
            merge(tree, flatten(value, key + "."), where, unknown)  # a whole section given as a mapping
        elif _free_mapping_of(key) is not None:  # data.options.num_identities=50: one entry of a mapping
            _set(tree, key, value)
        elif key in SECTIONS:
            raise ConfigError(f"{where}: '{key}' is a section: give a mapping of its keys or leave it out, "
                              f"got {value!r}")
        elif key not in LEAVES:
            if unknown is None:
                raise ConfigError(f"{where}: unknown config key '{key}'{_suggest(key)}")
            unknown(key)
        else:
            section, field, prefix = LEAVES[key]
            try:
                _set(tree, key, to_plain(check_field(section, prefix, field, value)))
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None


def build(tree: Mapping[str, Any]) -> Config:
    return Config.from_dict(copy.deepcopy(dict(tree)))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line for a YAML error: ``line L, column C: problem`` (PyYAML's own text spans several lines)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).strip().splitlines()[0]
    if mark is None and getattr(exc, "position", None) is not None:  # a ReaderError: a forbidden character
        return f"character {exc.position}: {problem}"  # type: ignore[attr-defined]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem


def read_yaml_mapping(path: Path) -> dict[str, Any]:
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


def read_yaml(path: Path, chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """One YAML file and its ``_BASE_`` chain (a path relative to the file) as a flat dict, later files winning;
    ``chain``: the files that inherit this one (to show a loop)."""
    path = Path(path)
    raw = read_yaml_mapping(path)
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
        flat.update(read_yaml(base_path, chain + (path,)))
    flat.update(flatten(raw))
    return flat


def parse_overrides(overrides: Iterable[str]) -> dict[str, Any]:
    """``["a.b=1", "c=[1, 2]"]`` -> a flat dict with YAML-typed values."""
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


def load_config(path: str | os.PathLike | None, overrides: Iterable[str] = ()) -> Config:
    """Defaults <- YAML file (with its ``_BASE_`` chain) <- ``key=value`` overrides; validated."""
    tree = default_mapping()
    if path is not None:
        merge(tree, read_yaml(Path(path)), str(path))
    merge(tree, parse_overrides(overrides), "command line")
    cfg = build(tree)
    check_files(cfg)
    return cfg


def check_files(cfg: Config) -> None:
    """What a training run needs from this machine, checked before any data is generated: the pretrained
    file and the TensorBoard package (not checked when a checkpoint's config reloads elsewhere)."""
    pretrained = cfg.model.pretrained
    if pretrained not in (None, IMAGENET) and not Path(pretrained).is_file():
        raise ConfigError(f"model.pretrained: file not found: {pretrained} (a state-dict file, or `imagenet` for "
                          "the backbone's official weights)")
    if cfg.train.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ConfigError("train.tensorboard: the tensorboard package is not installed "
                          "(pip install tensorboard, or pip install -e \".[tensorboard]\")")


def config_from_mapping(mapping: Any, where: str, notice: Callable[[str], None] | None = None,
                        required: Iterable[str] = ("model", "data")) -> Config:
    """A stored plain mapping (a checkpoint's) through the same checks: keys added since take their defaults,
    keys removed since are dropped, each named once through ``notice``. The ``required`` sections must be
    there: a default dataset or model in place of a missing one would silently describe another run."""
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{where}: its config is a {type(mapping).__name__}, not a mapping of config keys")
    for section in required:
        if section not in mapping:
            raise ConfigError(f"{where}: its config has no '{section}' section")
        if not isinstance(mapping[section], Mapping):
            raise ConfigError(f"{where}: its config's '{section}' section is {mapping[section]!r}, not a mapping "
                              "of keys")
    dropped: list[str] = []
    tree = default_mapping()
    merge(tree, flatten(dict(mapping)), where, unknown=dropped.append)
    if dropped and notice is not None:
        notice(f"{where}: ignoring config keys this version no longer has: {', '.join(dropped)}")
    try:
        return build(tree)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def with_overrides(cfg: Config, overrides: Mapping[str, Any] | Iterable[str], where: str = "command line") -> Config:
    """``cfg`` with dotted ``overrides`` (a mapping, or ``key=value`` strings) applied and checked again."""
    flat = dict(overrides) if isinstance(overrides, Mapping) else parse_overrides(overrides)
    tree = cfg.to_dict()
    merge(tree, flat, where)
    return build(tree)


PATH_KEYS = ("data.root", "data.noise.list", "data.noise.confusable", "model.pretrained")
IMAGENET = "imagenet"  # model.pretrained: a name (reid_robust.models.IMAGENET), never made a path


def with_absolute_paths(cfg: Config) -> Config:
    """``cfg`` with its file and folder keys (``PATH_KEYS``) resolved against the current directory: the config
    saved with a run then finds its data from any directory. ``output_dir`` keeps its form."""
    tree = cfg.to_dict()
    flat = flatten(tree)
    absolute = {k: str(Path(flat[k]).expanduser().resolve()) for k in PATH_KEYS
                if flat.get(k) is not None and not (k == "model.pretrained" and flat[k] == IMAGENET)}
    return with_overrides(cfg, absolute, "absolute paths") if absolute else cfg


def to_yaml(cfg: Config) -> str:
    """The config as YAML that :func:`load_config` reads back to an equal config."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def save_config(cfg: Config, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    from reid_robust.atomic import atomic_write_text

    atomic_write_text(Path(path), to_yaml(cfg))
