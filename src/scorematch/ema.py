"""Power-function EMA and its post-hoc reconstruction (Karras et al. 2024, "Analyzing and Improving
the Training Dynamics of Diffusion Models").

A power-function EMA with exponent gamma >= 0 averages the weights theta(tau) seen up to step t with
weight proportional to tau^gamma. It is tracked one step at a time by

    theta_hat(t) = beta_t theta_hat(t-1) + (1 - beta_t) theta(t),   beta_t = (1 - 1/t)^(gamma + 1),

(t = 1, 2, ... the number of optimiser steps taken; beta_1 = 0), which gives theta(tau) the weight
(tau^(gamma+1) - (tau-1)^(gamma+1)) / t^(gamma+1) ~ (gamma + 1) tau^gamma / t^(gamma+1). Its length
is stated relative to the training time: sigma_rel, the standard deviation of that profile
divided by t,

    sigma_rel^2 = (gamma + 1) / ((gamma + 2)^2 (gamma + 3)).

Post-hoc EMA: keep snapshots of two such averages (two gammas) every K steps; afterwards, the
average of any other length sigma_rel at a step t is approximated by the linear combination of the
snapshots whose profile is nearest to its profile in L2(0, infinity): with the continuous
profiles p_(t,gamma)(tau) = (gamma + 1) tau^gamma / t^(gamma+1) on [0, t], the inner products are

    <p_a, p_b> = (gamma_a + 1)(gamma_b + 1) min(t_a, t_b)^(gamma_a + gamma_b + 1)
                 / ((gamma_a + gamma_b + 1) t_a^(gamma_a + 1) t_b^(gamma_b + 1)),

and the weights x solve the least-squares problem A x = b, A_ij = <p_i, p_j>, b_i = <p_i, p_target>.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from scorematch._checks import positive, positive_int
from scorematch.errors import CheckpointError, ConfigError

#: the largest sigma_rel of a power EMA with gamma >= 0 (gamma = 0: the uniform average, 12^-1/2)
MAX_SIGMA_REL = 12.0 ** -0.5
#: the lengths tracked during training by default (Karras et al. 2024 keep 0.05 and 0.10)
DEFAULT_SIGMA_RELS = (0.05, 0.10)


def gamma_to_sigma_rel(gamma: float) -> float:
    """sigma_rel = sqrt((gamma + 1) / ((gamma + 2)^2 (gamma + 3))) for gamma >= 0."""
    g = float(gamma)
    if not math.isfinite(g) or g < 0:
        raise ConfigError(f"a power EMA exponent gamma must be a finite number >= 0, got {gamma!r}")
    return math.sqrt((g + 1) / ((g + 2) ** 2 * (g + 3)))


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The exponent gamma >= 0 of the power EMA of relative length ``sigma_rel`` in (0, 12^-1/2]:
    the largest real root of sigma_rel^2 (gamma + 2)^2 (gamma + 3) - (gamma + 1) = 0."""
    s = positive("sigma_rel", sigma_rel)
    if s > MAX_SIGMA_REL * (1 + 1e-12):
        raise ConfigError(f"sigma_rel must lie in (0, {MAX_SIGMA_REL:.4f}] (a longer average than the "
                          f"uniform one does not exist), got {sigma_rel!r}")
    s2 = min(s, MAX_SIGMA_REL) ** 2
    roots = np.roots([s2, 7 * s2, 16 * s2 - 1, 12 * s2 - 1])
    real = roots[np.abs(roots.imag) < 1e-7 * np.maximum(1.0, np.abs(roots.real))].real
    return float(max(real.max(), 0.0))


def _floating(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point()}


@dataclass
class Snapshot:
    """A power EMA of exponent ``gamma`` as it stood after ``step`` optimiser steps."""

    step: int
    gamma: float
    state: dict[str, torch.Tensor]


