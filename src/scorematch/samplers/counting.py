"""Exact counts of score evaluations from outside a sampler: a counting wrapper for any score
function (each sampler's own formula is its catalogue entry's ``nfe``).

One evaluation is one call of the score function on the whole batch, whatever its number of
rows (a guided score evaluates the doubled batch in one call: one evaluation). For MALA it is one
evaluation of E and grad E together.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from scorematch import _compile
from scorematch.errors import ConfigError


class CountedScore:
    """``score_fn`` (a callable or an object with a ``.score``, or with ``method`` another method
    such as ``"energy"``) that counts its calls in ``calls``. Every other attribute is the
    wrapped object's, so a counted model still answers ``.sigma_min``, ``.prior_sample``..."""

    def __init__(self, score_fn: Any, method: str = "score") -> None:
        fn = _compile.method(score_fn, method)
        if not callable(fn):
            raise ConfigError(f"score_fn must be callable or have a .{method} method")
        self._fn: Callable[..., Any] = fn
        self._wrapped = score_fn
        self._method = method
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self._fn(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name == self._method:  # a sampler that looks for .score (or .energy) gets the counted call
            return self.__call__
        attr = getattr(self._wrapped, name)
        if name in ("score", "energy") and callable(attr):  # MALA asks a model for .energy: counted too
            def counted(*args: Any, **kwargs: Any) -> Any:
                self.calls += 1
                return attr(*args, **kwargs)

            return counted
        return attr
