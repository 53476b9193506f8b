"""What the catalogues (``scorematch.objectives.catalogue``, ``scorematch.samplers.catalogue``)
share: adding a checked entry and looking one up by name, each refused with one ConfigError line."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from scorematch.errors import ConfigError

E = TypeVar("E")


def add(catalogue: dict[str, E], e: Any, cls: type[E], check: Callable[[E], None]) -> E:
    """Add (or replace) ``catalogue[e.name] = e`` once ``e`` is a ``cls`` and ``check(e)`` has passed
    (it raises ConfigError otherwise). Returns e."""
    if not isinstance(e, cls):
        article = "an" if cls.__name__[:1] in "AEIOU" else "a"
        raise ConfigError(f"register takes {article} {cls.__name__} entry, got {type(e).__name__}")
    check(e)
    catalogue[e.name] = e  # type: ignore[attr-defined]
    return e


def lookup(catalogue: Mapping[str, E], name: str, kind: str) -> E:
    """``catalogue[name]``; ConfigError naming the ``kind`` and listing the known names otherwise."""
    if name not in catalogue:
        raise ConfigError(f"unknown {kind} {name!r}; valid choices: {', '.join(catalogue)}")
    return catalogue[name]
