"""Shared plumbing of the objectives: resolving a score function, the activation warning."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable

import torch
from torch import nn

from scorematch import _compile
from scorematch._checks import batch
from scorematch.autodiff import owning_module
from scorematch.errors import ScoreMatchWarning

_warned: weakref.WeakSet[nn.Module] = weakref.WeakSet()


def as_score_fn(model: Callable) -> Callable:
    """A module with a ``score`` method (score or energy model) -> its ``score``; else the callable.

    So an energy model E_theta can be passed directly and is used as s = -grad_x E_theta,
    never as if its output were a score. A ``torch.compile``d module gives its ``score``
    compiled the same way (``torch.compile`` itself compiles only ``forward``).
    """
    if _compile.is_compiled(model):
        if getattr(model, "kind", "score") == "energy" and torch.is_grad_enabled():
            _warn_uncompiled("training an energy model differentiates -grad_x E")
            return _compile.uncompiled(model).score
        return _compile.method(model, "score")
    score = getattr(model, "score", None)
    if isinstance(model, nn.Module) and callable(score):
        return score
    if not callable(model):
        raise TypeError(f"score_fn must be callable, got {type(model).__name__}")
    return model


def uncompiled_for_double_backward(score_fn: Callable, objective: str) -> Callable:
    """ISM and SSM differentiate the Jacobian of the score, which a compiled module cannot
    (AOTAutograd has no double backward): the uncompiled module, with a warning, for those."""
    if not _compile.is_compiled(score_fn):
        return score_fn
    _warn_uncompiled(f"{objective} differentiates the Jacobian of the score")
    return _compile.uncompiled(score_fn)


def _warn_uncompiled(why: str) -> None:
    warnings.warn(
        f"{why}, and torch.compile (AOTAutograd) has no double backward: running the uncompiled module "
        "here; DSM, NCSN and SDE training of a score network and every sampler run compiled",
        ScoreMatchWarning,
        stacklevel=4,
    )


def warn_if_piecewise_linear(score_fn: Callable, objective: str) -> None:
    """Warn once per network when ISM/SSM meets piecewise-linear activations (the trace term degenerates)."""
    from scorematch.models.mlp import is_piecewise_linear

    module = owning_module(score_fn)
    if module is None or module in _warned or not is_piecewise_linear(module):
        return
    _warned.add(module)
    if getattr(module, "kind", "score") == "energy":
        why = "the Laplacian of its energy, -tr(grad_x s), is zero almost everywhere"
    else:
        why = ("its Jacobian grad_x s is piecewise constant in x, so the trace term carries no gradient "
               "that can bend the field and training just shrinks s towards 0")
    warnings.warn(
        f"{objective}: {type(module).__name__} uses only piecewise-linear activations (ReLU family): "
        f"{why}; {objective} degenerates. Use a smooth activation such as activation='silu' (the default).",
        ScoreMatchWarning,
        stacklevel=3,
    )


def sq_norm(x: torch.Tensor) -> torch.Tensor:
    """||x_i||^2 per row over all non-batch dimensions, shape (n,)."""
    return x.flatten(1).pow(2).sum(1)


def check_batch(x: torch.Tensor) -> torch.Tensor:
    return batch("x", x)
