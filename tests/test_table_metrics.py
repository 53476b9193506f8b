"""Table metrics (scorematch.metrics.tables) on constructed cases with known values."""

from __future__ import annotations

import numpy as np
import pytest

from scorematch.data.columns import infer_schema
from scorematch.data.tables import Table, as_table, table_from_csv
from scorematch.metrics.tables import (
    closest_record,
    column_wasserstein,
    correlation_error,
    numeric_view,
    pairwise_correlation,
    range_violations,
    table_metrics,
    tstr_accuracy,
    wasserstein_1d,
)


def test_w1_closed_forms_and_scipy():
    rng = np.random.default_rng(0)
    a = rng.normal(size=300)
    assert wasserstein_1d(a, a + 0.7) == pytest.approx(0.7)
    assert wasserstein_1d([0.0, 1.0], [1.0, 1.0]) == pytest.approx(0.5)
    assert wasserstein_1d([0.0], [0.0, 0.0, 0.0]) == 0.0
    scipy_stats = pytest.importorskip("scipy.stats")
    b = rng.exponential(size=117)
    assert wasserstein_1d(a, b) == pytest.approx(scipy_stats.wasserstein_distance(a, b), rel=1e-12)


def test_column_wasserstein_is_in_sd_units_and_tv_for_categories():
    t = table_from_csv("x,k\n0,a\n2,a\n4,b\n6,b\n")
    s = infer_schema(t, "x=continuous")
    shifted = table_from_csv("x,k\n1,a\n3,a\n5,a\n7,b\n")
    w = column_wasserstein(s, shifted, t, t)
    assert w["x"] == pytest.approx(1.0 / np.std([0, 2, 4, 6]))
    assert w["k"] == pytest.approx(0.25)  # p = (1/2, 1/2), q = (3/4, 1/4)


def test_range_violations_count_out_of_range_and_unknown_levels():
    t = table_from_csv("x,k\n0,a\n1,b\n2,a\n")
    s = infer_schema(t, "x=continuous")
    other = table_from_csv("x,k\n-1,a\n0.5,c\n3,b\n1,c\n")
    v = range_violations(s, other, t)
    assert v == {"x": 0.5, "k": 0.5}


def test_correlation_error_of_a_flipped_column():
    rng = np.random.default_rng(1)
    base = rng.normal(size=(400, 3))
    x = np.column_stack([base[:, 0], base[:, 0] + 0.5 * base[:, 1], base[:, 2]])
    a = as_table(x)
    s = infer_schema(a, {f"x{j}": "continuous" for j in range(3)})
    assert correlation_error(s, a, a) == 0.0
    flipped = as_table(x * np.array([1.0, -1.0, 1.0]))
    c = np.corrcoef(x, rowvar=False)
    want = np.mean([2 * abs(c[0, 1]), 0.0, 2 * abs(c[1, 2])])
    assert correlation_error(s, flipped, a) == pytest.approx(want)


def test_numeric_view_one_hot_and_binary():
    t = table_from_csv("k,b,n\nx,0,1.5\ny,1,\nz,1,2.5\n")
    v, names = numeric_view(infer_schema(t), t)
    assert names == ["k=x", "k=y", "k=z", "b", "n"]
    np.testing.assert_array_equal(v[:, :4], [[1, 0, 0, 0], [0, 1, 0, 1], [0, 0, 1, 1]])
    assert np.isnan(v[1, 4])


def test_closest_record_sees_copies():
    rng = np.random.default_rng(2)
    train, held = as_table(rng.normal(size=(200, 3))), as_table(rng.normal(size=(100, 3)))
    s = infer_schema(train, {f"x{j}": "continuous" for j in range(3)})
    copies = train.rows(np.arange(100))
    r = closest_record(s, copies, train, held)
    assert r["synthetic_copies"] == 1.0 and r["synthetic_median"] == 0.0 and r["held_out_copies"] == 0.0
    fresh = as_table(rng.normal(size=(100, 3)))
    r2 = closest_record(s, fresh, train, held)
    assert 0.7 < r2["ratio"] < 1.4 and r2["synthetic_copies"] == 0.0


def test_tstr_on_a_copy_of_the_training_rows_equals_train_on_real():
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(3)
    idx = rng.permutation(len(x))
    tr, te = idx[:100], idx[100:]
    s = infer_schema(as_table(x[tr]))
    acc = tstr_accuracy(s, as_table(x[tr]), y[tr], as_table(x[tr]), y[tr], as_table(x[te]), y[te])
    assert acc["synthetic"] == acc["real"] > 0.85
    # labels shuffled: the classifier learns nothing
    bad = tstr_accuracy(s, as_table(x[tr]), rng.permutation(y[tr]), as_table(x[tr]), y[tr], as_table(x[te]), y[te])
    assert bad["synthetic"] < 0.6


def test_table_metrics_has_baselines_and_tstr_with_a_text_label():
    rng = np.random.default_rng(4)
    n = 240
    lab = rng.integers(0, 2, n)
    cols = (rng.normal(size=n) + 2 * lab, rng.normal(size=n), np.array(["yes" if v else "no" for v in lab], object))
    t = Table(("a", "b", "label"), cols)
    s = infer_schema(t, "a=continuous,b=continuous")
    train, held = t.rows(slice(0, 160)), t.rows(slice(160, None))
    m = table_metrics(s, train, held, train, label="label")
    assert m["wasserstein_mean"]["synthetic"] == m["wasserstein_mean"]["baseline"]
    assert m["correlation_error"]["synthetic"] == m["correlation_error"]["baseline"]
    assert m["closest_record"]["synthetic_copies"] == 1.0
    assert m["tstr_accuracy"]["synthetic"] == m["tstr_accuracy"]["real"] > 0.75
    assert m["range_violations"] == {"synthetic": 0.0, "baseline": m["range_violations"]["baseline"]}


def test_correlations_are_pairwise_complete():
    """Each pair over the rows where both are present: np.corrcoef on complete data, the per-pair
    brute force with blanks; a pair with under 3 such rows is NaN and left out of the error."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(60, 4)) @ rng.normal(size=(4, 4))
    np.testing.assert_allclose(pairwise_correlation(v), np.corrcoef(v, rowvar=False), atol=1e-12)
    w = np.where(rng.random(v.shape) < 0.3, np.nan, v)
    got = pairwise_correlation(w)
    for i in range(4):
        for j in range(4):
            both = ~np.isnan(w[:, i]) & ~np.isnan(w[:, j])
            assert got[i, j] == pytest.approx(np.corrcoef(w[both, i], w[both, j])[0, 1], abs=1e-10)
    sparse = np.array([[1.0, np.nan, 2.0], [2.0, 5.0, np.nan], [np.nan, 1.0, 4.0], [3.0, np.nan, 1.0],
                       [4.0, np.nan, 0.0]])
    c = pairwise_correlation(sparse)
    assert np.isnan(c[0, 1]) and np.isnan(c[1, 2])
    assert c[0, 2] == pytest.approx(np.corrcoef([1.0, 3.0, 4.0], [2.0, 1.0, 0.0])[0, 1], abs=1e-12)
    t = as_table(sparse, ["a", "b", "c"])
    assert correlation_error(infer_schema(t), t, t) == 0.0  # the one pair with 3 rows
    ab = as_table(sparse[:, :2], ["a", "b"])
    assert np.isnan(correlation_error(infer_schema(ab), ab, ab))
