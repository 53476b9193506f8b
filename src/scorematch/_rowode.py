"""An adaptive Dormand-Prince 5(4) solver with one step-size controller per row of a batch.

The batch holds n independent ODEs dy_i/dt = f(t_i, y_i). Row i has its own time t_i, step h_i
and accept/reject decision, so its solution is the one the same solver gives for row i alone,
whatever the other rows; the rows still running are evaluated together, each at its own time,
in one call per stage (``f`` takes a time per row). The method, its error estimate, controller
and first step are those of torchdiffeq's ``dopri5`` (Dormand & Prince 1980; Hairer, Norsett &
Wanner, Solving ODEs I, II.4), with the norm taken per row:

    err_i = max_k RMS_j( e_kij / (atol + rtol max(|y_kij|, |y'_kij|)) )   (k over the state's tensors),

accepted when err_i <= 1, next step h_i min(10, max(0.9 err_i^(-1/5), 0.2 if err_i >= 1 else 1)),
first step min(100 h0, (0.01 / max(d1, d2))^(1/5)) with h0 = 0.01 d0 / d1 (1e-6 when d0 or d1
< 1e-5), d0 = ||y0 / sc||, d1 = ||f0 / sc||, d2 = ||f(t0 + h0, y0 + h0 f0) - f0|| / (sc h0),
sc = atol + rtol |y0|. Unlike torchdiffeq, a row's last step is shortened to end exactly at t1
(no step past it). States between steps come from the method's quartic dense output.

Evaluations per row: 2 to start (f0 and the first-step probe), then 6 per attempted step (the
seventh stage is the next step's first: FSAL); the calls of ``f`` are batched over the running rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from scorematch.errors import ModelError

__all__ = ["RowODEResult", "solve_rows"]

_A = (0.2, 0.3, 0.8, 8 / 9, 1.0, 1.0)
_B = (
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
    (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84),
)
_E = (35 / 384 - 1951 / 21600, 0.0, 500 / 1113 - 22642 / 50085, 125 / 192 - 451 / 720,
      -2187 / 6784 + 12231 / 42400, 11 / 84 - 649 / 6300, -1 / 60)
_MID = (6025192743 / 30085553152 / 2, 0.0, 51252292925 / 65400821598 / 2, -2691868925 / 45128329728 / 2,
        187940372067 / 1594534317056 / 2, -1776094331 / 19743644256 / 2, 11237099 / 235043384 / 2)

#: f(t, y, rows): t (k,) the rows' times, y a tuple of tensors (k, ...), rows (k,) their indices
RHS = Callable[[Tensor, tuple[Tensor, ...], Tensor], tuple[Tensor, ...]]


class RowODEResult:
    """``y`` the state at t1 (a tuple like y0); ``snapshots`` the states at the requested times
    (a list of tuples, in the order asked); ``calls`` the batched calls of f; ``evaluations`` the
    rows' evaluations of f, summed; ``steps`` the batched attempts; ``n_accept``/``n_reject``
    summed over rows."""

    def __init__(self, y: tuple[Tensor, ...], snapshots: list[tuple[Tensor, ...]], stats: dict[str, int]) -> None:
        self.y, self.snapshots = y, snapshots
        self.calls, self.evaluations = stats["calls"], stats["evaluations"]
        self.steps, self.n_accept, self.n_reject = stats["steps"], stats["n_accept"], stats["n_reject"]


def _bc(v: Tensor, like: Tensor) -> Tensor:
    return v.reshape(-1, *([1] * (like.dim() - 1))).to(like.dtype)


def _norm(parts: Sequence[Tensor]) -> Tensor:
    """max over the tensors of the root mean square over each row's entries, (k,) float64."""
    rms = [p.reshape(p.shape[0], -1).double().pow(2).mean(1).sqrt() for p in parts]
    return torch.stack(rms).amax(0)


