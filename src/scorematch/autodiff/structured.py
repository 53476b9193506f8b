"""The exact Jacobian trace of a network with linear ends, in O(width) work instead of O(D).

For a score network s(x) = c (W_out g(W_in x + b_in) + b_out), with g the inner map (activations
and hidden layers, whatever x-independent conditioning they add) and c a per-row scale (1/sigma
for a noise-conditional net), the Jacobian is c W_out J_g(u) W_in, and by the cyclic property of
the trace

    tr(grad_x s) = c tr(J_g(u) M),   M = W_in W_out   (h_1 x h_L, one matrix per step),

so the exact trace needs only h-dimensional work whatever D is. For an energy
E(x) = c (w^T g(W_in x + b_in) + b) the Laplacian is

    Delta_x E = c tr(H_u G),   G = W_in W_in^T,   H_u the Hessian of w^T g in u,

and tr(grad_x s) = -Delta_x E for s = -grad_x E.

When g is a chain z_1 = act(u_1), u_{k+1} = W_k z_k + b_k + c_k(cond), g = z_L (an MLP whose
conditioning adds x-independent biases), J_g = D_L W_{L-1} ... W_1 D_1 with D_k = diag(act'(u_k)):

- one activation (L = 1): tr = sum_j act'(u_1)_j M_jj;
- one hidden-to-hidden layer (L = 2), in closed form: tr = sum_jk act'(u_2)_j (W_1)_jk act'(u_1)_k M_kj,
  one (n, h) x (h, h) product;
- deeper: the h x h tangent T = D_1 M (per row, from M shared by the batch) is pushed through
  each layer, T <- D_{k+1} W_k T, and the last layer closes the trace elementwise:
  (L - 2) batched h x h x h products per row.

The energy's Hessian is sum_k J_k^T diag(act''(u_k) * dphi/dz_k) J_k with J_k = du_k/du_1, so
Delta E needs diag(J_k G J_k^T) per layer: free for k = 1, one h x h x h product for k = 2, two
for every further layer. Any other inner map g is handled by torch.func: h Jacobian-vector
products of g (forward-over-reverse for an energy), still independent of D.

The protocol. A model (any nn.Module, also a user's own) declares its linear ends with a method

    def linear_ends(self, x, *conditioning) -> LinearEnds | None

called with the batch and the same conditioning as its score (sigma, t, a class label, ...), and
returning its input and output ``nn.Linear`` layers, the inner map as a ``Chain`` (fast) or any
callable u -> z (torch.func), an x-independent extra bias of the input layer, a per-row output
scale, and ``energy=True`` when the ends describe an energy E whose score is -grad_x E. The
biases are computed by the model's own submodules from the conditioning, so any conditioning
that adds an x-independent bias per layer is covered. Returning None says "no linear ends"
(the generic trace is used). The first structured evaluation of each module checks the declared
pieces against the module's own score on the batch and raises ModelError if they disagree.

How a score function is resolved to its module: ``scorematch.autodiff.plan``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.func import grad, jvp, vmap
from torch.utils.checkpoint import checkpoint

from scorematch.errors import ModelError

__all__ = ["Chain", "LinearEnds", "evaluate"]


@dataclass(frozen=True)
class Chain:
    """The inner map of an MLP: ``z_1 = act(u_1)``, ``u_{k+1} = layers[k](z_k) + biases[k]``, ``g(u_1) = z_L``.

    ``activation`` acts elementwise (the same at every layer); ``biases`` (empty, or one entry per
    layer: None, shape (h,) or per row (n, h)) are the x-independent terms the conditioning adds.
    """

    activation: Callable[[Tensor], Tensor]
    layers: Sequence[nn.Linear] = ()
    biases: Sequence[Tensor | None] = ()

    def __post_init__(self) -> None:
        if self.biases and len(self.biases) != len(self.layers):
            raise ModelError(f"Chain: {len(self.biases)} biases for {len(self.layers)} layers; give one per layer")
        if not all(isinstance(layer, nn.Linear) for layer in self.layers):
            raise ModelError("Chain: every layer must be an nn.Linear")

    def bias(self, k: int) -> Tensor | None:
        return self.biases[k] if self.biases else None

    def __call__(self, u: Tensor) -> Tensor:
        z = self.activation(u)
        for k, layer in enumerate(self.layers):
            z = self.activation(_add(layer(z), self.bias(k)))
        return z


@dataclass(frozen=True)
class LinearEnds:
    """s(x) = scale * (output(inner(input(x) + input_bias))), or E(x) of the same form (energy=True).

    ``input``/``output``: the network's first and last ``nn.Linear`` (output width D for a score,
    1 for an energy); ``inner``: a ``Chain`` or any callable u (n, h_1) -> z (n, h_L) acting row
    by row; ``input_bias``: an x-independent term added to input(x), (h_1,) or (n, h_1);
    ``scale``: a float or a per-row tensor (n,).
    """

    input: nn.Linear
    output: nn.Linear
    inner: Chain | Callable[[Tensor], Tensor]
    input_bias: Tensor | None = None
    scale: Tensor | float | None = None
    energy: bool = False


def _add(u: Tensor, bias: Tensor | None) -> Tensor:
    return u if bias is None else u + bias


# --------------------------------------------------------------------------------------------
# derivatives of the activations: closed forms for torch's, torch.func for any other


def _silu(u: Tensor) -> tuple[Tensor, Tensor]:
    sg = torch.sigmoid(u)
    return sg * (1 + u * (1 - sg)), sg * (1 - sg) * (2 + u * (1 - 2 * sg))


def _tanh(u: Tensor) -> tuple[Tensor, Tensor]:
    th = torch.tanh(u)
    d1 = 1 - th * th
    return d1, -2 * th * d1


def _gelu(u: Tensor) -> tuple[Tensor, Tensor]:
    pdf = torch.exp(-0.5 * u * u) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(u / math.sqrt(2)))
    return cdf + u * pdf, pdf * (2 - u * u)


def _closed_form(act: Callable[[Tensor], Tensor]) -> Callable[[Tensor], tuple[Tensor, Tensor | None]] | None:
    """act' and act'' (None: zero) of torch's activation modules, as torch's autograd computes them."""
    kind = type(act)
    if kind is nn.SiLU:
        return _silu
    if kind is nn.Tanh:
        return _tanh
    if kind is nn.GELU and act.approximate == "none":
        return _gelu
    if kind is nn.Softplus:
        beta, thr = act.beta, act.threshold

        def softplus(u: Tensor) -> tuple[Tensor, Tensor]:
            sg = torch.sigmoid(beta * u)
            linear = beta * u > thr
            return torch.where(linear, 1.0, sg), torch.where(linear, 0.0, beta * sg * (1 - sg))

        return softplus
    if kind is nn.ELU:
        alpha = act.alpha

        def elu(u: Tensor) -> tuple[Tensor, Tensor]:
            neg = alpha * torch.exp(torch.clamp(u, max=0))
            return torch.where(u > 0, 1.0, neg), torch.where(u > 0, 0.0, neg)

        return elu
    if kind is nn.ReLU:
        return lambda u: ((u > 0).to(u.dtype), None)
    if kind is nn.LeakyReLU:
        slope = act.negative_slope
        return lambda u: (slope + (1 - slope) * (u > 0).to(u.dtype), None)
    return None


