"""The score-matching objectives against closed forms, brute-force references and their identities:

ESM - ISM = 1/2 E||s*||^2; SSM -> ISM; exact traces vs per-row Jacobians and analytic Laplacians;
the DSM minimiser is the noisy score; DSM/NCSN values for Gaussian data in closed form; the KDE
score against a float64 brute force.
"""

from __future__ import annotations

import itertools
import math
import sys
import warnings

import pytest
import torch
from torch import nn

from scorematch.autodiff import score_and_trace, score_and_vjv
from scorematch.distributions import GaussianMixture, toy
from scorematch.errors import ConfigError, DataError, ScoreMatchWarning
from scorematch.models.mlp import EnergyMLP, ScoreMLP, energy_to_score
from scorematch.objectives import dsm, esm, esm_kde, ism, kde_score, ncsn, ncsn_per_sample, ssm

# --------------------------------------------------------------------------------------------
# helpers


def brute_force_trace(f, x: torch.Tensor) -> torch.Tensor:
    """tr(d f(x_i) / d x_i) for each row, from the full per-row Jacobian (torch.autograd.functional)."""
    out = []
    for i in range(x.shape[0]):
        jac = torch.autograd.functional.jacobian(lambda v: f(v[None])[0], x[i])
        d = x[i].numel()
        out.append(jac.reshape(d, d).diagonal().sum())
    return torch.stack(out)


def per_row_jacobian(f, x: torch.Tensor) -> torch.Tensor:
    """(n, D, D) Jacobians of a row-wise vector function."""
    return torch.stack(
        [torch.autograd.functional.jacobian(lambda v: f(v[None])[0], x[i]) for i in range(len(x))]
    )


class Quadratic(nn.Module):
    """Energy model E(x) = 1/2 x^T A x + b^T x: score -(A + A^T)/2 x - b, Laplacian tr A."""

    kind = "energy"

    def __init__(self, a: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.a, self.b = nn.Parameter(a.clone()), nn.Parameter(b.clone())

    def energy(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x @ self.a) * x).sum(1) + x @ self.b

    forward = energy

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return energy_to_score(self.energy)(x)