def _combine(y: tuple[Tensor, ...], h: Tensor, ks: list[tuple[Tensor, ...]], coeffs: Sequence[float]) -> tuple:
    """y + h sum_j coeffs_j k_j, per tensor of the state (h per row)."""
    out = []
    for i, yi in enumerate(y):
        acc = torch.zeros_like(yi)
        for c, k in zip(coeffs, ks, strict=False):
            if c != 0.0:
                acc = acc + c * k[i]
        out.append(yi + _bc(h, yi) * acc)
    return tuple(out)


def solve_rows(f: RHS, y0: tuple[Tensor, ...], t0: float, t1: float, rtol: float, atol: float,
               snapshots: Sequence[float] = (), on_call: Callable[[int], None] | None = None,
               max_steps: int = 100_000) -> RowODEResult:
    """Solve dy/dt = f(t, y) from t0 to t1 (either direction) for every row of the state ``y0``
    (a tuple of tensors sharing their first dimension), each row with its own steps (module
    docstring). ``snapshots``: times in [min, max] of t0, t1 where the state is also returned,
    from each row's dense output. ``on_call(k)`` is called before each batched call with its
    number of rows. ModelError when f gives non-finite values or a row needs more than
    ``max_steps`` attempts."""
    n = y0[0].shape[0]
    dev = y0[0].device
    span = abs(t1 - t0)
    sign = 1.0 if t1 >= t0 else -1.0
    stats = {"calls": 0, "evaluations": 0, "steps": 0, "n_accept": 0, "n_reject": 0}

    def call(u: Tensor, y: tuple[Tensor, ...], rows: Tensor) -> tuple[Tensor, ...]:
        if on_call is not None:
            on_call(int(rows.numel()))
        stats["calls"] += 1
        stats["evaluations"] += int(rows.numel())
        out = f(t0 + sign * u, y, rows)
        return tuple(sign * o for o in out)

    every = torch.arange(n, device=dev)
    u = torch.zeros(n, dtype=torch.float64, device=dev)
    y = tuple(t.clone() for t in y0)
    f0 = call(u, y, every)
    scale = [atol + rtol * t.abs() for t in y]
    d0 = _norm([a / s for a, s in zip(y, scale, strict=True)])
    d1 = _norm([a / s for a, s in zip(f0, scale, strict=True)])
    h0 = torch.where((d0 < 1e-5) | (d1 < 1e-5), torch.full_like(d0, 1e-6), 0.01 * d0 / d1.clamp(min=1e-300))
    f1 = call(u + h0, tuple(a + _bc(h0, a) * b for a, b in zip(y, f0, strict=True)), every)
    d2 = _norm([(b - a) / s for a, b, s in zip(f0, f1, scale, strict=True)]) / h0
    tiny = (d1 <= 1e-15) & (d2 <= 1e-15)
    h1 = torch.where(tiny, torch.clamp(h0 * 1e-3, min=1e-6), (0.01 / torch.maximum(d1, d2).clamp(min=1e-300)) ** 0.2)
    h = torch.minimum(100 * h0, h1)
    marks = sorted({min(span, max(0.0, sign * (float(s) - t0))) for s in snapshots})
    where = {m: i for i, m in enumerate(marks)}
    snap: list[list[Tensor | None]] = [[None] * len(y) for _ in marks]
    snap_rows = [torch.zeros(n, dtype=torch.bool, device=dev) for _ in marks]
    for j, m in enumerate(marks):
        if m == 0.0:
            snap[j] = [t.clone() for t in y]
            snap_rows[j][:] = True
    attempts = torch.zeros(n, dtype=torch.int64, device=dev)
    while True:
        rows = torch.nonzero(u < span * (1 - 1e-12)).flatten()
        if rows.numel() == 0:
            break
        ya = tuple(t[rows] for t in y)
        ua = u[rows]
        hh = torch.minimum(h[rows], span - ua)
        ks = [tuple(t[rows] for t in f0)]
        for a, b in zip(_A, _B, strict=True):
            ks.append(call(ua + a * hh, _combine(ya, hh, ks, b), rows))
        y1 = _combine(ya, hh, ks[:6], _B[5])
        err = _combine(tuple(torch.zeros_like(t) for t in ya), hh, ks, _E)
        tol = [atol + rtol * torch.maximum(a.abs(), b.abs()) for a, b in zip(ya, y1, strict=True)]
        ratio = _norm([e / s for e, s in zip(err, tol, strict=True)])
        if not bool(torch.isfinite(ratio).all()):
            raise ModelError("the ODE's right-hand side gave non-finite values")
        ok = ratio <= 1
        dfactor = torch.where(ratio < 1, torch.ones_like(ratio), torch.full_like(ratio, 0.2))
        factor = torch.minimum(torch.full_like(ratio, 10.0),
                               torch.maximum(0.9 / ratio.clamp(min=1e-300) ** 0.2, dfactor))
        h[rows] = hh * torch.where(ratio == 0, torch.full_like(ratio, 10.0), factor)
        attempts[rows] += 1
        stats["steps"] += 1
        stats["n_accept"] += int(ok.sum())
        stats["n_reject"] += int((~ok).sum())
        if bool((attempts[rows] > max_steps).any()):
            raise ModelError(f"the ODE solver took more than {max_steps} steps on a sample; loosen rtol/atol")
        done = rows[ok]
        if marks and done.numel():
            _dense(marks, where, snap, snap_rows, ya, y1, ks, ua, hh, ok, done)
        new_u = torch.where(hh >= span - ua, torch.full_like(ua, span), ua + hh)
        u[done] = new_u[ok]
        for i, t in enumerate(y):
            t[done] = y1[i][ok]
        for i, t in enumerate(f0):
            t[done] = ks[6][i][ok]
    by_mark = [tuple(s if s is not None else t.clone() for s, t in zip(sn, y, strict=True)) for sn in snap]
    out_snaps = [by_mark[where[min(span, max(0.0, sign * (float(s) - t0)))]] for s in snapshots]
    return RowODEResult(y, out_snaps, stats)


