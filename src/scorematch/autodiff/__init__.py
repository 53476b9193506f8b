"""Jacobian traces and Jacobian-vector products of a score function, the costly parts of ISM/SSM.

For s: R^D -> R^D acting row by row on a batch (n, D) (images: D = ``C*H*W``):

- ``score_and_trace``: tr(grad_x s(x)) exactly, per row. For a network with linear ends,
  s(x) = c (W_out g(W_in x + b_in) + b_out), the structured trace c tr(J_g(u) W_in W_out)
  works in the network's widths (``scorematch.autodiff.structured``: the ``linear_ends``
  protocol by which a model, also a user's own, declares them); any other score function gets
  a generic trace of the D basis vectors (``scorematch.autodiff.generic``).
  ``trace_method`` says which method a call runs.
- ``score_and_vjv``: v^T J v per row with a single Jacobian-vector product.

All results are differentiable in the network's parameters (create_graph semantics).
"""

from scorematch.autodiff.modules import inside_ddp as _inside_ddp  # noqa: F401 (tests use it)
from scorematch.autodiff.modules import owning_module
from scorematch.autodiff.modules import score_network as _score_network  # noqa: F401 (tests use it)
from scorematch.autodiff.structured import Chain, LinearEnds
from scorematch.autodiff.trace import TRACE_METHODS, auto_trace_method, score_and_trace, trace_method
from scorematch.autodiff.vjv import score_and_vjv

__all__ = [
    "TRACE_METHODS", "Chain", "LinearEnds", "auto_trace_method", "owning_module", "score_and_trace",
    "score_and_vjv", "trace_method",
]