def _derivatives(act: Callable[[Tensor], Tensor], u: Tensor, second: bool) -> tuple[Tensor, Tensor | None]:
    """(act'(u), act''(u) or None) for an elementwise activation."""
    closed = _closed_form(act)
    if closed is not None:
        d1, d2 = closed(u)
        return d1, (d2 if second else None)
    ones = torch.ones_like(u)
    if not second:
        return jvp(act, (u,), (ones,))[1], None
    (_, d1), (_, d2) = jvp(lambda v: jvp(act, (v,), (ones,)), (u,), (ones,))
    return d1, d2


# --------------------------------------------------------------------------------------------
# the traces


def _chain_forward(ends: LinearEnds, chain: Chain, x: Tensor, second: bool):
    """z_L and per layer act'(u_k) (and act''(u_k) when ``second``)."""
    u = _add(ends.input(x), ends.input_bias)
    d1s, d2s = [], []
    z = None
    for k in range(len(chain.layers) + 1):
        if k:
            u = _add(chain.layers[k - 1](z), chain.bias(k - 1))
        z = chain.activation(u)
        d1, d2 = _derivatives(chain.activation, u, second)
        d1s.append(d1)
        d2s.append(d2)
    return z, d1s, d2s


def _trilinear(a: Tensor, y_t: Tensor, c: Tensor, b: Tensor) -> Tensor:
    """sum_kji a_k y_kji c_i b_j per row, y_t[j, i, k] = y_kji: one (n, h) x (h, h^2) product, then a
    batched matrix-vector one."""
    p = (a @ y_t.reshape(-1, y_t.shape[2]).T).view(a.shape[0], y_t.shape[0], y_t.shape[1])
    return ((p @ c.unsqueeze(2)).squeeze(2) * b).sum(-1)


