"""scikit-learn estimators for tables (scorematch.tabular) and the masked EDM loss they train with."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from scorematch.data.tables import Table, as_table
from scorematch.errors import ConfigError, DataError
from scorematch.models import MaskedDenoiser
from scorematch.objectives import edm
from scorematch.objectives.masked import edm_conditional, edm_masked
from scorematch.tabular import TableDiffusion, TableImputer

TINY = {"steps": 10, "hidden": 16, "depth": 1, "n_levels": 4, "ode_steps": 4}


# ------------------------------------------------------------------------------------ the masked loss


class _Identity(torch.nn.Module):
    """D(x; sigma) = x: the residual is sigma z, so the loss is known in closed form."""

    sigma_data = 1.0

    def denoise(self, x, sigma, labels=None):
        return x * 1.0


def test_masked_loss_with_everything_observed_is_edm():
    from scorematch.models import EDMPrecond

    torch.manual_seed(0)
    model = EDMPrecond("TimeMLP", {"dim": 3, "hidden": 16, "depth": 1}, sigma_data=1.0)
    x = torch.randn(64, 3)
    a = edm_masked(model, x, torch.ones_like(x, dtype=torch.bool), generator=torch.Generator().manual_seed(5))
    b = edm(model, x, generator=torch.Generator().manual_seed(5))
    assert torch.allclose(a, b)


def test_masked_loss_counts_observed_coordinates_only():
    x = torch.randn(32, 4)
    mask = torch.rand(32, 4, generator=torch.Generator().manual_seed(1)) < 0.6
    got = edm_masked(_Identity(), x, mask, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    sigma = (-1.2 + 1.2 * torch.randn(32, generator=g)).exp()
    z = torch.randn(32, 4, generator=g)
    lam = (sigma**2 + 1) / sigma**2
    want = (0.5 * lam * sigma**2 * (z**2 * mask).sum(1)).mean()
    assert torch.allclose(got, want)
    with pytest.raises(DataError, match="finite"):
        edm_masked(_Identity(), torch.full((2, 2), math.nan), torch.ones(2, 2, dtype=torch.bool))


class _NoisyIdentity(torch.nn.Module):
    """D(x; sigma, k, c, t) = x: the residual on a target cell is sigma z, so the loss is known."""

    sigma_data = 1.0

    def residual(self, values, known, cond, target, prior=None):
        return torch.where(target, values, torch.zeros_like(values))

    def denoise(self, x, sigma, known, cond, target):
        assert not bool((cond & target).any())
        assert not bool(x[~target].any())  # no state, and no noise, off the targets
        return x * 1.0


def test_conditional_loss_counts_target_cells_only():
    x = torch.randn(32, 4)
    mask = torch.rand(32, 4, generator=torch.Generator().manual_seed(1)) < 0.7
    got = edm_conditional(_NoisyIdentity(), x, mask, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    rate = torch.rand(32, 1, generator=g)
    target = mask & (torch.rand(32, 4, generator=g) < rate)
    sigma = (-1.2 + 1.2 * torch.randn(32, generator=g)).exp()
    z = torch.randn(32, 4, generator=g)
    lam = (sigma**2 + 1) / sigma**2
    want = (0.5 * lam * sigma**2 * (z**2 * target).sum(1)).mean()
    assert 0 < int(target.sum()) < int(mask.sum())
    assert torch.allclose(got, want)
    with pytest.raises(DataError, match="finite"):
        edm_conditional(_NoisyIdentity(), torch.full((2, 2), math.nan), torch.ones(2, 2, dtype=torch.bool))


def test_masked_denoiser_reads_known_cells_and_moves_targets_only():
    torch.manual_seed(0)
    model = MaskedDenoiser(3, hidden=16, depth=1)
    x = torch.randn(5, 3)
    known = torch.randn(5, 3)
    cond = torch.tensor([[True, False, False]] * 5)
    target = torch.tensor([[False, True, False]] * 5)  # coordinate 2 absent
    s = model.score(x, 0.7, known, cond, target)
    assert torch.equal(s[:, [0, 2]], torch.zeros(5, 2))
    other = x.clone()
    other[:, [0, 2]] += 5.0  # the state off the targets is not read
    moved = known.clone()
    moved[:, 2] += 5.0  # nor a known value that is not conditioning
    assert torch.allclose(model.score(other, 0.7, moved, cond, target), s)
    known2 = known.clone()
    known2[:, 0] += 1.0
    assert not torch.allclose(model.score(x, 0.7, known2, cond, target)[:, 1], s[:, 1])
    d = model.denoise(x, 0.7, known, cond, target)
    assert torch.allclose(s[:, 1], (d[:, 1] - x[:, 1]) / 0.7**2, atol=1e-5)


# ------------------------------------------------------------------------------ scikit-learn contract


#: checks scikit-learn itself skips here: array-API input needs SCIPY_ARRAY_API set and an array library
SKIPPED = {"check_array_api_input"}


@pytest.mark.parametrize("est", [TableDiffusion(**TINY),
                                 TableImputer(**TINY, draws=2, impute_levels=4, impute_epochs=5)],
                         ids=["TableDiffusion", "TableImputer"])
def test_scikit_learn_estimator_checks(est):
    from sklearn.utils.estimator_checks import check_estimator

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = check_estimator(est, on_fail=None)
    failed = [(r["check_name"], str(r["exception"])[:200]) for r in results if r["status"] == "failed"]
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert not failed
    assert skipped <= SKIPPED
    assert len(results) >= 35


def test_imputer_in_a_pipeline_with_cross_validation():
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    x = np.where(rng.random(x.shape) < 0.2, np.nan, x)
    pipe = make_pipeline(TableImputer(steps=150, hidden=32, depth=2, draws=2, impute_levels=8, impute_epochs=400),
                         StandardScaler(), LogisticRegression(max_iter=1000))
    scores = cross_val_score(pipe, x, y, cv=3)
    assert scores.mean() > 0.8
    assert pipe.get_params()["tableimputer__draws"] == 2
    pipe.set_params(tableimputer__draws=3)
    assert pipe.get_params()["tableimputer__draws"] == 3


# ---------------------------------------------------------------------------------------- behaviour


def _mixed(n: int, seed: int) -> Table:
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 3, n)
    colour = np.array(["red", "green", "blue"], dtype=object)[k]
    x = rng.normal(size=n) + k
    count = rng.poisson(3 + k).astype(float)
    flag = (rng.random(n) < 0.3).astype(float)
    pos = rng.exponential(1.0 + k)
    return Table(("colour", "x", "count", "flag", "pos"), (colour, x, count, flag, pos))


def test_samples_of_a_mixed_table_take_only_values_their_columns_can_take():
    t = _mixed(300, 0)
    m = TableDiffusion(steps=100, hidden=32, depth=2, n_levels=8, columns="count=integer").fit(t)
    s = m.sample(400, random_state=1)
    assert isinstance(s, Table) and s.names == t.names
    assert set(s.column("colour").tolist()) <= {"red", "green", "blue"}
    c = s.column("count")
    assert np.all(c == np.round(c)) and c.min() >= t.column("count").min() and c.max() <= t.column("count").max()
    assert set(s.column("flag").tolist()) <= {0.0, 1.0}
    assert s.column("pos").min() >= 0
    # the same random_state draws the same rows; another one others
    again = m.sample(400, random_state=1)
    assert np.array_equal(again.column("x"), s.column("x"))
    assert not np.array_equal(m.sample(400, random_state=2).column("x"), s.column("x"))


def test_a_zero_inflated_column_keeps_its_share_of_exact_zeros():
    """70% zeros (an atom of the column) and a lognormal rest: the samples' share of exact zeros is
    the data's within 0.05 (decoding the log-encoded spike alone gave half of it, the other half tiny
    positive values), and no value falls just above zero."""
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    x = np.where(rng.random(600) < 0.7, 0.0, rng.lognormal(1, 0.5, 600))
    m = TableDiffusion(epochs=300, random_state=0).fit(np.column_stack([x, 0.5 * x + rng.normal(size=600)]))
    assert m.schema_.column("x0").atoms == (0.0,)
    s = m.sample(3000, random_state=1)[:, 0]
    assert abs(np.mean(s == 0.0) - np.mean(x == 0.0)) < 0.05
    assert np.mean((s > 0) & (s < 0.05)) < 0.005
    assert abs(s[s > 0].mean() - x[x > 0].mean()) < 0.25


@pytest.mark.slow
def test_imputation_uses_the_correlation_and_its_draws_are_calibrated():
    """x2 = 0.95 x1 + sqrt(1 - 0.95^2) e: the conditional sd of x2 given x1 is 0.31 against 1 for
    its marginal, so imputing from x1 must beat the column mean by far, and the range of 19 draws
    (a 90% interval for calibrated draws: the truth and 19 exchangeable draws, the truth outside
    [min, max] with chance 2/20) must cover about 90% of the hidden values. Trained with 20% of
    cells missing."""
    rng = np.random.default_rng(0)
    n = 600
    x1 = rng.normal(size=n)
    x = np.column_stack([x1, 0.95 * x1 + math.sqrt(1 - 0.95**2) * rng.normal(size=n)])
    hide = rng.random(x.shape) < 0.2
    hide[hide.all(1), 0] = False
    xm = np.where(hide, np.nan, x)
    imp = TableImputer(steps=20, hidden=64, depth=2, draws=19, impute_levels=12, impute_epochs=600,
                       columns="x0=continuous,x1=continuous").fit(xm)
    filled = imp.transform(xm)
    assert np.array_equal(filled[~hide], x[~hide])
    rmse = math.sqrt(np.mean((filled[hide] - x[hide]) ** 2))
    assert rmse < 0.36  # the column mean: about 1.0; the exact conditional mean: 0.31
    draws = np.stack(imp.impute_draws(xm))
    lo, hi = draws.min(0), draws.max(0)
    cover = np.mean((x[hide] >= lo[hide]) & (x[hide] <= hi[hide]))
    assert 0.83 < cover < 0.98
    spread = float(draws.std(0)[hide].mean())  # each hidden cell's sd given the other: 0.312
    assert 0.28 < spread < 0.39


def test_class_conditional_sampling_and_unknown_label():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    x = rng.normal(size=(400, 2)) * 0.5 + np.where(y[:, None] == 1, 3.0, -3.0)
    m = TableDiffusion(steps=200, hidden=32, depth=2, n_levels=8, columns="x0=continuous,x1=continuous")
    m.fit(x, y)
    s, ys = m.sample(200, random_state=0, label=1)
    assert set(ys.tolist()) == {1} and np.mean(s[:, 0] > 0) > 0.9
    s, ys = m.sample(400, random_state=0)
    assert 0.35 < np.mean(ys) < 0.65
    with pytest.raises(ConfigError, match="unknown label 7"):
        m.sample(3, label=7)


def test_score_samples_of_a_gaussian_column():
    """x ~ N(3, 2^2): E log p(x) = -1/2 log(2 pi e 4) = -2.112 in data units (the standardisation's
    log-Jacobian included)."""
    rng = np.random.default_rng(2)
    x = rng.normal(3.0, 2.0, size=(800, 1))
    m = TableDiffusion(steps=400, hidden=32, depth=2, columns="x0=continuous").fit(x)
    lp = m.score_samples(x[:200])
    truth = -0.5 * np.log(2 * np.pi * 4) - (x[:200, 0] - 3) ** 2 / 8
    assert abs(lp.mean() - truth.mean()) < 0.1
    assert np.corrcoef(lp, truth)[0, 1] > 0.95
    with pytest.raises(DataError, match="complete rows"):
        m.score_samples(np.array([[np.nan]]))


def test_refusals():
    with pytest.raises(ConfigError, match="steps"):
        TableDiffusion(steps=0).fit(np.zeros((4, 2)))
    with pytest.raises(DataError, match="at least 2 rows"):
        TableDiffusion(**TINY).fit(np.zeros((1, 2)))
    m = TableDiffusion(**TINY).fit(np.random.default_rng(0).normal(size=(20, 2)))
    with pytest.raises(DataError, match="expecting 2 features"):
        m.score_samples(np.zeros((3, 3)))
    with pytest.raises(ConfigError, match="fitted without"):
        m.sample(2, label=1)


def test_defaults_are_the_ones_the_table_benchmark_measured():
    """docs/benchmarks.md quotes benchmarks/results/tables.json, run at the estimators' defaults."""
    import json
    from pathlib import Path

    results = json.loads((Path(__file__).parents[1] / "benchmarks" / "results" / "tables.json").read_text())
    est = TableImputer()
    for name, r in results["results"].items():
        assert (r["steps"], r.get("epochs"), r["hidden"], r.get("impute_epochs")) == (
            est.steps, est.epochs, est.hidden, est.impute_epochs), name


