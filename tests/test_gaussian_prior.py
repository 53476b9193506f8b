"""The Gaussian of rows with missing coordinates (EM) and its row-by-row conditionals, against closed forms."""

import numpy as np
import pytest
import torch

from scorematch.errors import DataError, ModelError
from scorematch.models import MaskedDenoiser
from scorematch.models.gaussian import gaussian_conditional, gaussian_em


def _rows(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(4, 4))
    cov = a @ a.T + 0.5 * np.eye(4)
    mean = np.array([1.0, -2.0, 0.5, 3.0])
    return rng.multivariate_normal(mean, cov, size=n), mean, cov


def test_em_on_complete_rows_is_the_sample_mean_and_covariance():
    x, _, _ = _rows(200, 0)
    mean, cov = gaussian_em(torch.from_numpy(x), ridge=1e-3, iters=3)
    assert np.allclose(mean.numpy(), x.mean(0), atol=1e-12)
    assert np.allclose(cov.numpy(), np.cov(x, rowvar=False, bias=True) + 1e-3 * np.eye(4), atol=1e-12)


def test_em_with_missing_cells_recovers_the_gaussian_better_than_the_complete_rows():
    """30% of cells missing completely at random from 4,000 rows: EM's estimates are within a few
    standard errors of the truth, and closer than the mean of the rows that happen to be complete."""
    x, mean, cov = _rows(4000, 1)
    z = x.copy()
    z[np.random.default_rng(2).random(z.shape) < 0.3] = np.nan
    m, c = gaussian_em(torch.from_numpy(z), ridge=0.0)
    se = np.sqrt(np.diag(cov) / (4000 * 0.7))
    assert np.all(np.abs(m.numpy() - mean) < 4 * se)
    assert np.abs(c.numpy() - cov).max() < 0.08 * np.abs(cov).max()
    complete = z[~np.isnan(z).any(1)]
    assert np.abs(m.numpy() - mean).sum() < np.abs(complete.mean(0) - mean).sum()


def test_conditional_matches_the_schur_complement_row_by_row():
    x, mean, cov = _rows(6, 3)
    cond = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 0], [0, 1, 0, 1], [1, 1, 1, 1], [1, 0, 0, 0]],
                        dtype=torch.bool)
    mu, sd = gaussian_conditional(torch.from_numpy(x), cond, torch.from_numpy(mean), torch.from_numpy(cov), 0.0)
    for i in range(6):
        o = cond[i].numpy()
        if o.all():
            assert np.allclose(mu[i].numpy(), x[i]) and np.allclose(sd[i].numpy(), 0.0, atol=1e-6)
            continue
        k = np.linalg.solve(cov[np.ix_(o, o)], cov[np.ix_(o, ~o)]).T if o.any() else np.zeros(((~o).sum(), 0))
        want_mu = mean[~o] + k @ (x[i, o] - mean[o])
        want_var = np.diag(cov[np.ix_(~o, ~o)] - k @ cov[np.ix_(o, ~o)])
        assert np.allclose(mu[i, ~o].numpy(), want_mu, atol=1e-10)
        assert np.allclose(sd[i, ~o].numpy() ** 2, want_var, atol=1e-10)
        assert np.allclose(mu[i, o].numpy(), x[i, o], atol=1e-10)


def test_em_refusals():
    with pytest.raises(DataError, match="no observed value"):
        gaussian_em(torch.tensor([[1.0, np.nan], [2.0, np.nan]]))
    with pytest.raises(DataError, match="n >= 2"):
        gaussian_em(torch.zeros(1, 3))


