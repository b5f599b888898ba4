"""Typed config fields: each field of a section dataclass carries its default, a one-line meaning and the
rule a value must follow; :func:`check_value` turns a raw YAML value into the field's type or refuses it
naming the dotted key.

Types understood: ``bool``, ``int``, ``float`` (finite; ``1e-3`` read by YAML as a string is a number),
``str``, ``X | None``, ``Literal[...]`` (choices), ``tuple[X, ...]`` and ``tuple[X, Y]`` (from YAML lists),
``dict`` (free-form mapping), nested section dataclasses and tuples of them.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable
from typing import Any, Literal, Union


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """A range or shape rule: ``text`` completes "must be ...", ``test`` returns True for valid values."""

    text: str
    test: Callable[[Any], bool]


def option(default: Any, help: str, rule: Rule | None = None) -> Any:
    """A dataclass field with its meaning (for docs/config.md) and rule. A class or function as ``default`` is
    called for each instance (nested sections, so that nothing is built at import); lists and dicts are copied."""
    metadata = {"help": help, "rule": rule}
    if callable(default):
        return dataclasses.field(default_factory=default, metadata=metadata)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=functools.partial(_copy, default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


def at_least(low: float, note: str = "") -> Rule:
    return Rule(f">= {low:g}{note}", lambda v: v >= low)


def above(low: float, note: str = "") -> Rule:
    return Rule(f"> {low:g}{note}", lambda v: v > low)


def within(low: float, high: float, *, open_low: bool = False, open_high: bool = False) -> Rule:
    left, right = "(" if open_low else "[", ")" if open_high else "]"

    def test(v: float) -> bool:
        return (v > low if open_low else v >= low) and (v < high if open_high else v <= high)

    return Rule(f"in {left}{low:g}, {high:g}{right}", test)


def _is_section(hint: Any) -> bool:
    return isinstance(hint, type) and dataclasses.is_dataclass(hint)


@functools.cache
def type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _number(key: str, value: Any, kind: type) -> Any:
    if kind is float and isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ConfigError(f"'{key}' must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if kind is float:
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(f"'{key}' must be a finite number, got {value!r}")
    return value


_YAML_BOOL_WORDS = {False: ("off", "no", "false"), True: ("on", "yes", "true")}


def check_value(key: str, hint: Any, value: Any) -> Any:
    """``value`` converted to ``hint`` (see the module docstring), or ConfigError naming ``key``."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        try:
            return check_value(key, inner[0], value)
        except ConfigError:
            kind = {str: "a path (a string)", float: "a number"}.get(inner[0], str(inner[0]))
            raise ConfigError(f"'{key}' must be {kind} or null, got {value!r}") from None
    if origin is Literal:
        if isinstance(value, bool):  # YAML 1.1 reads a bare off/on/no/yes as a boolean: the choice it spelt
            value = next((a for a in args if str(a).lower() in _YAML_BOOL_WORDS[value]), value)
        if value not in args:
            raise ConfigError(f"'{key}' must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        return _check_tuple(key, args, value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"'{key}' must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        return _number(key, value, hint)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{key}' must be a string, got {value!r}")
        return value
    if hint is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' must be a mapping, got {value!r}")
        return dict(value)
    if _is_section(hint):
        return value if isinstance(value, hint) else hint.from_dict(value, key)
    raise TypeError(f"config field '{key}' has an unsupported type {hint!r}")  # a bug in a section class


def _check_tuple(key: str, args: tuple, value: Any) -> tuple:
    if isinstance(value, (str, bytes, dict)) or not isinstance(value, (list, tuple)):
        raise ConfigError(f"'{key}' must be a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(check_value(f"{key}[{i}]", args[0], v) for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"'{key}' must be a list of {len(args)} values, got {value!r}")
    return tuple(check_value(f"{key}[{i}]", a, v) for i, (a, v) in enumerate(zip(args, value)))


def check_field(section: type, prefix: str, field: dataclasses.Field, value: Any) -> Any:
    """One field's value checked against its type and its rule (applied to each item of a tuple)."""
    key, given = f"{prefix}{field.name}", value
    value = check_value(key, type_hints(section)[field.name], value)
    rule: Rule | None = field.metadata.get("rule")
    if rule is not None and value is not None:
        items = value if isinstance(value, tuple) else (value,)
        if not all(rule.test(v) for v in items):
            raise ConfigError(f"'{key}' must be {rule.text}, got {_plain(given)!r}")  # as the user wrote it
    return value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


S = typing.TypeVar("S", bound="Section")


class Section:
    """Base of the config sections: validates every field on construction (also when built in Python) and
    converts to and from plain mappings. ``PREFIX`` is the dotted path of the section (``"data.noise."``)."""

    PREFIX: typing.ClassVar[str] = ""

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):  # type: ignore[arg-type]
            value = check_field(type(self), self.PREFIX, field, getattr(self, field.name))
            object.__setattr__(self, field.name, value)
        self.check()

    def check(self) -> None:
        """Rules between fields of this section (override); raise ConfigError naming the key."""

    @classmethod
    def from_dict(cls: type[S], mapping: Any, key: str | None = None) -> S:
        """The section from a plain mapping of its fields (missing fields take their defaults)."""
        where = key or cls.PREFIX.rstrip(".") or "config"
        if not isinstance(mapping, dict):
            raise ConfigError(f"'{where}' must be a mapping, got {mapping!r}")
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(mapping) - names)
        if unknown:
            raise ConfigError(f"unknown config key '{cls.PREFIX}{unknown[0]}'")
        return cls(**mapping)

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (lists, dicts, numbers, strings): YAML- and checkpoint-safe."""
        return {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def to_plain(value: Any) -> Any:
    if isinstance(value, Section):
        return value.to_dict()
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value
