"""A user's own data: standardisation (on by default for vector data), CSV headers, the data's
absolute path and SHA-256 (so a run evaluates from any working directory and refuses changed
data), non-finite samples never written silently, the log-likelihood in data units, and an
evaluation that can be trusted (shuffled baseline, standard errors, precision and recall, no
silent overwrite)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_cli
from torch import nn

from scorematch.data import Standardization, load_array, standardization_for
from scorematch.data import arrays as arrays_module
from scorematch.errors import DataChangedError
from scorematch.metrics import median_bandwidth, mmd, precision_recall, subset_estimates
from scorematch.models import Standardized

QUIET = ["--no-progress", "--device", "cpu"]


def hundreds_csv(path: Path, n: int = 3000) -> np.ndarray:
    """Two interleaved moons in the hundreds (x in 235..717, y in 65..588), with a header line:
    the unstandardised CSV a user brought."""
    from sklearn.datasets import make_moons

    x, _ = make_moons(n, noise=0.05, random_state=0)
    x = x * np.array([150.0, 300.0]) + np.array([400.0, 250.0])
    np.savetxt(path, x, delimiter=",", header="x,y", comments="", fmt="%.3f")
    return x


# ----------------------------------------------------------------------------- standardisation


def test_standardization_maps_and_its_jacobian():
    x = torch.tensor([[100.0, -3.0, 7.0], [300.0, -1.0, 7.0], [200.0, -2.0, 7.0]])
    st = Standardization.fit(x)
    torch.testing.assert_close(st.mean, torch.tensor([200.0, -2.0, 7.0]))
    torch.testing.assert_close(st.std, torch.tensor([math.sqrt(2 / 3) * 100, math.sqrt(2 / 3), 1.0]))  # constant
    z = st.forward(x)  # column: sd kept at 1
    torch.testing.assert_close(z.mean(0), torch.zeros(3), atol=1e-6, rtol=0)
    torch.testing.assert_close(st.inverse(z), x)
    assert st.log_det == pytest.approx(-math.log(math.sqrt(2 / 3) * 100) - math.log(math.sqrt(2 / 3)))
    assert Standardization.from_dict(st.to_dict()).std.tolist() == st.std.tolist()
    assert standardization_for(x, "vector", "none") is None
    assert standardization_for(torch.rand(4, 1, 2, 2), "image") is None


def test_standardized_score_energy_and_samples_are_in_data_units():
    class Quadratic(nn.Module):  # E(z) = |z|^2 / 2: p_z = N(0, I)
        kind = "energy"

        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(()))

        def energy(self, z):
            return 0.5 * z.pow(2).sum(1) + 0 * self.dummy

        def score(self, z):
            return -z

    mean, std = torch.tensor([500.0, -2.0]), torch.tensor([40.0, 0.01])
    m = Standardized(Quadratic(), mean, std)
    x = torch.tensor([[540.0, -2.02], [500.0, -2.0]])
    torch.testing.assert_close(m.score(x), -(x - mean) / std**2)  # the score of N(mean, diag(std^2))
    xg = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(m.energy(xg).sum(), xg)
    torch.testing.assert_close(-g, m.score(x))


@pytest.mark.slow
def test_unstandardised_csv_trains_and_samples_finite_with_defaults(tmp_path, capsys):
    """The CSV in the hundreds: 300 default steps then 2000 default Langevin samples. Measured with
    --standardize none: 177 of 2000 samples NaN/inf; standardised (the default): none, the sample
    mean within 17 of the data's, the std within 25%."""
    data = hundreds_csv(tmp_path / "data.csv")
    run = tmp_path / "run"
    rc, _, err = run_cli(["train", "--data", tmp_path / "data.csv", "--steps", 300, "--out", run, *QUIET], capsys)
    assert rc == 0, err
    assert err.count("read as a header") == 1 and "standardising the data" in err
    rc, out, err = run_cli(["sample", run, "--n", 2000, "--out", tmp_path / "s.npz", *QUIET], capsys)
    assert rc == 0, err
    s = np.load(tmp_path / "s.npz")["samples"]
    assert s.shape == (2000, 2) and np.isfinite(s).all()
    assert np.abs(s.mean(0) - data.mean(0)).max() < 40
    assert np.all(np.abs(s.std(0) / data.std(0) - 1) < 0.3)
    info = json.loads((run / "run.json").read_text())["data"]
    assert info["standardize"]["mean"] == pytest.approx(data[:].mean(0), rel=0.05)
    assert info["csv_header"] == "yes" and -4 < info["lo"] < info["hi"] < 4  # the standardised range

    raw = tmp_path / "raw"
    assert run_cli(["train", "--data", tmp_path / "data.csv", "--steps", 300, "--out", raw,
                    "--standardize", "none", *QUIET], capsys)[0] == 0
    rc, out, err = run_cli(["sample", raw, "--n", 2000, "--out", tmp_path / "r.npz", *QUIET], capsys)
    assert rc == 2 and not (tmp_path / "r.npz").exists()
    line = err.strip().splitlines()[-1]
    assert line.startswith("scorematch: error: ") and "of 2000 samples are NaN or inf" in line
    assert "--standardize auto" in line and "--step-size" in line and "--allow-nonfinite" in line
    rc, out, err = run_cli(["sample", raw, "--n", 2000, "--out", tmp_path / "r.npz", "--allow-nonfinite",
                            *QUIET], capsys)
    bad = int(out.split("samples: (2000, 2), ")[1].split(" of them")[0])
    assert rc == 0 and bad == int((~np.isfinite(np.load(tmp_path / "r.npz")["samples"]).all(1)).sum()) > 0
    rc, out, err = run_cli(["eval", raw, "--n", 500, "--json", *QUIET], capsys)
    res = json.loads(out)
    assert res["nonfinite_samples"] > 0 and "samples are NaN/inf" in err and math.isfinite(res["mmd"])