@pytest.mark.slow
def test_imputation_learns_what_the_gaussian_prior_cannot():
    """x1 = sin(2 x0) + 0.1 e, x0 ~ U(-2, 2): the Gaussian prior's conditional mean of x1 is linear in
    x0 and leaves an RMSE of about 0.6; the network on its residual must get near the noise, 0.1."""
    from scorematch.models.gaussian import gaussian_conditional, gaussian_em

    rng = np.random.default_rng(0)
    n = 600
    x0 = rng.uniform(-2, 2, size=n)
    x = np.column_stack([x0, np.sin(2 * x0) + 0.1 * rng.normal(size=n)])
    hide = rng.random(x.shape) < 0.2
    hide[hide.all(1), 0] = False
    xm = np.where(hide, np.nan, x)
    imp = TableImputer(steps=20, draws=9, columns="x0=continuous,x1=continuous").fit(xm)
    h = hide[:, 1]
    rmse = math.sqrt(np.mean((imp.transform(xm)[h, 1] - x[h, 1]) ** 2))
    loc, scale = np.nanmean(xm, 0), np.nanstd(xm, 0)
    z = (xm - loc) / scale
    mu, _ = gaussian_conditional(torch.from_numpy(np.nan_to_num(z)), torch.from_numpy(~np.isnan(z)), *gaussian_em(z))
    linear = math.sqrt(np.mean(((mu.numpy() * scale + loc)[h, 1] - x[h, 1]) ** 2))
    assert linear > 0.5
    assert rmse < 0.25


