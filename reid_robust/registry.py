"""One registry helper for losses, datasets and backbones: names map to objects, a duplicate name is refused,
an unknown name is refused with the closest valid one.

It lives at the package root (it imports nothing from ``reid_robust``), so ``losses`` and ``evaluation``
stay free of ``engine`` imports while sharing it with ``data`` and ``models``.

Example::

    DATASETS = Registry("dataset")

    @DATASETS.register("market1501")
    def load(root): ...

    DATASETS.lookup("market1502")  # ValueError: unknown dataset 'market1502' (did you mean 'market1501'?) ...
"""
from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar, overload

T = TypeVar("T")


def did_you_mean(name: object, valid: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a valid name is close to ``name``, else an empty string."""
    close = difflib.get_close_matches(str(name), sorted(valid), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


class Registry(dict[str, T], Generic[T]):
    """A ``dict`` of registered objects by name; ``kind`` names them in messages ("loss", "dataset")."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T) -> T: ...

    def register(self, name: str, obj: T | None = None):
        """Add ``obj`` under ``name`` (or decorate it); a duplicate or an empty name raises ValueError."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} name must be a non-empty string, got {name!r}")

        def add(item: T) -> T:
            if name in self:
                raise ValueError(f"{self.kind} name {name!r} is already registered to {_describe(self[name])}")
            self[name] = item
            return item

        return add if obj is None else add(obj)

    def copy(self) -> Registry[T]:
        """A shallow copy that is still a Registry (``dict.copy`` would return a plain dict)."""
        twin: Registry[T] = Registry(self.kind)
        twin.update(self)
        return twin

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self)

    def lookup(self, name: object) -> T:
        """The object registered as ``name``; ValueError naming the closest and all valid names otherwise."""
        if not isinstance(name, str) or name not in self:
            raise ValueError(f"unknown {self.kind} {name!r}{did_you_mean(name, self)}; "
                             f"valid names: {', '.join(self.names())}")
        return self[name]


def _describe(obj: object) -> str:
    """A registered object as messages show it: its name when it has one (a class, a function), else repr."""
    return getattr(obj, "__qualname__", None) or repr(obj)