def test_residual_and_complete_invert_each_other_and_default_to_the_values():
    torch.manual_seed(0)
    model = MaskedDenoiser(3, hidden=8, depth=1)
    values = torch.randn(5, 3)
    cond = torch.tensor([[True, False, False]] * 5)
    target = ~cond
    assert torch.equal(model.residual(values, values, cond, target), torch.where(target, values, 0.0))
    model.set_prior(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 4.0]]))
    r = model.residual(values, values, cond, target)
    # x1 | x0 ~ N(2 + (x0 - 1) / 2, 2 - 1/2); x2 independent of x0: N(3, 4)
    assert torch.allclose(r[:, 1], (values[:, 1] - 2 - (values[:, 0] - 1) / 2) / 1.5**0.5, atol=1e-6)
    assert torch.allclose(r[:, 2], (values[:, 2] - 3) / 2, atol=1e-6)
    assert torch.allclose(model.complete(r, values, cond, target), values, atol=1e-6)
    with pytest.raises(ModelError, match="prior"):
        model.set_prior(torch.zeros(2), torch.eye(2))
    state = MaskedDenoiser(3, hidden=8, depth=1)
    state.load_state_dict(model.state_dict())
    assert torch.equal(state.prior_cov, model.prior_cov)


def test_a_gaussian_per_row_is_the_same_as_conditioning_each_row_alone():
    x, mean, cov = _rows(5, 4)
    means = torch.from_numpy(mean + np.arange(5)[:, None] * 0.3)
    covs = torch.from_numpy(np.stack([cov * (1 + 0.2 * i) for i in range(5)]))
    cond = torch.rand(5, 4, generator=torch.Generator().manual_seed(0)) < 0.5
    xt = torch.from_numpy(x)
    mu, sd = gaussian_conditional(xt, cond, means, covs)
    for i in range(5):
        m1, s1 = gaussian_conditional(xt[i:i + 1], cond[i:i + 1], means[i], covs[i])
        assert torch.allclose(mu[i], m1[0]) and torch.allclose(sd[i], s1[0])


def test_fold_priors_are_each_fitted_without_their_fold():
    from scorematch.tabular import fold_priors

    x, _, _ = _rows(40, 5)
    x[np.random.default_rng(6).random(x.shape) < 0.2] = np.nan
    fold, means, covs = fold_priors(x, 4, 1e-3, seed=3)
    assert sorted(np.bincount(fold.numpy()).tolist()) == [10, 10, 10, 10]
    for j in range(4):
        m, c = gaussian_em(x[fold.numpy() != j], 1e-3)
        assert torch.allclose(means[j], m.float(), atol=1e-6) and torch.allclose(covs[j], c.float(), atol=1e-5)
    two = np.array([[1.0, 2.0, 3.0, 4.0], [2.0, 1.0, 0.0, 5.0]])
    fold2, means2, _ = fold_priors(two, 5, 1e-3, seed=0)  # two folds of one row: each falls back to both rows
    assert sorted(fold2.tolist()) == [0, 1] and torch.allclose(means2, torch.tensor([[1.5, 1.5, 1.5, 4.5]] * 2))


def test_the_conditional_loss_with_the_models_own_prior_per_row_is_unchanged():
    from scorematch.objectives.masked import edm_conditional

    torch.manual_seed(0)
    model = MaskedDenoiser(4, hidden=8, depth=1)
    _, mean, cov = _rows(2, 7)
    model.set_prior(torch.from_numpy(mean).float(), torch.from_numpy(cov).float())
    x = torch.randn(16, 4)
    mask = torch.rand(16, 4, generator=torch.Generator().manual_seed(1)) < 0.8
    own = edm_conditional(model, x, mask, generator=torch.Generator().manual_seed(2))
    per_row = (model.prior_mean.expand(16, 4), model.prior_cov.expand(16, 4, 4))
    given = edm_conditional(model, x, mask, generator=torch.Generator().manual_seed(2), prior=per_row)
    other = edm_conditional(model, x, mask, generator=torch.Generator().manual_seed(2),
                            prior=(torch.zeros(16, 4), torch.eye(4).expand(16, 4, 4)))
    assert torch.allclose(own, given) and not torch.allclose(own, other)