class PowerEMA:
    """Power-function EMAs of a model's floating-point state, one per entry of ``sigma_rels``.

    ``update(step, state)`` after each optimiser step (step = 1, 2, ... steps taken) folds the
    current weights into every average; ``snapshots(step)`` returns detached copies of the
    averages, to be stored every K steps. Averages are kept in float32 (float64 inputs stay
    float64), on the device of the state.
    """

    def __init__(self, sigma_rels: Sequence[float] = DEFAULT_SIGMA_RELS) -> None:
        if not sigma_rels:
            raise ConfigError("a power EMA needs at least one sigma_rel")
        self.gammas = [sigma_rel_to_gamma(s) for s in sigma_rels]
        self.averages: list[dict[str, torch.Tensor]] | None = None
        self.step = 0

    @torch.no_grad()
    def update(self, step: int, state: Mapping[str, torch.Tensor]) -> None:
        """Fold ``state`` (the weights after optimiser step ``step``) into each average."""
        step = positive_int("step", step)
        if step <= self.step:
            raise ConfigError(f"power EMA steps must increase, got {step} after {self.step}")
        current = _floating(state)
        if self.averages is None:
            self.averages = [{k: _work_copy(v) for k, v in current.items()} for _ in self.gammas]
        for gamma, avg in zip(self.gammas, self.averages, strict=True):
            beta = (1.0 - 1.0 / step) ** (gamma + 1.0)
            for k, v in current.items():
                avg[k].mul_(beta).add_(v.detach().to(avg[k].dtype), alpha=1.0 - beta)
        self.step = step

    def snapshots(self) -> list[Snapshot]:
        """Copies of the averages as they stand now (one per gamma)."""
        if self.averages is None:
            raise ConfigError("the power EMA has seen no step yet")
        return [Snapshot(self.step, g, {k: v.clone() for k, v in avg.items()})
                for g, avg in zip(self.gammas, self.averages, strict=True)]

    def state_dict(self) -> dict[str, object]:
        """What a resumed run needs: the step, the gammas and the averages (the live tensors; save
        or copy them before the next ``update``)."""
        return {"step": self.step, "gammas": list(self.gammas),
                "averages": [dict(a) for a in (self.averages or [])]}

    def load_state_dict(self, state: Mapping[str, object]) -> None:
        gammas = [float(g) for g in state["gammas"]]  # type: ignore[union-attr]
        if len(gammas) != len(self.gammas) or any(
            abs(a - b) > 1e-9 for a, b in zip(gammas, self.gammas, strict=True)
        ):
            raise CheckpointError(f"the checkpoint tracks power EMAs with gammas {gammas}, not {self.gammas}")
        self.step = int(state["step"])  # type: ignore[arg-type]
        averages = state["averages"]
        self.averages = ([{k: _work_copy(v) for k, v in a.items()} for a in averages]  # type: ignore[union-attr]
                         if averages else None)


def _work_copy(v: torch.Tensor) -> torch.Tensor:
    dtype = torch.float64 if v.dtype == torch.float64 else torch.float32
    return v.detach().to(dtype).clone()


def profile_inner_products(t_a: np.ndarray, g_a: np.ndarray, t_b: np.ndarray, g_b: np.ndarray) -> np.ndarray:
    """<p_(t_a, g_a), p_(t_b, g_b)> for all pairs (rows: a, columns: b), float64 (module docstring)."""
    ta, ga = np.asarray(t_a, np.float64)[:, None], np.asarray(g_a, np.float64)[:, None]
    tb, gb = np.asarray(t_b, np.float64)[None, :], np.asarray(g_b, np.float64)[None, :]
    lo = np.minimum(ta, tb)
    # (lo/ta)^(ga+1) (lo/tb)^(gb+1) / lo, written with ratios <= 1 so that large t cannot overflow
    return (ga + 1) * (gb + 1) * (lo / ta) ** (ga + 1) * (lo / tb) ** (gb + 1) / ((ga + gb + 1) * lo)


def posthoc_weights(steps: Sequence[int], gammas: Sequence[float], sigma_rel: float,
                    at_step: int | None = None) -> np.ndarray:
    """Weights x (one per snapshot) of the least-squares reconstruction of the power EMA of length
    ``sigma_rel`` at step ``at_step`` (default: the last snapshot's step) from snapshots taken at
    ``steps`` with exponents ``gammas``."""
    t = np.asarray(steps, np.float64)
    g = np.asarray(gammas, np.float64)
    if t.ndim != 1 or t.size == 0 or t.size != g.size or (t <= 0).any():
        raise ConfigError("post-hoc EMA needs snapshots at steps >= 1, one gamma each")
    target_t = float(t.max() if at_step is None else positive_int("at_step", at_step))
    target_g = sigma_rel_to_gamma(sigma_rel)
    a = profile_inner_products(t, g, t, g)
    b = profile_inner_products(t, g, np.array([target_t]), np.array([target_g]))[:, 0]
    x, *_ = np.linalg.lstsq(a, b, rcond=None)
    return x


def reconstruct(snapshots: Sequence[Snapshot], sigma_rel: float,
                at_step: int | None = None) -> dict[str, torch.Tensor]:
    """The state of the power EMA of length ``sigma_rel`` at ``at_step`` (default: the last
    snapshot's step), as sum_i x_i snapshot_i with ``posthoc_weights`` (summed in float64, returned
    in each entry's dtype). Every snapshot must hold the same keys and shapes."""
    if not snapshots:
        raise ConfigError("post-hoc EMA needs at least one snapshot")
    x = posthoc_weights([s.step for s in snapshots], [s.gamma for s in snapshots], sigma_rel, at_step)
    keys = snapshots[0].state.keys()
    for s in snapshots[1:]:
        if s.state.keys() != keys or any(s.state[k].shape != snapshots[0].state[k].shape for k in keys):
            raise CheckpointError(f"the EMA snapshot of step {s.step} holds other tensors than that of "
                                  f"step {snapshots[0].step}; all snapshots must come from one model")
    out = {}
    for k in keys:
        acc = torch.zeros_like(snapshots[0].state[k], dtype=torch.float64)
        for w, s in zip(x, snapshots, strict=True):
            acc.add_(s.state[k].to(torch.float64), alpha=float(w))
        out[k] = acc.to(snapshots[0].state[k].dtype)
    return out