def _chain_trace(mt: Tensor, weights: Sequence[Tensor], d1s: Sequence[Tensor]) -> Tensor:
    """tr(D_L W_{L-1} ... W_1 D_1 M) per row, D_k = diag(d1s[k]), from mt = M^T (h_L, h_1)."""
    n, layers = d1s[0].shape[0], len(d1s)
    if layers == 1:
        return d1s[0] @ torch.diagonal(mt)
    if layers == 2:  # sum_jk d2_j (W_1)_jk d1_k M_kj
        return ((d1s[0] @ (weights[0] * mt).T) * d1s[1]).sum(-1)
    if n >= mt.shape[1]:  # fold M and W_1 into one h x h x h tensor shared by the batch
        fold = mt.unsqueeze(1) * weights[0].unsqueeze(0)  # [j, i, k] = M_kj (W_1)_ik
        if layers == 3:  # sum_kji d1_k d2_i d3_j M_kj (W_1)_ik (W_2)_ji
            return _trilinear(d1s[0], fold * weights[1].unsqueeze(2), d1s[1], d1s[2])
        s = (d1s[0] @ fold.reshape(-1, fold.shape[2]).T).view(n, fold.shape[0], fold.shape[1])
    else:  # fewer rows than units: carry the per-row tangent from the start
        s = (mt.unsqueeze(0) * d1s[0].unsqueeze(1)) @ weights[0].T
    # s = (W_1 D_1 M)^T, (n, h_L, h_2); T <- W_k D_k T, one (n h_L, h) x (h, h) product per layer
    for w, d in zip(weights[1:-1], d1s[1:-2], strict=True):
        s = (s * d.unsqueeze(1)) @ w.T
    return (((s * weights[-1]) @ d1s[-2].unsqueeze(2)).squeeze(2) * d1s[-1]).sum(-1)


def _in_blocks(fn: Callable[..., Tensor], shared: tuple, per_row: Sequence[Sequence[Tensor | None]],
               rows: int) -> Tensor:
    """fn(*shared, *per_row) on blocks of ``rows`` rows, each recomputed in the backward (checkpointing)."""
    n = next(t for t in per_row[0] if t is not None).shape[0]
    if rows >= n:
        return fn(*shared, *per_row)

    def block(i: int) -> list:
        return [[None if t is None else t[i:i + rows] for t in group] for group in per_row]

    return torch.cat([checkpoint(fn, *shared, *block(i), use_reentrant=False) for i in range(0, n, rows)])


