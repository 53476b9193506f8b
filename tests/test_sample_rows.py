"""Per-sample seeds and evaluation counts through ``scorematch sample``, for every sampler.

Sample i of ``--seed S`` is the same in every call: the first k rows of ``--n k`` and of
``--n 4k`` sampled in batches of 5 agree, and ``--start-index K`` redraws rows K...; the
file records the rows' indices, the seed and the score evaluations per sample, which equal
the sampler's formula (its catalogue entry's ``nfe``). Rows agree to float32 rounding: the
network's batched arithmetic gives a row's score to ~1e-7 relative whatever the batch, which the
steps carry (1e-5 here, on samples of scale 10). The adaptive samplers (ode, dpm_adaptive) step
every row with its own controller, so they are held to the same 1e-5: a row's steps depend on
its own errors only, and a rounding-level change of an error moves the next step by as little
(a batch-shared controller would move rows by the solver's tolerance, 1e-3 here). The same rows
from 2 processes: tests/test_distributed.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_one_line_error, run_cli

import scorematch
from scorematch.run.build.loading import load
from scorematch.run.sampling.generate import generate
from scorematch.samplers import catalogue

NAMES = tuple(catalogue.names())

#: the run each sampler needs, and flags that keep it to a few milliseconds
RUN_OF = {"langevin": "score", "mala": "energy", "annealed": "ncsn"}
FLAGS = {"langevin": ["--n-steps", "15"], "mala": ["--n-steps", "15"], "annealed": ["--steps-per-sigma", "2"],
         "euler_maruyama": ["--n-steps", "8"], "reverse_diffusion": ["--n-steps", "8"],
         "pc": ["--n-steps", "6", "--per-sample-step"], "ode": [],
         "heun": ["--n-steps", "6", "--s-churn", "3"], "euler": ["--n-steps", "6"],
         "euler_ancestral": ["--n-steps", "6"], "ddim": ["--n-steps", "6", "--eta", "1"],
         "dpm_solver": ["--n-steps", "6"], "continuous_langevin": ["--n-steps", "8"],
         "dpmpp_2m_sde": ["--n-steps", "6"], "dpmpp_3m_sde": ["--n-steps", "6"], "dpm_adaptive": [],
         "restart": ["--n-steps", "6"]}


def adaptive(name: str) -> bool:
    """A sampler whose solver picks its steps, each row its own (ode, the adaptive DPM-Solver)."""
    e = catalogue.entry(name)
    return bool(e.info) or (e.family == catalogue.SCORE_SDE and "n_steps" not in e.option_names())


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny runs (20 steps: a model, not a good one) of each kind a sampler needs."""
    root = tmp_path_factory.mktemp("rows")
    kinds = {"score": {"objective": "dsm"}, "energy": {"objective": "dsm", "model": "energy"},
             "ncsn": {"objective": "ncsn", "n_levels": 4}, "ve": {"objective": "sde", "sde": "ve"}}
    return {k: scorematch.train(data="gmm2d", steps=20, n_data=300, hidden=16, depth=1, progress=False,
                                out=root / k, **kw).run_dir for k, kw in kinds.items()}


def draw(runs, name: str, tmp_path: Path, capsys, *flags) -> dict[str, np.ndarray]:
    out = tmp_path / f"s{len(list(tmp_path.iterdir()))}.npz"
    rc, text, err = run_cli(["sample", runs[RUN_OF.get(name, "ve")], "--sampler", name, "--seed", "7", "--out", out,
                             "--no-progress", *FLAGS[name], *flags], capsys)
    assert rc == 0, err
    with np.load(out) as f:
        res = {k: f[k] for k in f.files}
    res["text"], res["err"] = text, err
    return res


#: the evaluations of n rows stepped each on its own, from their accepted and rejected steps summed:
#: dpm_adaptive (order 3) 3 per accepted step, 2 per rejected one (its start kept), + 1 per row for
#: the denoising step; ode (dopri5) 2 per row to start, 6 per attempt, + 1 per row (denoising)
ROW_NFE = {"dpm_adaptive": lambda acc, rej, n: 3 * acc + 2 * rej + n,
           "ode": lambda acc, rej, n: 2 * n + 6 * (acc + rej) + n}


def test_every_sampler_is_covered():
    assert set(NAMES) <= set(FLAGS)


@pytest.mark.parametrize("name", NAMES)
def test_a_sample_is_the_same_whatever_n_the_batch_and_the_start(runs, name, tmp_path, capsys):
    small = draw(runs, name, tmp_path, capsys, "--n", "3")
    big = draw(runs, name, tmp_path, capsys, "--n", "12", "--batch-size", "5")
    tail = draw(runs, name, tmp_path, capsys, "--n", "4", "--start-index", "3")
    other = draw(runs, name, tmp_path, capsys, "--n", "3", "--seed", "8")
    tol = 1e-5
    np.testing.assert_allclose(small["samples"], big["samples"][:3], rtol=tol, atol=tol)
    np.testing.assert_allclose(tail["samples"], big["samples"][3:7], rtol=tol, atol=tol)
    assert np.abs(other["samples"] - small["samples"]).max() > 1e-3
    assert list(big["row_index"]) == list(range(12)) and list(tail["row_index"]) == [3, 4, 5, 6]
    assert int(big["seed"]) == 7 and np.isfinite(big["samples"]).all()