def spd(d: int, g: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    m = torch.randn(d, d, generator=g, dtype=dtype)
    return m @ m.T / d + 0.5 * torch.eye(d, dtype=dtype)


# --------------------------------------------------------------------------------------------
# exact traces


class ConvScore(nn.Module):
    """A per-example score on (n, 1, 4, 4) images (no batch statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 4, 3, padding=1), nn.SiLU(), nn.Conv2d(4, 1, 3, padding=1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x) + 0.3 * torch.tanh(x.flatten(1) @ self.mix).view_as(x)

    def reset(self, g: torch.Generator) -> ConvScore:
        self.mix = torch.randn(16, 16, generator=g, dtype=torch.float64)
        return self


@pytest.mark.parametrize("d", [1, 2, 7, 64])
@pytest.mark.parametrize("method", ["jvp", "vjp", "loop", "auto"])
def test_exact_trace_matches_per_row_jacobian(d: int, method: str, gen: torch.Generator) -> None:
    n = 6 if d == 64 else 10
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    for model in (ScoreMLP(d, hidden=32).double(), EnergyMLP(d, hidden=32).double()):
        ref = brute_force_trace(model.score, x)
        s, tr = score_and_trace(model.score, x, method=method)
        torch.testing.assert_close(s, model.score(x))
        torch.testing.assert_close(tr, ref, rtol=1e-9, atol=1e-10)
        # the batched methods chunked over the basis (7 = 3 + 3 + 1) give the same trace
        if method in ("jvp", "vjp"):
            _, tr3 = score_and_trace(model.score, x, method=method, chunk_size=3)
            torch.testing.assert_close(tr3, ref, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("method", ["jvp", "vjp", "loop", "auto"])
def test_exact_trace_on_images(method: str, gen: torch.Generator) -> None:
    model = ConvScore().double().reset(gen)
    x = torch.randn(5, 1, 4, 4, generator=gen, dtype=torch.float64)
    ref = brute_force_trace(model, x)
    s, tr = score_and_trace(model, x, method=method, chunk_size=5)
    assert s.shape == x.shape and tr.shape == (5,)
    torch.testing.assert_close(tr, ref, rtol=1e-9, atol=1e-10)
    # a flatten-MLP-unflatten score on the same shape
    mlp = ScoreMLP(16, hidden=24).double()

    def flat(y: torch.Tensor) -> torch.Tensor:
        return mlp(y.flatten(1)).view_as(y)

    torch.testing.assert_close(score_and_trace(flat, x, method=method)[1], brute_force_trace(flat, x))


@pytest.mark.parametrize("method", ["jvp", "vjp", "loop", "auto"])
def test_trace_and_ism_of_quadratic_energy(method: str, gen: torch.Generator) -> None:
    d = 5
    a, b = spd(d, gen), torch.randn(d, generator=gen, dtype=torch.float64)
    x = torch.randn(40, d, generator=gen, dtype=torch.float64)
    model = Quadratic(a, b)
    expected_s = -(x @ a + b)
    for fn in (model.score, energy_to_score(model.energy), lambda y: -(y @ a + b)):
        s, tr = score_and_trace(fn, x, method=method)
        torch.testing.assert_close(s, expected_s)
        torch.testing.assert_close(tr, torch.full((40,), -float(a.trace()), dtype=torch.float64))
    # ISM = E[-tr A + 1/2 ||A x + b||^2], through the module (energy model: its score is used)
    closed = -a.trace() + 0.5 * (expected_s**2).sum(1).mean()
    loss = ism(model, x, method=method)
    torch.testing.assert_close(loss, closed)
    # differentiable in theta, for any (also non-symmetric) A: L(A, b) = -tr A + 1/2 E||A_sym x + b||^2
    ga, gb = torch.autograd.grad(loss, [model.a, model.b])
    a_ref, b_ref = a.clone().requires_grad_(True), b.clone().requires_grad_(True)
    a_sym = 0.5 * (a_ref + a_ref.T)
    ref = -a_ref.trace() + 0.5 * ((x @ a_sym + b_ref) ** 2).sum(1).mean()
    ga_ref, gb_ref = torch.autograd.grad(ref, [a_ref, b_ref])
    torch.testing.assert_close(ga, ga_ref)
    torch.testing.assert_close(gb, gb_ref)


def test_autograd_calling_score_fn_auto_matches_loop(gen: torch.Generator) -> None:
    """A score_fn that calls torch.autograd.grad itself (create_graph=True), the pattern of the
    reference energy-model code: method="auto" must give the loop's (and the brute force's) trace."""
    net = nn.Sequential(nn.Linear(3, 16), nn.SiLU(), nn.Linear(16, 1)).double()

    def score_fn(x: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x.requires_grad_(True)
            (g,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
        return -g

    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    s_loop, tr_loop = score_and_trace(score_fn, x, method="loop")
    s_auto, tr_auto = score_and_trace(score_fn, x, method="auto")
    ref = brute_force_trace(lambda y: -torch.autograd.functional.jacobian(
        lambda z: net(z).sum(), y, create_graph=True), x)
    assert float(ref.abs().min()) > 1e-3
    torch.testing.assert_close(tr_loop, ref)
    torch.testing.assert_close(tr_auto, tr_loop)
    torch.testing.assert_close(s_auto, s_loop)
    torch.testing.assert_close(score_and_trace(score_fn, x, method="vjp")[1], ref)
    # and through ism, differentiable in the net's parameters, the same value as with the loop
    loss = ism(score_fn, x)
    torch.testing.assert_close(loss, ism(score_fn, x, method="loop"))
    grads = torch.autograd.grad(loss, list(net.parameters())[:3])  # the last bias has no effect
    grads_loop = torch.autograd.grad(ism(score_fn, x, method="loop"), list(net.parameters())[:3])
    for g, gl in zip(grads, grads_loop, strict=True):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, gl)


# --------------------------------------------------------------------------------------------
# ESM - ISM = 1/2 E||s*||^2


def _esm_minus_ism_chunks(model, x, target, chunk):
    """Per-chunk (ESM - ISM - 1/2 mean||s*||^2) and per-chunk mean trace, from library calls."""
    diffs, traces = [], []
    for xc in x.split(chunk):
        with torch.no_grad():
            st = target(xc)
            f = model.score(xc)
        e, i = esm(model, xc, target), ism(model, xc)
        diffs.append(float((e - i).detach()) - 0.5 * float((st**2).sum(1).mean()))
        traces.append(float(i.detach()) - 0.5 * float((f**2).sum(1).mean()))
    return torch.tensor(diffs, dtype=torch.float64), torch.tensor(traces, dtype=torch.float64)


@pytest.mark.parametrize("cls", [ScoreMLP, EnergyMLP])
def test_esm_minus_ism_is_half_expected_squared_true_score(cls, gen: torch.Generator) -> None:
    """ESM(f) - ISM(f) = 1/2 E||s*||^2 (integration by parts), in expectation over x ~ p.

    200k points of gmm2d in 100 chunks: the chunk differences give the standard error.
    """
    dist = toy("gmm2d")
    model = cls(2, hidden=32)
    x = dist.sample(200_000, generator=gen)
    diffs, traces = _esm_minus_ism_chunks(model, x, dist.score, 2000)
    se = float(diffs.std() / math.sqrt(len(diffs)))
    mean = float(diffs.mean())
    assert abs(mean) < 4 * se, (mean, se)
    # the test has power: E tr(grad f) (= -E f.s*) is many standard errors from zero, so a sign
    # or factor error in either objective would show
    assert abs(float(traces.mean())) > 20 * se
    # the whole-batch call agrees with the chunked one
    with torch.no_grad():
        const = 0.5 * float((dist.score(x) ** 2).sum(1).mean())
    whole = float((esm(model, x, dist.score) - ism(model, x)).detach())
    assert abs(whole - const - mean) < 1e-4
    assert abs(whole - const) < 4 * se


def test_esm_basics(gen: torch.Generator) -> None:
    dist = toy("gmm2d")
    x = dist.sample(500, generator=gen)
    st = dist.score(x)
    assert float(esm(dist.score, x, dist.score)) == 0.0
    model = ScoreMLP(2, hidden=16)
    with torch.no_grad():
        f = model(x)
    expected = 0.5 * ((f - st) ** 2).sum(1).mean()
    torch.testing.assert_close(esm(model, x, st), expected)
    torch.testing.assert_close(esm(model, x, dist.score), expected)
    # an energy model is used through its score, never its energy
    a, b = spd(2, gen, torch.float32), torch.randn(2, generator=gen)
    quad = Quadratic(a, b)
    assert float(esm(quad, x, -(x @ a + b)).detach()) < 1e-10
    with pytest.raises(DataError):
        esm(model, x, st[:, :1])


# --------------------------------------------------------------------------------------------
# sliced score matching


def _ssm_projection_se(f, x, projection, vr, m, g):
    """Standard error of the projection noise of ssm(...) on a fixed batch, from per-row terms."""
    jac = per_row_jacobian(f, x).double()
    with torch.no_grad():
        s = f(x).double()
    k = 4000
    if projection == "gaussian":
        v = torch.randn(k, *x.shape, generator=g, dtype=torch.float64)
    else:
        v = 2 * torch.randint(0, 2, (k, *x.shape), generator=g).double() - 1
    vjv = torch.einsum("kni,nij,knj->kn", v, jac, v)
    second = (s**2).sum(1).expand(k, -1) if vr else ((v * s).sum(2) ** 2)
    t = vjv + 0.5 * second
    return math.sqrt(float(t.var(0).mean()) / (len(x) * m))


@pytest.mark.parametrize("projection", ["gaussian", "rademacher"])
@pytest.mark.parametrize("vr", [False, True])
def test_ssm_converges_to_ism(projection: str, vr: bool, gen: torch.Generator) -> None:
    dist = toy("gmm2d")
    x = dist.sample(256, generator=gen)
    model = ScoreMLP(2, hidden=32)
    with torch.no_grad():  # a larger output scale so that both ISM terms are O(1)
        model.net[-1].weight.mul_(6.0)
    target = float(ism(model, x).detach())
    m = 200
    value = float(ssm(model, x, n_projections=m, projection=projection, variance_reduced=vr,
                      generator=gen).detach())
    se = _ssm_projection_se(model, x, projection, vr, m, gen)
    assert abs(value - target) < 4 * se, (value, target, se)
    assert abs(value - target) / abs(target) < 0.05
    # the forward- and reverse-mode Jacobian-vector products give the same value (same v)
    a = ssm(model, x, 3, projection, vr, generator=torch.Generator().manual_seed(7), method="jvp")
    b = ssm(model, x, 3, projection, vr, generator=torch.Generator().manual_seed(7), method="vjp")
    torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind", ["score net", "energy through torch.autograd.grad"])
def test_ssm_methods_agree_in_value_and_parameter_gradient(kind: str) -> None:
    """torch.func's vjp, plain autograd and forward mode give the same loss and the same
    parameter gradient, also for a score function that calls torch.autograd.grad itself."""
    torch.manual_seed(0)
    net = ScoreMLP(3, hidden=16) if kind == "score net" else EnergyMLP(3, hidden=16)

    def energy_score(y: torch.Tensor) -> torch.Tensor:
        y = y if y.requires_grad else y.detach().requires_grad_(True)
        return -torch.autograd.grad(net(y).sum(), y, create_graph=True)[0]

    fn = net if kind == "score net" else energy_score
    x = torch.randn(64, 3)
    results = {}
    for method in ("auto", "vjp", "autograd", "jvp"):
        if method == "jvp" and kind != "score net":
            continue  # forward mode over torch.autograd.grad is not supported by torch.func
        net.zero_grad()
        loss = ssm(fn, x, 2, variance_reduced=True, generator=torch.Generator().manual_seed(3), method=method)
        loss.backward()
        # an energy's output bias gets no gradient from any score-based loss: None, kept as 0
        results[method] = (loss.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                           for p in net.parameters()])
    ref_loss, ref_grads = results["autograd"]
    assert abs(float(ref_loss)) > 1e-3 and sum(float(g.abs().sum()) for g in ref_grads) > 1e-3
    for loss, grads in results.values():
        torch.testing.assert_close(loss, ref_loss)
        for g, r in zip(grads, ref_grads, strict=True):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


def test_ssm_energy_model_converges_to_ism(gen: torch.Generator) -> None:
    dist = toy("gmm2d")
    x = dist.sample(256, generator=gen)
    model = EnergyMLP(2, hidden=32)
    target = float(ism(model, x).detach())
    value = float(ssm(model, x, n_projections=200, projection="rademacher", variance_reduced=True,
                      generator=gen).detach())
    se = _ssm_projection_se(model.score, x, "rademacher", True, 200, gen)
    assert abs(value - target) < 4 * se


def test_rademacher_quadratic_form_has_mean_trace(gen: torch.Generator) -> None:
    """s(x) = A x: the mean of v^T A v over all 2^D sign vectors is exactly tr A."""
    d = 4
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    x = torch.randn(1, d, generator=gen, dtype=torch.float64)
    vals = []
    for signs in itertools.product([-1.0, 1.0], repeat=d):
        v = torch.tensor([signs], dtype=torch.float64)
        for method in ("jvp", "vjp"):
            s, vjv = score_and_vjv(lambda y: y @ a.T, x, v, method=method)
            torch.testing.assert_close(vjv, v @ a @ v.T[:, :1].flatten())
        vals.append(float(vjv))
    assert abs(sum(vals) / len(vals) - float(a.trace())) < 1e-12


def test_ssm_vr_rademacher_exact_for_diagonal_linear_score(gen: torch.Generator) -> None:
    """With a diagonal A every Rademacher v gives v^T A v = tr A: SSM-VR == ISM for one projection."""
    a = torch.diag(torch.tensor([-1.0, 0.5, -2.0], dtype=torch.float64))
    x = torch.randn(300, 3, generator=gen, dtype=torch.float64)

    def f(y):
        return y @ a

    exact = float(ism(f, x).detach())
    torch.testing.assert_close(exact, -2.5 + 0.5 * float(((x @ a) ** 2).sum(1).mean()))
    vr = float(ssm(f, x, 1, "rademacher", variance_reduced=True, generator=gen).detach())
    assert abs(vr - exact) < 1e-12
    gauss = ssm(f, x, 1, "gaussian", variance_reduced=True, generator=gen).detach()
    assert abs(float(gauss) - exact) > 1e-3


def test_ssm_projection_variance_closed_form(make_gen) -> None:
    """Linear score s = A x, SSM-VR on one point with M projections: the estimate is
    tr A + 1/2 ||A x||^2 plus noise of variance Var(v^T A v) / M, where
    Var = sum_{i<j} (A_ij + A_ji)^2 for Rademacher v and 1/2 ||A + A^T||_F^2 for Gaussian v."""
    a = torch.tensor([[2.0, 0.3, -0.4], [0.1, -1.5, 0.2], [0.0, 0.5, 1.0]], dtype=torch.float64)
    x = torch.tensor([[0.3, -0.2, 0.5]], dtype=torch.float64)
    sym = a + a.T
    var = {
        "rademacher": float(torch.triu(sym, diagonal=1).pow(2).sum()),
        "gaussian": 0.5 * float(sym.pow(2).sum()),
    }
    mean = float(a.trace()) + 0.5 * float(((x @ a.T) ** 2).sum())
    m, r = 50, 300
    for projection, v in var.items():
        g = make_gen(11)
        vals = torch.tensor([
            float(ssm(lambda y: y @ a.T, x, m, projection, True, generator=g).detach())
            for _ in range(r)
        ], dtype=torch.float64)
        assert abs(float(vals.mean()) - mean) < 4 * math.sqrt(v / m / r)
        # sample variance of r = 300 draws: relative standard error sqrt(2/299) ~ 0.08
        assert abs(float(vals.var()) / (v / m) - 1) < 0.3, (projection, float(vals.var()), v / m)


# --------------------------------------------------------------------------------------------
# the activation warning


@pytest.mark.parametrize("objective", ["ism", "ssm"])
@pytest.mark.parametrize("cls", [ScoreMLP, EnergyMLP])
def test_piecewise_linear_warns_once(objective: str, cls, gen: torch.Generator) -> None:
    x = torch.randn(16, 2, generator=gen)
    run = {"ism": lambda m: ism(m, x), "ssm": lambda m: ssm(m, x, generator=gen)}[objective]
    relu = cls(2, hidden=8, activation="relu")
    with warnings.catch_warnings(record=True) as first:
        warnings.simplefilter("always")
        run(relu)
    assert [w.category for w in first].count(ScoreMatchWarning) == 1
    assert "piecewise-linear" in str(next(w.message for w in first if w.category is ScoreMatchWarning))
    with warnings.catch_warnings(record=True) as second:
        warnings.simplefilter("always")
        run(relu)
        run(relu.score)  # the same network through its bound method
    assert not [w for w in second if w.category is ScoreMatchWarning]
    with warnings.catch_warnings(record=True) as smooth:
        warnings.simplefilter("always")
        run(cls(2, hidden=8, activation="silu"))
    assert not [w for w in smooth if w.category is ScoreMatchWarning]


def test_relu_energy_trace_is_zero(gen: torch.Generator) -> None:
    """Why the warning exists for energy networks: a ReLU energy E is piecewise linear, so its
    score -grad E is piecewise constant and tr(grad_x s) = -Laplacian(E) = 0 almost everywhere:
    ISM of a ReLU energy MLP is exactly 1/2 E||s||^2."""
    model = EnergyMLP(2, hidden=8, activation="relu")
    x = torch.randn(64, 2, generator=gen)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loss = ism(model, x)
    with torch.no_grad():
        half_sq = 0.5 * (model.score(x) ** 2).sum(1).mean()
    torch.testing.assert_close(loss, half_sq)


def test_relu_score_trace_is_piecewise_constant_not_zero(gen: torch.Generator) -> None:
    """For a ReLU *score* network the Jacobian grad_x s = W_L D_L ... W_1 is piecewise constant,
    so the trace is not zero (unlike an energy's Laplacian) but constant inside each linear
    region: a small step that stays in the region leaves it unchanged."""
    torch.manual_seed(0)
    model = ScoreMLP(2, hidden=64, activation="relu")
    x = torch.randn(128, 2, generator=gen)
    _, tr = score_and_trace(model, x)
    _, tr_near = score_and_trace(model, x + 1e-6 * torch.randn(128, 2, generator=gen))
    assert (tr.abs() > 1e-6).float().mean() > 0.95  # non-zero at (almost) every point
    assert len(torch.unique(tr.detach().round(decimals=5))) > 20  # a different constant per region
    assert (tr - tr_near).abs().le(1e-5).float().mean() > 0.95  # constant in x inside a region


# --------------------------------------------------------------------------------------------
# denoising score matching


def dsm_gaussian_closed_form(d: int, s2: float, sigma: float) -> float:
    """x ~ N(mu, s^2 I_D), exact noisy score -(x~ - mu)/(s^2 + sigma^2):
    s(x~) + z/sigma = -u/(s^2+sigma^2) + z s^2/(sigma (s^2+sigma^2)) per coordinate (u = x - mu),
    variance s^2/(s^2+sigma^2)^2 + s^4/(sigma^2 (s^2+sigma^2)^2) = 1/sigma^2 - 1/(s^2+sigma^2)."""
    return 0.5 * d * (1 / sigma**2 - 1 / (s2 + sigma**2))


def test_dsm_closed_form_for_gaussian(gen: torch.Generator) -> None:
    d, s2, sigma, n = 3, 1.5**2, 0.7, 200_000
    mu = torch.tensor([1.0, -1.0, 2.0])
    dist = GaussianMixture([1.0], mu[None], [s2])
    x = dist.sample(n, generator=gen)
    value = float(dsm(lambda y: dist.noisy(sigma).score(y), x, sigma, generator=gen))
    expected = dsm_gaussian_closed_form(d, s2, sigma)
    # per-row term = c/2 chi^2_D with c = 2 expected / D: variance c^2 D / 2
    se = (2 * expected / d) * math.sqrt(d / 2) / math.sqrt(n)
    assert abs(value - expected) < 4 * se, (value, expected, se)
    # the minimum is at the noisy score: the clean score -(x~ - mu)/s^2 costs exactly
    # 1/2 E||s_clean - s_noisy||^2 = D/2 (s^2 + sigma^2) (1/s^2 - 1/(s^2 + sigma^2))^2 more
    at_noisy = float(dsm(dist.noisy(sigma).score, x, sigma, generator=torch.Generator().manual_seed(5)))
    clean = float(dsm(dist.score, x, sigma, generator=torch.Generator().manual_seed(5)))
    excess = 0.5 * d * (s2 + sigma**2) * (1 / s2 - 1 / (s2 + sigma**2)) ** 2
    assert abs(clean - at_noisy - excess) < 0.1 * excess, (clean - at_noisy, excess)


def test_dsm_sign(gen: torch.Generator) -> None:
    dist, sigma = toy("gmm2d"), 0.5
    x = dist.sample(20_000, generator=gen)
    noisy = dist.noisy(sigma)
    right = dsm(noisy.score, x, sigma, generator=torch.Generator().manual_seed(1))
    wrong = dsm(lambda y: -noisy.score(y), x, sigma, generator=torch.Generator().manual_seed(1))
    zero = dsm(lambda y: torch.zeros_like(y), x, sigma, generator=torch.Generator().manual_seed(1))
    assert float(right) < float(zero) < float(wrong)
    # with s = 0 the loss is 1/2 E||z/sigma||^2 = D / (2 sigma^2) (SE ~ 0.014 here)
    assert abs(float(zero) - 2 / (2 * sigma**2)) < 0.06
    with pytest.raises(ConfigError):
        dsm(noisy.score, x, 0.0)


def test_dsm_minimiser_is_noisy_score_linear_gaussian() -> None:
    """Data N(mu, Sigma), s(x) = W x + b trained by dsm with Adam on a fixed batch (x, z):
    W -> -(Sigma + sigma^2 I)^{-1}, b -> (Sigma + sigma^2 I)^{-1} mu."""
    mu = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[2.0, 0.6], [0.6, 1.0]], dtype=torch.float64)
    sigma, n = 0.5, 40_000
    dist = GaussianMixture([1.0], mu[None], cov[None])
    x = dist.sample(n, generator=torch.Generator().manual_seed(0)).double()
    model = nn.Linear(2, 2).double()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 400)
    for _ in range(400):
        opt.zero_grad()
        # reseeding draws the same z every step: a fixed quadratic objective
        dsm(model, x, sigma, generator=torch.Generator().manual_seed(1)).backward()
        opt.step()
        sched.step()
    w, b = model.weight.detach(), model.bias.detach()
    # 1) Adam reached the minimiser of this batch: least squares of -z/sigma on x + sigma z
    z = torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    design = torch.cat([x + sigma * z, torch.ones(n, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(design, -z / sigma).solution  # (3, 2)
    torch.testing.assert_close(w, sol[:2].T, rtol=0, atol=2e-3)
    torch.testing.assert_close(b, sol[2], rtol=0, atol=2e-3)
    # 2) which is the noisy score of the data up to the sampling error of 40k points
    inv = torch.linalg.inv(cov + sigma**2 * torch.eye(2, dtype=torch.float64))
    torch.testing.assert_close(w, -inv, rtol=0, atol=0.03)
    torch.testing.assert_close(b, inv @ mu, rtol=0, atol=0.03)


# --------------------------------------------------------------------------------------------
# NCSN (multi-scale DSM, lambda = sigma^2)


def test_ncsn_closed_form_per_level(gen: torch.Generator) -> None:
    """Gaussian data N(mu, s^2 I_D) and the exact noisy score: the weighted row term at level sigma
    has mean sigma^2 * D/2 (1/sigma^2 - 1/(s^2+sigma^2)) = D/2 (1 - sigma^2/(s^2+sigma^2))."""
    d, s2, n = 2, 0.8**2, 60_000
    mu = torch.tensor([[0.5, -1.0]])
    dist = GaussianMixture([1.0], mu, [s2])
    sigmas = torch.tensor([3.0, 1.0, 0.3, 0.1])
    x = dist.sample(n, generator=gen)
    seen = []

    def score_fn(y: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        seen.append(sigma.clone())
        return dist.noisy_score(y, sigma)

    terms, idx = ncsn_per_sample(score_fn, x, sigmas, generator=torch.Generator().manual_seed(3))
    assert terms.shape == (n,) and idx.shape == (n,)
    assert len(seen) == 1 and seen[0].shape == (n,)
    torch.testing.assert_close(seen[0], sigmas[idx])
    expected = 0.5 * d * (1 - sigmas**2 / (s2 + sigmas**2))
    counts = torch.bincount(idx, minlength=4)
    assert ((counts - n / 4).abs() < 4 * math.sqrt(n * 0.25 * 0.75)).all()  # uniform levels
    for i in range(4):
        rows = terms[idx == i]
        # per-row term = mean/ (D/2) * 1/2 chi^2_D: standard deviation mean * sqrt(2/D)
        se = float(expected[i]) * math.sqrt(2 / d) / math.sqrt(len(rows))
        assert abs(float(rows.mean()) - float(expected[i])) < 4 * se, i
    # the loss is the batch mean of those terms (same draws with the same seed)
    loss = ncsn(score_fn, x, sigmas, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(loss, terms.mean())
    se = float(terms.std()) / math.sqrt(n)
    assert abs(float(loss) - float(expected.mean())) < 4 * se


def test_ncsn_sigma_errors(gen: torch.Generator) -> None:
    x = torch.randn(8, 2, generator=gen)

    def f(y, s):
        return torch.zeros_like(y)

    for bad in ([0.1, 1.0], [1.0, 1.0, 0.5], [1.0, 0.0], [1.0, -0.5], [], [[1.0, 0.5]]):
        with pytest.raises(ConfigError):
            ncsn(f, x, bad, generator=gen)


# --------------------------------------------------------------------------------------------
# the KDE target


def kde_score_brute(x: torch.Tensor, ref: torch.Tensor, h: float, loo: bool = False) -> torch.Tensor:
    xf, rf = x.flatten(1).double(), ref.flatten(1).double()
    d2 = ((xf[:, None] - rf[None]) ** 2).sum(-1)
    logits = -d2 / (2 * h**2)
    if loo:
        logits = logits.masked_fill(torch.eye(len(xf), len(rf), dtype=torch.bool), -torch.inf)
    w = torch.softmax(logits, 1)
    return ((w @ rf - xf) / h**2).view(x.shape)


@pytest.mark.parametrize("chunk", [1, 7, 100_000, None])
@pytest.mark.parametrize("h", [0.05, 0.5, 3.0])
def test_kde_score_matches_brute_force(chunk, h: float, gen: torch.Generator) -> None:
    ref = torch.randn(53, 3, generator=gen, dtype=torch.float64)
    x = 1.5 * torch.randn(20, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(kde_score(x, ref, h, chunk_size=chunk), kde_score_brute(x, ref, h),
                               rtol=1e-9, atol=1e-9)
    # float32 input: float32 output, same values to float precision
    got = kde_score(x.float(), ref.float(), h, chunk_size=chunk)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), kde_score_brute(x, ref, h), rtol=2e-3, atol=2e-3 / h**2)


@pytest.mark.parametrize("chunk", [1, 7, None])
def test_kde_score_leave_one_out(chunk, gen: torch.Generator) -> None:
    ref = torch.randn(40, 2, generator=gen, dtype=torch.float64)
    got = kde_score(ref, ref, 0.4, leave_one_out=True, chunk_size=chunk)
    torch.testing.assert_close(got, kde_score_brute(ref, ref, 0.4, loo=True), rtol=1e-9, atol=1e-9)
    assert not torch.allclose(got, kde_score_brute(ref, ref, 0.4))
    # images: the same on (n, 1, 2, 2)
    imgs = torch.randn(12, 1, 2, 2, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(kde_score(imgs, imgs, 0.7, leave_one_out=True, chunk_size=chunk),
                               kde_score_brute(imgs, imgs, 0.7, loo=True))
    with pytest.raises(DataError):
        kde_score(ref[:1], ref[:1], 0.4, leave_one_out=True)


def test_kde_score_approaches_true_score(make_gen) -> None:
    """Reference ~ N(0, I_2), h = 0.3: the KDE score -> grad log N(0, (1 + h^2) I) = -x / (1 + h^2)
    as N grows, close to the true score -x."""
    x = torch.linspace(-1.5, 1.5, 31)[:, None].repeat(1, 2)
    errors = []
    for n in (100, 10_000, 200_000):
        ref = torch.randn(n, 2, generator=make_gen(n))
        got = kde_score(x, ref, 0.3)
        errors.append(float((got + x).abs().max()))
    # the remaining error is mostly the smoothing bias x h^2 / (1 + h^2) <= 0.124
    assert errors[-1] < 0.2 and errors[0] > 10 * errors[-1]
    assert float((got + x / 1.09).abs().max()) < 0.08


def test_esm_kde_is_esm_against_kde(gen: torch.Generator) -> None:
    ref = torch.randn(200, 2, generator=gen)
    x = ref[:50]
    model = ScoreMLP(2, hidden=8)
    for loo in (False, True):
        target = kde_score_brute(x, ref, 0.5, loo=loo).float()
        with torch.no_grad():
            expected = 0.5 * ((model(x) - target) ** 2).sum(1).mean()
        torch.testing.assert_close(esm_kde(model, x, ref, 0.5, leave_one_out=loo), expected,
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("h", [0.0, -1.0, float("nan"), float("inf")])
def test_kde_bad_bandwidth(h: float) -> None:
    x = torch.randn(5, 2)
    with pytest.raises(ConfigError):
        kde_score(x, x, h)
    with pytest.raises(ConfigError):
        esm_kde(lambda y: y, x, x, h)


@pytest.mark.parametrize("kind", ["score", "energy"])
def test_low_memory_ism_equals_ism_in_value_and_gradient(kind: str) -> None:
    """Recomputing each chunk of the generic exact trace in the backward (activation checkpointing)
    changes nothing but memory: same loss, same parameter gradient, over several chunks."""
    torch.manual_seed(0)
    net = ScoreMLP(12, hidden=32) if kind == "score" else EnergyMLP(12, hidden=32)
    x = torch.randn(10, 12)
    out = []
    for low in (False, True):
        net.zero_grad()
        loss = ism(net, x, method="vjp", chunk_size=5, low_memory=low)  # 12 dims in chunks of 5, 5, 2
        loss.backward()
        out.append((loss.detach(), [torch.zeros_like(p) if p.grad is None else p.grad.clone()
                                    for p in net.parameters()]))
    torch.testing.assert_close(out[0][0], out[1][0])
    assert sum(float(g.abs().sum()) for g in out[0][1]) > 1e-3
    for a, b in zip(out[0][1], out[1][1], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    with pytest.raises(ConfigError, match="low_memory"):
        ism(net, x, method="jvp", low_memory=True)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak memory is read from Linux's VmHWM")
def test_low_memory_ism_holds_less() -> None:
    """At D = 1024, batch 32, in 32 chunks of 32 dimensions, the generic exact trace's training graph
    holds ~250 MiB; recomputing the chunks in the backward needs well under half of it
    (measured 68 MiB)."""
    from benchmarks.scaling import PeakMemory

    torch.manual_seed(0)
    net = ScoreMLP(1024, hidden=64)
    x = torch.randn(32, 1024)
    mem = PeakMemory(torch.device("cpu"))
    peaks = {}
    for low in (False, True):
        net.zero_grad()
        mem.start()
        ism(net, x, method="vjp", chunk_size=32, low_memory=low).backward()
        peaks[low] = mem.peak()
    assert peaks[False] > 150 * 2**20
    assert peaks[True] < 0.5 * peaks[False], peaks
