"""Methods of ``torch.compile``d modules, compiled.

``torch.compile(model)`` returns an ``OptimizedModule`` whose ``forward`` is compiled; any
other attribute, ``score`` or ``energy`` included, is looked up on the original module and runs
uncompiled. ``method(obj, "score")`` returns ``obj.score`` compiled with the same backend and
options (the module's own ``dynamo_ctx``) when ``obj`` is compiled, else ``obj.score`` (or
``obj`` itself when it has no such method).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

from torch import nn

_cache: weakref.WeakKeyDictionary[nn.Module, dict[str, Callable[..., Any]]] = weakref.WeakKeyDictionary()


def is_compiled(obj: object) -> bool:
    """True for the module ``torch.compile(module)`` returns."""
    return isinstance(obj, nn.Module) and hasattr(obj, "_orig_mod") and hasattr(obj, "dynamo_ctx")


def uncompiled(obj: Any) -> Any:
    """The original module behind a compiled one (``obj`` itself otherwise)."""
    return obj._orig_mod if is_compiled(obj) else obj


def method(obj: Any, name: str = "score") -> Callable[..., Any]:
    """``obj.<name>``, compiled like ``obj`` when ``obj`` is a compiled module; ``obj`` itself
    when it has no attribute ``name`` (a plain function)."""
    if not is_compiled(obj):
        return getattr(obj, name, obj)
    orig = obj._orig_mod
    if not callable(getattr(orig, name, None)):
        return obj
    per_module = _cache.setdefault(obj, {})
    if name not in per_module:
        per_module[name] = obj.dynamo_ctx(getattr(orig, name))
    return per_module[name]