def _block_rows(h: int, low_memory: bool) -> int:
    """Rows per block of the per-row h x h tangents: all, or 2^20 numbers (4 MiB in float32) with low_memory."""
    return max(1, 2**20 // (h * h)) if low_memory else 2**62


def _score_trace(ends: LinearEnds, x: Tensor, low_memory: bool) -> tuple[Tensor, Tensor]:
    w_in, w_out = ends.input.weight, ends.output.weight
    mt = w_out.T @ w_in.T  # M^T, contiguous: the elementwise products below read it row by row
    if isinstance(ends.inner, Chain):
        z, d1s, _ = _chain_forward(ends, ends.inner, x, second=False)
        weights = [layer.weight for layer in ends.inner.layers]
        rows = _block_rows(mt.shape[0], low_memory and len(d1s) > 2)
        tr = _in_blocks(_chain_trace, (mt, weights), (d1s,), rows)
    else:
        g = ends.inner
        u = _add(ends.input(x), ends.input_bias)

        def push(t: Tensor) -> tuple[Tensor, Tensor]:
            return jvp(g, (u,), (t.expand_as(u),))

        z, cols = vmap(push, out_dims=(None, 0))(mt)  # cols[j] = J_g m_j, (h_L, n, h_L)
        tr = cols.diagonal(dim1=0, dim2=2).sum(-1)
    s = ends.output(z)
    return _scaled(s, ends.scale), _scaled(tr, ends.scale)


def _hessian_trace(gram: Tensor, weights: Sequence[Tensor], d1s: Sequence[Tensor],
                   curv: Sequence[Tensor | None]) -> Tensor:
    """sum_k sum_i curv_k,i (J_k G J_k^T)_ii per row, J_1 = I, J_{k+1} = W_k D_k J_k."""
    lap = torch.zeros_like(d1s[0][:, 0])
    if curv[0] is not None:
        lap = lap + curv[0] @ torch.diagonal(gram)
    needed = [k for k in range(1, len(d1s)) if curv[k] is not None]
    q = qg = None
    for k in range(1, max(needed, default=0) + 1):  # J_{k+1} and J_{k+1} G, (n, h_{k+1}, h_1)
        w = weights[k - 1]
        if q is None:
            q = w * d1s[0].unsqueeze(1)
            qg = q @ gram
        else:
            d = d1s[k - 1].unsqueeze(2)
            q, qg = w @ (q * d), w @ (qg * d)
        if curv[k] is not None:
            lap = lap + (curv[k] * (q * qg).sum(-1)).sum(-1)
    return lap


def _energy_laplacian(ends: LinearEnds, chain: Chain, x: Tensor, low_memory: bool) -> tuple[Tensor, Tensor]:
    """(grad_u phi, tr(H_u G)) per row for phi = w^T g(u), through the chain."""
    w_in = ends.input.weight
    _, d1s, d2s = _chain_forward(ends, chain, x, second=True)
    weights = [layer.weight for layer in chain.layers]
    g = ends.output.weight[0].expand_as(d1s[-1])  # dphi/dz_L
    deltas, curv = [None] * len(d1s), [None] * len(d1s)
    for k in range(len(d1s) - 1, -1, -1):
        deltas[k] = d1s[k] * g  # dphi/du_k
        curv[k] = None if d2s[k] is None else d2s[k] * g  # act''(u_k) dphi/dz_k
        if k:
            g = deltas[k] @ weights[k - 1]
    rows = _block_rows(w_in.shape[0], low_memory and len(d1s) > 1)
    lap = _in_blocks(_hessian_trace, (w_in @ w_in.T, weights), (d1s, curv), rows)
    return deltas[0], lap


def _energy_laplacian_func(ends: LinearEnds, x: Tensor) -> tuple[Tensor, Tensor]:
    """The same for any inner map g, by torch.func (h_1 Hessian-vector products per row)."""
    w_in, w = ends.input.weight, ends.output.weight[0]
    g = ends.inner
    u = _add(ends.input(x), ends.input_bias)
    grad_phi = grad(lambda v: (g(v) @ w).sum())
    gram = w_in @ w_in.T

    def hvp(t: Tensor) -> tuple[Tensor, Tensor]:
        return jvp(grad_phi, (u,), (t.expand_as(u),))

    delta, cols = vmap(hvp, out_dims=(None, 0))(gram)  # cols[i] = H g_i, (h_1, n, h_1)
    return delta, cols.diagonal(dim1=0, dim2=2).sum(-1)


def _energy_trace(ends: LinearEnds, x: Tensor, low_memory: bool) -> tuple[Tensor, Tensor]:
    if isinstance(ends.inner, Chain):
        delta, lap = _energy_laplacian(ends, ends.inner, x, low_memory)
    else:
        delta, lap = _energy_laplacian_func(ends, x)
    s = -(delta @ ends.input.weight)
    return _scaled(s, ends.scale), -_scaled(lap, ends.scale)


def _scaled(v: Tensor, scale: Tensor | float | None) -> Tensor:
    if scale is None:
        return v
    if isinstance(scale, Tensor) and scale.dim() == 1:
        return v * scale.reshape(-1, *([1] * (v.dim() - 1)))
    return v * scale


def evaluate(ends: LinearEnds, x: Tensor, low_memory: bool = False) -> tuple[Tensor, Tensor]:
    """(s(x), tr(grad_x s(x))) per row from a network's linear ends (s = -grad_x E for an energy)."""
    if ends.energy:
        return _energy_trace(ends, x, low_memory)
    return _score_trace(ends, x, low_memory)
