"""A function named by its import path, imported on first call, and packages whose names are
imported on first use: catalogues list methods without importing torch, so that
``scorematch --help`` answers at once."""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Callable
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


class _Package(types.ModuleType):
    """A lazy package, whose functions keep their names when a submodule of the same name (the
    module ``langevin`` of the function ``langevin``) is imported: the function wins, as it did
    when the package imported every function at once."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and name in self.__dict__.get("__all__", ()):
            return
        super().__setattr__(name, value)


def lazy_package(package: str, where: dict[str, str],
                 lookup: Callable[[str, types.ModuleType], Any] | None = None) -> None:
    """Makes the package ``package`` (by its import path) import each name of ``where`` from its
    submodule ``package.where[name]`` on first use: sets its ``__all__`` (the names, sorted),
    ``__getattr__`` and ``__dir__``. ``lookup(name, submodule)`` (default ``getattr``) gives the value
    once the submodule is imported. Any other name is an AttributeError."""
    module = sys.modules[package]

    def __getattr__(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        sub = importlib.import_module(f"{package}.{where[name]}")
        return getattr(sub, name) if lookup is None else lookup(name, sub)

    def __dir__() -> list[str]:
        return module.__all__

    module.__all__ = sorted(where)
    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]
    module.__class__ = _Package