def test_antithetic_fill_of_a_gaussian_residual_is_the_conditional_mean():
    """With the network's output zeroed the residual's denoiser is c_skip x, the probability-flow
    map from the start is linear (r = a z), so a pair z, -z averages to m exactly: ``fill`` returns
    the prior's conditional mean, where the mean of independent draws does not."""
    from scorematch.data.columns import decode, encode
    from scorematch.models.gaussian import gaussian_conditional

    rng = np.random.default_rng(3)
    x = rng.multivariate_normal([1.0, -1.0, 0.0], [[1, 0.8, 0.2], [0.8, 1, 0.1], [0.2, 0.1, 1]], size=60)
    xm = x.copy()
    xm[rng.random(x.shape) < 0.25] = np.nan
    xm[np.isnan(xm).all(1), 0] = 0.5
    imp = TableImputer(steps=2, impute_epochs=1, hidden=8, depth=1, draws=6, impute_levels=8,
                       columns="x0=continuous,x1=continuous,x2=continuous").fit(xm)
    with torch.no_grad():
        for p in imp.imputer_.net.parameters():
            p.zero_()
    z = encode(imp.schema_, as_table(xm))
    m, _ = gaussian_conditional(torch.from_numpy(np.nan_to_num(z)).float(), torch.from_numpy(~np.isnan(z)),
                                imp.imputer_.prior_mean, imp.imputer_.prior_cov)
    want = decode(imp.schema_, np.where(np.isnan(z), m.double().numpy(), z)).to_numpy()
    hide = np.isnan(xm)
    assert np.allclose(imp.transform(xm)[hide], want[hide], atol=1e-4)
    independent = np.mean(np.stack(imp.impute_draws(xm)), axis=0)
    assert np.abs(independent[hide] - want[hide]).max() > 0.05


