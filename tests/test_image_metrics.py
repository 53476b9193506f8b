"""Image metrics in a learned feature space: closed forms, unbiasedness and constructed cases."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch

from scorematch.errors import DataError, ModelError
from scorematch.metrics.images import (
    FeatureNet,
    accuracy,
    compare_features,
    confident_rate,
    feature_frechet,
    features_and_probs,
    frechet_distance,
    image_metrics,
    kid,
    train_feature_net,
)


def _random_cov(d, gen):
    a = torch.randn(d, d, generator=gen, dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def test_frechet_distance_of_commuting_gaussians_is_the_closed_form():
    """Diagonal covariances: ||mu1 - mu2||^2 + sum_i (sqrt(a_i) - sqrt(b_i))^2."""
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0]), torch.tensor([1.0, 1.0, 0.5])
    a, b = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([9.0, 1.0, 0.25])
    expected = (mu1 - mu2).pow(2).sum() + (a.sqrt() - b.sqrt()).pow(2).sum()
    assert frechet_distance(mu1, torch.diag(a), mu2, torch.diag(b)) == pytest.approx(float(expected), rel=1e-12)
    # the same after a common rotation (covariances still commute)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    got = frechet_distance(q @ mu1.double(), q @ torch.diag(a).double() @ q.T,
                           q @ mu2.double(), q @ torch.diag(b).double() @ q.T)
    assert got == pytest.approx(float(expected), rel=1e-10)


def test_frechet_distance_matches_scipy_sqrtm_for_general_covariances():
    gen = torch.Generator().manual_seed(1)
    d = 12
    c1, c2 = _random_cov(d, gen), _random_cov(d, gen)
    mu1, mu2 = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
    root = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy())
    expected = float((mu1 - mu2).pow(2).sum()) + np.trace(c1.numpy() + c2.numpy() - 2 * np.real(root))
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(mu1, c1, mu1, c1) == pytest.approx(0.0, abs=1e-9)


def test_frechet_distance_is_real_for_singular_covariances():
    """Rank-deficient covariances (dead features) give a finite, non-negative value."""
    c = torch.diag(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    assert frechet_distance(torch.zeros(3), c, torch.zeros(3), c) == pytest.approx(0.0, abs=1e-12)
    assert frechet_distance(torch.zeros(3), c, torch.ones(3), torch.zeros(3, 3)) == pytest.approx(3.0 + 1.0)


def test_feature_frechet_from_samples_approaches_the_closed_form():
    gen = torch.Generator().manual_seed(2)
    d, n = 4, 200_000
    c1, c2 = _random_cov(d, gen), _random_cov(d, gen)
    mu2 = torch.full((d,), 0.5, dtype=torch.float64)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(c1).T
    y = mu2 + torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(c2).T
    exact = frechet_distance(torch.zeros(d), c1, mu2, c2)
    assert feature_frechet(x, y) == pytest.approx(exact, rel=0.03)


def test_feature_frechet_with_fewer_rows_than_dimensions_is_exact():
    """n1 + n2 < d: the restriction to the span of the centred rows changes nothing."""
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(7, 40, generator=gen, dtype=torch.float64)
    y = 0.5 + 2 * torch.randn(9, 40, generator=gen, dtype=torch.float64)
    full = frechet_distance(x.mean(0), torch.cov(x.T), y.mean(0), torch.cov(y.T))
    # (the d x d route takes square roots of round-off eigenvalues ~1e-16, hence 1e-7)
    assert feature_frechet(x, y) == pytest.approx(full, rel=1e-7)


def test_kid_equals_the_unbiased_mmd_by_brute_force():
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(6, 3, generator=gen), torch.randn(5, 3, generator=gen) + 0.3

    def k(a, b):
        return (float(a @ b) / 3 + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(6) for j in range(6) if i != j) / 30
    yy = sum(k(y[i], y[j]) for i in range(5) for j in range(5) if i != j) / 20
    xy = sum(k(x[i], y[j]) for i in range(6) for j in range(5)) / 30
    assert kid(x, y) == pytest.approx(xx + yy - 2 * xy, rel=1e-6)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_two():
    gen = torch.Generator().manual_seed(4)
    reps, n, d = 300, 40, 6
    same = torch.tensor([kid(torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen))
                         for _ in range(reps)], dtype=torch.float64)
    se = float(same.std() / math.sqrt(reps))
    assert abs(float(same.mean())) < 3 * se
    assert (same < 0).any()  # an unbiased estimate of 0 must go below 0 sometimes
    apart = torch.tensor([kid(torch.randn(n, d, generator=gen), 0.7 + torch.randn(n, d, generator=gen))
                          for _ in range(50)], dtype=torch.float64)
    assert float(apart.mean()) > 10 * float(apart.std() / math.sqrt(50)) > 0


def test_confident_rate_counts_rows_above_the_threshold():
    probs = torch.tensor([[0.95, 0.05], [0.5, 0.5], [0.08, 0.92], [0.9, 0.1]])
    rate, se = confident_rate(probs)
    assert rate == 0.5  # 0.9 itself is not above 0.9
    assert se == pytest.approx(math.sqrt(0.25 / 4))


def test_precision_and_recall_of_constructed_feature_sets():
    gen = torch.Generator().manual_seed(5)
    ref = torch.randn(200, 5, generator=gen, dtype=torch.float64)
    m = compare_features(ref, ref.clone(), gen, n_subsets=4, bootstrap=5)
    assert m["precision"] == 1.0 and m["recall"] == 1.0 and m["fd"] == pytest.approx(0.0, abs=1e-9)
    far = compare_features(ref, ref + 100.0, gen, n_subsets=4, bootstrap=5)
    assert far["precision"] == 0.0 and far["recall"] == 0.0
    assert far["fd"] == pytest.approx(5 * 100.0**2, rel=1e-9)  # shifted copy: only the means differ
    # half of the generated set copies half of the data, half is far away: precision 1/2, and
    # recall at least 1/2 (the copied points lie in the generated manifold)
    half = compare_features(ref, torch.cat([ref[:100], ref[:100] + 100.0]), gen, n_subsets=4, bootstrap=5)
    assert half["precision"] == 0.5 and half["recall"] >= 0.5


def _bars(n, gen, size=8):
    """Images with a bright vertical (label 0) or horizontal (label 1) bar at a random place."""
    labels = torch.randint(0, 2, (n,), generator=gen)
    pos = torch.randint(1, size - 1, (n,), generator=gen)
    x = 0.1 * torch.rand(n, 1, size, size, generator=gen)
    for i in range(n):
        if labels[i] == 0:
            x[i, 0, :, pos[i]] = 1.0
        else:
            x[i, 0, pos[i], :] = 1.0
    return x, labels


def test_feature_net_learns_a_separable_task_deterministically():
    gen = torch.Generator().manual_seed(6)
    x, y = _bars(256, gen)
    xt, yt = _bars(100, gen)
    a = train_feature_net(x, y, seed=0, epochs=10, width=4, feature_dim=16)
    b = train_feature_net(x, y, seed=0, epochs=10, width=4, feature_dim=16)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    f, p = features_and_probs(a, xt)
    assert f.shape == (100, 16) and f.dtype == torch.float64
    assert accuracy(p, yt) > 0.95
    assert torch.allclose(p.sum(1), torch.ones(100, dtype=torch.float64))


def test_feature_net_rows_are_independent_and_sizes_are_checked():
    net = FeatureNet(1, (28, 28), 10, width=4, feature_dim=8).eval()
    x = torch.rand(5, 1, 28, 28, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = net(x)
        x2 = x.clone()
        x2[1:] = 0.0
        assert torch.allclose(net(x2)[0], full[0], atol=1e-6)
    with pytest.raises(DataError, match="shape"):
        features_and_probs(net, torch.rand(2, 1, 8, 8))
    with pytest.raises(ModelError):
        FeatureNet(1, (3, 3), 10)


def test_image_metrics_reports_each_metric_with_its_baseline():
    gen = torch.Generator().manual_seed(8)
    x, y = _bars(300, gen)
    held, _ = _bars(60, gen)
    net = train_feature_net(x, y, seed=0, epochs=10, width=4, feature_dim=16)
    blank = torch.zeros(60, 1, 8, 8)
    m = image_metrics(net, x, held, blank, torch.Generator().manual_seed(0), n_subsets=3, bootstrap=5)
    assert m["n_generated"] == 60 and m["n_reference"] == 60
    for name in ("fd", "kid", "precision", "recall", "confident"):
        assert set(m[name]) == {"value", "se", "baseline", "baseline_se"}
    # identical blank images: one point in feature space, far from every real bar
    assert m["fd"]["value"] > 10 * m["fd"]["baseline"]
    assert m["precision"]["value"] == 0.0 and m["precision"]["baseline"] > 0.5
    with pytest.raises(DataError, match="training images"):
        image_metrics(net, x[:10], held, blank, gen)
