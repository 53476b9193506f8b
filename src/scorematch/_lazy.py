"""A function named by its import path, imported on first call: catalogues list methods without
importing torch, so that ``scorematch --help`` answers at once."""

from __future__ import annotations

import importlib
from typing import Any


class Lazy:
    """The callable ``module:name``, imported when first called or resolved."""

    def __init__(self, path: str) -> None:
        module, sep, name = path.partition(":")
        if not sep or not module or not name:
            raise ValueError(f"a lazy reference is 'module:name', got {path!r}")
        self.path = path
        self._target: Any = None

    def resolve(self) -> Any:
        if self._target is None:
            module, _, name = self.path.partition(":")
            self._target = getattr(importlib.import_module(module), name)
        return self._target

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"Lazy({self.path!r})"


def resolve(fn: Any) -> Any:
    """``fn`` itself, or the function a ``Lazy`` names."""
    return fn.resolve() if isinstance(fn, Lazy) else fn