def _dense(marks: list[float], where: dict[float, int], snap: list[list[Tensor | None]], snap_rows: list[Tensor],
           ya: tuple[Tensor, ...], y1: tuple[Tensor, ...], ks: list[tuple[Tensor, ...]], ua: Tensor, hh: Tensor,
           ok: Tensor, done: Tensor) -> None:
    """Fill the snapshots that fall inside the accepted steps (u, u + h] from the quartic through
    y0, y1, y_mid and the end derivatives (torchdiffeq's dopri5 dense output)."""
    mid = _combine(ya, hh, ks, _MID)
    lo, width = ua[ok], hh[ok]
    for m in marks:
        j = where[m]
        inside = (lo < m) & (m <= lo + width * (1 + 1e-12))
        if not bool(inside.any()):
            continue
        x = ((m - lo[inside]) / width[inside]).clamp(max=1.0)
        rows = done[inside]
        for i, (a, b, c) in enumerate(zip(ya, y1, mid, strict=True)):
            a, b, c = a[ok][inside], b[ok][inside], c[ok][inside]
            dt = _bc(width[inside], a)
            f0, f1 = ks[0][i][ok][inside], ks[6][i][ok][inside]
            coef = (a, dt * f0, dt * (f1 - 4 * f0) - 11 * a - 5 * b + 16 * c,
                    dt * (5 * f0 - 3 * f1) + 18 * a + 14 * b - 32 * c, 2 * dt * (f1 - f0) - 8 * (b + a) + 16 * c)
            xb = _bc(x, a)
            val = coef[4]
            for cf in coef[3::-1]:
                val = val * xb + cf
            val = torch.where(xb >= 1, b, val)  # a step's end is its state, not the polynomial's rounding of it
            if snap[j][i] is None:
                snap[j][i] = torch.empty((snap_rows[j].shape[0], *a.shape[1:]), dtype=a.dtype, device=a.device)
            snap[j][i][rows] = val
        snap_rows[j][rows] = True