# ----------------------------------------------------------------------------- CSV header


def test_csv_header_detected_once_or_chosen(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(arrays_module, "_told_header", set())
    p = tmp_path / "h.csv"
    p.write_text("height,weight\n1.5,60\n1.8,80\n1.7,75\n")
    want = torch.tensor([[1.5, 60.0], [1.8, 80.0], [1.7, 75.0]])
    assert torch.equal(load_array(p), want) and torch.equal(load_array(p), want)
    err = capsys.readouterr().err
    assert err.count("read as a header") == 1 and "'height, weight'" in err
    assert torch.equal(load_array(p, header="yes"), want)
    with pytest.raises(Exception, match="line 1 looks like a header .* --csv-header yes"):
        load_array(p, header="no")
    q = tmp_path / "n.csv"
    q.write_text("0,1\n2,3\n")
    assert load_array(q).tolist() == [[0, 1], [2, 3]] and load_array(q, header=True).tolist() == [[2, 3]]


def test_cli_csv_header_no_refuses_a_header_in_one_line(tmp_path, capsys):
    (tmp_path / "h.csv").write_text("x,y\n" + "".join(f"{i},{2 * i}\n" for i in range(50)))
    rc, _, err = run_cli(["train", "--data", tmp_path / "h.csv", "--csv-header", "no", "--steps", 2,
                          "--out", tmp_path / "r", *QUIET], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "--csv-header yes" in err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- where the data is


@pytest.fixture
def relative_run(tmp_path, capsys, monkeypatch):
    """A run trained from a relative data path in tmp/a; the tests move to tmp/b."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    rng = np.random.default_rng(0)
    np.save(tmp_path / "a" / "d.npy", rng.normal(size=(300, 2)) * [5, 50] + [10, 1000])
    monkeypatch.chdir(tmp_path / "a")
    rc, _, err = run_cli(["train", "--data", "d.npy", "--steps", 20, "--hidden", 16, "--out", "run", *QUIET], capsys)
    assert rc == 0, err
    monkeypatch.chdir(tmp_path / "b")
    return tmp_path / "a" / "run"


@pytest.mark.slow
def test_run_evaluates_plots_and_reports_from_another_directory(relative_run, tmp_path, capsys):
    info = json.loads((relative_run / "run.json").read_text())["data"]
    data = tmp_path / "a" / "d.npy"
    assert info["source"] == str(data.resolve())
    import hashlib

    assert info["fingerprint"] == {"kind": "file", "path": str(data.resolve()), "bytes": data.stat().st_size,
                                   "sha256": hashlib.sha256(data.read_bytes()).hexdigest()}
    rc, out, err = run_cli(["eval", relative_run, "--n", 200, "--json", *QUIET], capsys)
    assert rc == 0, err
    assert run_cli(["plot", relative_run, "--n", 100, "--out", "plots", *QUIET], capsys)[0] == 0
    assert (tmp_path / "b" / "plots" / "samples.png").exists()
    assert run_cli(["report", relative_run, "--n", 100, "--no-eval", "--out", "r.html", *QUIET], capsys)[0] == 0


def test_changed_data_is_refused_with_one_clear_line(relative_run, tmp_path, capsys):
    np.save(tmp_path / "a" / "d.npy", np.zeros((300, 2)))
    rc, _, err = run_cli(["eval", relative_run, "--n", 50, *QUIET], capsys)
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "changed since it was trained" in err and "restore the original data or train a new run" in err
    with pytest.raises(DataChangedError):
        from scorematch.run.build.loading import held_out

        held_out(relative_run)


# ----------------------------------------------------------------------------- log-likelihood in data units


class ExactVEScore(nn.Module):
    """The exact score of N(0, I) under the VE SDE: s(z, t) = -z / (1 + sigma(t)^2)."""

    conditioning = "time"

    def __init__(self, sde):
        super().__init__()
        self.sde = sde
        self.dummy = nn.Parameter(torch.zeros(()))

    def score(self, z, t):
        return -z / (1 + self.sde.marginal_std(t)[:, None] ** 2) + 0 * self.dummy


def test_log_likelihood_of_a_standardised_model_is_in_data_units():
    """x ~ N(mu, diag(sd^2)) with z = (x - mu)/sd ~ N(0, I) learned exactly: the reported test
    log-likelihood is log N(x; mu, sd^2) = log N(z; 0, I) - sum log sd (here about -17.5 per
    point, against about -2.8 for z)."""
    from scorematch.run.reporting.evaluate import _likelihood
    from scorematch.sde import VESDE

    sde = VESDE(0.01, 20.0)
    mu, sd = torch.tensor([300.0, -5.0]), torch.tensor([80.0, 2.0])
    model = Standardized(ExactVEScore(sde), mu, sd)
    model.run_info = {"schedule": {"sde": "ve", "sigma_min": 0.01, "sigma_max": 20.0}, "data": {"sample_shape": [2]}}
    x = mu + sd * torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    got = _likelihood(model, x, "vector", 256, torch.Generator().manual_seed(1))["test_log_likelihood"]
    exact = float(torch.distributions.Normal(mu, sd).log_prob(x).sum(1).mean())
    assert got == pytest.approx(exact, abs=0.02)


# ----------------------------------------------------------------------------- metrics


def test_precision_recall_against_brute_force(gen):
    real = torch.randn(40, 3, generator=gen, dtype=torch.float64)
    fake = torch.randn(30, 3, generator=gen, dtype=torch.float64) * 1.5 + 0.5

    def brute(a, b, k):  # fraction of b inside the k-NN balls of a
        d_aa = torch.cdist(a, a)
        radius = d_aa.sort(1).values[:, k]
        return float(sum(bool((torch.linalg.norm(a - q, dim=1) <= radius).any()) for q in b) / len(b))

    p, r = precision_recall(real, fake, k=3, chunk=7)
    assert p == pytest.approx(brute(real, fake, 3)) and r == pytest.approx(brute(fake, real, 3))
    assert precision_recall(real, real, k=3) == (1.0, 1.0)
    far = real + 100.0
    assert precision_recall(real, far, k=3) == (0.0, 0.0)
    # a generator that collapses onto one mode: precise but without recall
    two = torch.cat([torch.randn(200, 2, generator=gen) - 5, torch.randn(200, 2, generator=gen) + 5])
    p, r = precision_recall(two, torch.randn(400, 2, generator=gen) - 5)
    assert p > 0.9 and 0.4 < r < 0.6


def test_subset_standard_error_matches_the_spread_over_repetitions(gen):
    """The standard error of MMD^2 from 5 disjoint subsets, against the spread of the full-set
    estimate over 40 fresh draws (N(0, 1) vs N(0.3, 1), 500 points): same order of magnitude."""
    def draw(g):
        return torch.randn(500, 2, generator=g), torch.randn(500, 2, generator=g) + 0.3

    values = [mmd(*draw(gen), bandwidth=1.0) for _ in range(40)]
    spread = float(np.std(values, ddof=1))
    x, y = draw(gen)
    _, se = subset_estimates(lambda a, b: mmd(a, b, bandwidth=1.0), x, y, 5, gen)
    assert 0.4 * spread < se < 3 * spread


def test_moons_baseline_is_shuffled_train_versus_held_out(tmp_path, capsys):
    """The floor of a perfect sampler: 0.114 from the first, unsorted rows (one moon) before; from
    shuffled training rows it is the train-versus-test MMD, about 0, within a few standard errors."""
    run = tmp_path / "m"
    assert run_cli(["train", "--data", "moons", "--steps", 5, "--hidden", 16, "--out", run, *QUIET], capsys)[0] == 0
    rc, out, _ = run_cli(["eval", run, "--n", 1000, "--json", "--n-steps", 20, *QUIET], capsys)
    res = json.loads(out)
    assert abs(res["baseline_mmd"]) < 4 * res["baseline_mmd_se"] + 1e-3
    assert res["baseline_precision"] > 0.9 and res["baseline_recall"] > 0.9
    assert res["mmd"] > res["baseline_mmd"] + 3 * res["mmd_se"]  # 5 training steps: far from the data
    from scorematch.run.build.loading import held_out

    full, test = held_out(run)
    h = median_bandwidth(test[:500], test[500:1000])
    assert res["mmd_bandwidth"] == pytest.approx(h)
    assert mmd(full.x[:1000], test[:1000], bandwidth=h) > 0.05  # the unshuffled rows: one moon


def test_eval_never_overwrites_a_different_evaluation(tmp_path, capsys):
    run = tmp_path / "r"
    assert run_cli(["train", "--data", "gmm2d", "--steps", 5, "--hidden", 16, "--out", run, *QUIET], capsys)[0] == 0
    rc, out, _ = run_cli(["eval", run, "--n", 100, "--n-steps", 10, *QUIET], capsys)
    assert rc == 0 and f"(written to {run / 'eval.json'})" in out
    first = (run / "eval.json").read_text()
    rc, out, _ = run_cli(["eval", run, "--n", 20, "--n-steps", 10, *QUIET], capsys)
    other = run / "eval-langevin-n20-seed0-n_steps=10.json"
    assert rc == 0 and f"(written to {other})" in out and (run / "eval.json").read_text() == first
    assert json.loads(other.read_text())["n_samples"] == 20
    rc, out, _ = run_cli(["eval", run, "--n", 20, "--n-steps", 10, "--out", tmp_path / "mine.json", *QUIET], capsys)
    assert json.loads((tmp_path / "mine.json").read_text())["file"] == str(tmp_path / "mine.json")
    rc, out, _ = run_cli(["eval", run, "--n", 100, "--n-steps", 10, "--seed", 0, *QUIET], capsys)
    assert f"(written to {run / 'eval.json'})" in out  # the same settings: refreshed in place