def test_data_frames_come_back_with_their_dtypes():
    """Sampled and filled DataFrames keep the input's column dtypes (bool, nullable and plain
    integers, category, string), not float64 for all numbers."""
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame({"x": rng.normal(size=n), "k": pd.array(rng.integers(0, 5, n), dtype="Int64"),
                       "b": rng.random(n) < 0.3, "c": pd.Categorical(rng.choice(["lo", "hi"], n)),
                       "s": pd.array(rng.choice(["u", "v"], n), dtype="string"), "i": rng.integers(0, 9, n)})
    m = TableDiffusion(steps=20, hidden=16, depth=1, n_levels=4).fit(df)
    out = m.sample(5, random_state=0)
    assert list(out.columns) == list(df.columns) and (out.dtypes == df.dtypes).all()
    holes = df.assign(b=pd.array(df["b"], dtype="boolean"))
    holes.loc[3, "k"], holes.loc[4, "b"], holes.loc[5, "c"], holes.loc[6, "x"] = pd.NA, pd.NA, np.nan, np.nan
    imp = TableImputer(steps=20, impute_epochs=2, hidden=16, depth=1, n_levels=4, draws=2).fit(holes)
    filled = imp.transform(holes)
    assert (filled.dtypes == holes.dtypes).all() and not filled.isna().any().any()
    assert filled.loc[5, "c"] in ("lo", "hi") and filled.loc[4, "b"] in (True, False)