@pytest.mark.parametrize("name", NAMES)
def test_the_evaluations_printed_and_recorded_are_the_samplers(runs, name, tmp_path, capsys):
    res = draw(runs, name, tmp_path, capsys, "--n", "2")
    evals = int(res["score_evaluations"])
    assert f"score evaluations: {evals} per sample (sampler {name})" in res["text"]
    model = load(runs[RUN_OF.get(name, "ve")])
    schedule = model.run_info["schedule"]
    e = catalogue.entry(name)
    if adaptive(name):
        stats: dict = {}
        report: dict = {}
        generate(model, model.run_info, 2, sampler=name, seed=7, stats=stats, report=report)
        assert evals == stats["evaluations"] > 10  # the solver's count, +1 for the denoising step
        # each row its own steps: its evaluations are the solver's formula for that row alone, summed
        assert report["nfe"] == evals < report["row_nfe"]
        assert report["row_nfe"] == ROW_NFE[name](report["n_accept"], report["n_reject"], 2)
        assert f"{report['row_nfe'] / 2:.1f} evaluations per sample on average" in res["err"]
        return
    if e.family == catalogue.NCSN_LEVELS:
        expected = e.nfe(len(schedule["sigmas"]), {"steps_per_sigma": 2})
        assert expected == 4 * 2 + 1
    else:  # --n-steps N is N steps of every sampler
        expected = e.nfe(int(FLAGS[name][1]), {})
    assert evals == expected
    if name == "heun":
        assert evals == 2 * 6 - 1


def test_generate_in_batches_counts_every_batch(runs):
    model = load(runs["ve"])
    stats: dict = {}
    x = generate(model, model.run_info, 7, sampler="heun", n_steps=4, batch_size=3, stats=stats)
    assert x.shape == (7, 2) and stats == {"evaluations": 7, "calls": 21, "batches": 3}


def test_start_index_and_batch_size_are_checked(runs, tmp_path, capsys):
    rc, _, err = run_cli(["sample", runs["ve"], "--n", "2", "--start-index", "-1", "--out", tmp_path / "a.npz"], capsys)
    assert_one_line_error(rc, err, "--start-index")
    rc, _, err = run_cli(["sample", runs["ve"], "--n", "2", "--batch-size", "0", "--out", tmp_path / "a.npz"], capsys)
    assert_one_line_error(rc, err, "--batch-size")
    rc, _, err = run_cli(["sample", runs["ve"], "--sampler", "heun", "--brownian", "--out", tmp_path / "a.npz"],
                         capsys)
    assert_one_line_error(rc, err, "churn")


@pytest.mark.parametrize("method", ["smc", "replace", "repaint"])
def test_an_inpainted_row_is_the_same_whatever_the_other_rows_and_the_batch(runs, method, tmp_path, capsys):
    """``--inpaint``: row i of x is filled as sample i of the seed (every draw of it, and for smc
    its group of particles, from its own stream), so the first 3 rows of a 7-row file filled at
    once, the same rows alone, the file in batches of 2, and rows 3.. alone with --start-index 3
    agree; another seed gives other values."""
    x = np.stack([np.linspace(-2, 2, 7), np.full(7, np.nan)], 1).astype(np.float32)
    mask = np.array([True, False])
    flags = {"smc": ["--particles", "4", "--n-steps", "6"], "replace": ["--n-steps", "6"],
             "repaint": ["--n-steps", "4", "--resample", "2"]}[method]

    def fill(rows: slice, *extra) -> np.ndarray:
        name = tmp_path / f"in{len(list(tmp_path.iterdir()))}.npz"
        np.savez(name, x=x[rows], mask=mask)
        out = name.with_suffix(".out.npz")
        rc, _, err = run_cli(["sample", runs["ve"], "--inpaint", name, "--inpaint-method", method, "--seed", "5",
                              "--out", out, "--no-progress", *flags, *extra], capsys)
        assert rc == 0, err
        with np.load(out) as f:
            return f["samples"]

    full = fill(slice(None))
    np.testing.assert_allclose(fill(slice(0, 3)), full[:3], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fill(slice(None), "--batch-size", "2"), full, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fill(slice(3, None), "--start-index", "3"), full[3:], rtol=1e-5, atol=1e-5)
    assert np.abs(fill(slice(None), "--seed", "6")[:, 1] - full[:, 1]).min() > 1e-4
    np.testing.assert_array_equal(full[:, 0], x[:, 0])
