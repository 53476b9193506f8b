"""The denoising samplers through the run layer and the command line, and EDM runs.

Every denoising sampler of the catalogue (heun, euler, euler_ancestral, ddim, dpm_solver, the
multistep SDE samplers, the adaptive DPM-Solver, continuous_langevin) samples a trained NCSN, VE
SDE, VP SDE and EDM run through ``scorematch sample``; an option of another sampler is refused in
one line naming the valid ones; the samplers of before give the same numbers as the library's
functions called directly; the options of the new samplers (``--solver-type``, ``--rtol``,
``--atol``, ``--h-init``) reach them, the adaptive one reports its evaluations, and ``--log-prob``
writes the log-likelihood of the probability-flow ODE's samples, equal to a second pass of
``scorematch.likelihood.log_prob``. ``scorematch train --objective edm``
records its schedule and refuses its settings on other objectives; a small EDM model trained on
gmm2d, sampled with Heun at 18 levels (35 evaluations), matches the mixture (slow), and
imputes x2 given x1 like the mixture's exact conditional through ``--inpaint`` (slow).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import assert_one_line_error, run_cli

from scorematch.cli import main
from scorematch.distributions import toy
from scorematch.metrics import mmd, mode_weights
from scorematch.run.build.loading import load
from scorematch.run.sampling.generate import generate, model_kind, sampler_options
from scorematch.samplers import catalogue

DENOISING_SAMPLERS = [e.name for e in catalogue.entries(catalogue.DENOISING)]

TINY = ["--data", "gmm2d", "--hidden", "16", "--depth", "1", "--n-data", "500", "--batch-size", "64",
        "--steps", "150", "--device", "cpu", "--no-progress"]
KINDS = {"ncsn": ["--objective", "ncsn"], "ve": ["--objective", "sde", "--sde", "ve"],
         "vp": ["--objective", "sde", "--sde", "vp"], "edm": ["--objective", "edm"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny run of each model kind (150 steps: enough to be a trained model, not a good one)."""
    root = tmp_path_factory.mktemp("kinds")
    out = {}
    for kind, flags in KINDS.items():
        out[kind] = root / kind
        assert main(["train", *TINY, *flags, "--out", str(out[kind])]) == 0
    return out


# ------------------------------------------------------------------------------ every sampler, every kind


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("sampler", list(DENOISING_SAMPLERS))
def test_every_denoising_sampler_samples_every_kind_of_run(runs, kind, sampler, tmp_path, capsys):
    out = tmp_path / "s.npz"
    steps = 40 if sampler == "continuous_langevin" else 12
    flags = ["--n-steps", steps] if "n_steps" in sampler_options(sampler) else []  # else it picks its steps
    rc, text, err = run_cli(["sample", runs[kind], "--sampler", sampler, *flags, "--n", 64, "--out", out,
                             "--no-progress"], capsys)
    assert rc == 0, err
    x = np.load(out)["samples"]
    assert x.shape == (64, 2) and np.isfinite(x).all()
    assert f"sampler {sampler}" in err
    if sampler != "continuous_langevin":  # the recipe does not sample the data (docs/samplers/continuous-noise.md)
        assert 0.5 < x.std(0).mean() < 20.0, x.std(0)  # gmm2d: 2.24 per coordinate


@pytest.mark.parametrize("sampler", ["heun", "euler", "euler_ancestral", "ddim", "dpm_solver"])
def test_an_ncsn_run_is_sampled_at_its_own_levels_unless_n_steps_is_given(runs, sampler):
    model = load(runs["ncsn"])
    own = model.run_info["schedule"]["sigmas"]
    seen: list[float] = []
    generate(model, model.run_info, 4, sampler=sampler, callback=lambda d: seen.append(float(d["sigma"])))
    assert seen[:len(own)] == pytest.approx(own, rel=1e-6) and len(seen) <= len(own) + 1
    seen.clear()
    generate(model, model.run_info, 4, sampler=sampler, n_steps=7, callback=lambda d: seen.append(float(d["sigma"])))
    assert seen[0] == pytest.approx(own[0], rel=1e-6) and seen[6] == pytest.approx(own[-1], rel=1e-6)
    assert not set(round(v, 9) for v in seen[1:6]) & set(round(v, 9) for v in own)


def test_the_default_sampler_of_each_kind(runs):
    assert {model_kind(load(runs[k])) for k in KINDS} == {"ncsn", "ve", "vp", "edm"}
    assert {kind: catalogue.default_for(kind)[0] for kind in catalogue.KINDS}.keys() == {
        "score", "energy", "ncsn", "edm", "ve", "vp", "subvp"}


def test_the_defaults_are_those_the_nfe_benchmark_decided():
    """The catalogue's default of each kind = the decisions in benchmarks/results/nfe_quality.json
    (dpm_solver_3m is dpm_solver with order 3); NCSN keeps its run's own annealed schedule."""
    decided = json.loads((Path(__file__).parents[1] / "benchmarks/results/nfe_quality.json").read_text())
    for d in decided["decisions"]:
        name, opts = catalogue.default_for(d["kind"])
        if d["sampler"] == "annealed":
            assert (name, opts) == ("annealed", {})
            continue
        want = {"n_steps": d["steps"], **({"order": 3} if d["sampler"] == "dpm_solver_3m" else {})}
        assert (name, opts) == (d["sampler"].removesuffix("_3m"), want), d["kind"]


def test_the_help_names_the_default_of_each_kind():
    from scorematch.cli.parser import sampler_help

    text = " ".join(sampler_help().split())
    assert "vp: dpm_solver, order 3, n_steps 50" in text and "edm: dpm_solver, n_steps 20" in text
    for kind in catalogue.KINDS:
        name, opts = catalogue.default_for(kind)
        assert f"{kind}: {name}" + "".join(f", {k} {v}" for k, v in opts.items()) in text, kind


def test_options_of_each_denoising_sampler_are_n_steps_and_its_own():
    for e in catalogue.entries(catalogue.DENOISING):
        if e.default_steps is None:  # the solver picks its steps and says how many evaluations it took
            assert "n_steps" not in sampler_options(e.name) and e.info and e.nfe(10, {}) is None
            continue
        assert sampler_options(e.name)[0] == "n_steps" and e.default_steps >= e.min_steps


@pytest.mark.parametrize("sampler,flag,valid", [
    ("heun", ["--eta", "0.5"], "takes n_steps, s_churn, s_tmin, s_tmax, s_noise"),
    ("ddim", ["--order", "3"], "takes n_steps, eta"),
    ("dpm_solver", ["--s-churn", "1"], "takes n_steps, order"),
    ("continuous_langevin", ["--eta", "1"], "takes n_steps"),
    ("euler_ancestral", ["--snr", "0.1"], "takes n_steps, eta, s_noise"),
    ("pc", ["--order", "2"], "n_steps, snr"),
])
def test_a_foreign_option_is_refused_in_one_line_naming_the_valid_ones(runs, sampler, flag, valid, tmp_path, capsys):
    out = tmp_path / "s.npz"
    rc, _, err = run_cli(["sample", runs["ve"], "--sampler", sampler, *flag, "--n", 8, "--out", out], capsys)
    assert_one_line_error(rc, err, flag[0], f"sampler {sampler!r}", valid)
    assert not out.exists()


def test_wrong_samplers_and_values_are_refused_in_one_line(runs, tmp_path, capsys):
    out = tmp_path / "s.npz"
    for kind, args, needle in [("edm", ["--sampler", "annealed"], "EDM"),
                               ("ve", ["--sampler", "langevin"], "heun"),
                               ("edm", ["--sampler", "dpm_solver", "--order", "4"], "order"),
                               ("edm", ["--sampler", "ddim", "--eta", "1.5"], "eta"),
                               ("edm", ["--sampler", "heun", "--n-steps", "0"], "n_steps"),
                               ("edm", ["--sampler", "heun", "--n-steps", "1e7"], "noise levels"),
                               ("edm", ["--sampler", "heun", "--s-tmin", "1"], "s_churn")]:
        rc, _, err = run_cli(["sample", runs[kind], *args, "--n", 8, "--out", out], capsys)
        assert_one_line_error(rc, err, needle)
        assert not out.exists()


def test_churn_and_ancestral_options_reach_the_sampler(runs):
    model = load(runs["edm"])
    info = model.run_info
    a = generate(model, info, 32, sampler="heun", n_steps=5)
    assert torch.equal(a, generate(model, info, 32, sampler="heun", n_steps=5))
    assert not torch.equal(a, generate(model, info, 32, sampler="heun", n_steps=5, s_churn=5.0))
    assert torch.equal(generate(model, info, 32, sampler="ddim", n_steps=5, eta=0.0),
                       generate(model, info, 32, sampler="euler", n_steps=5))
    seen = []
    generate(model, info, 8, sampler="dpm_solver", n_steps=4, callback=lambda d: seen.append(d["sigma"]))
    sd = info["schedule"]["sigma_data"]
    assert len(seen) == 4 and seen[0] == pytest.approx(info["schedule"]["sigma_max"])
    assert seen[-1] == pytest.approx(info["schedule"]["sigma_min"]) and info["schedule"]["sigma_min"] == \
        pytest.approx(0.004 * sd)


def test_the_samplers_of_before_give_the_library_numbers(runs):
    """annealed on NCSN and pc on a VE model: generate = the library function with the start drawn
    from the same per-row generators (samples 0..39 of the seed), bit for bit (in the model's
    standardised space)."""
    from scorematch import samplers
    from scorematch._random import rand
    from scorematch.sde import get_sde

    model = load(runs["ncsn"])
    info, inner = model.run_info, model.model
    s, d = info["schedule"], info["data"]
    g = samplers.RowGenerators.from_seed(5, 40)
    start = d["lo"] + (d["hi"] - d["lo"]) * rand((40, 2), g, dtype=torch.float32)
    want = samplers.annealed_langevin(inner, start, s["sigmas"], generator=g, eps=s["eps"],
                                      steps_per_sigma=s["steps_per_sigma"])
    assert torch.equal(generate(model, info, 40, seed=5), model.to_data_space(want))
    model = load(runs["ve"])
    s = model.run_info["schedule"]
    sde = get_sde("ve", sigma_min=s["sigma_min"], sigma_max=s["sigma_max"])
    want = samplers.pc(model.model, (40, 2), sde, generator=samplers.RowGenerators.from_seed(6, 40), n_steps=30)
    assert torch.equal(generate(model, model.run_info, 40, sampler="pc", seed=6, n_steps=30),
                       model.to_data_space(want))


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("method", ["smc", "replace", "repaint"])
def test_every_kind_of_run_inpaints(runs, kind, method, tmp_path, capsys):
    x = np.array([[1.5, np.nan], [np.nan, -2.0], [0.5, 0.25]])
    np.savez(tmp_path / "in.npz", x=x, mask=~np.isnan(x))
    extra = {"smc": ["--particles", 4], "replace": ["--sampler", "dpm_solver"], "repaint": ["--resample", 2]}[method]
    rc, _, err = run_cli(["sample", runs[kind], "--inpaint", tmp_path / "in.npz", "--inpaint-method", method,
                          "--n-steps", 8, *extra, "--out", tmp_path / "s.npz", "--no-progress"], capsys)
    assert rc == 0, err
    filled = np.load(tmp_path / "s.npz")["samples"]
    assert np.isfinite(filled).all() and np.array_equal(filled[~np.isnan(x)], x[~np.isnan(x)].astype(np.float32))


def test_a_vp_run_is_sampled_through_its_scaled_view(runs):
    """The VP view's range is sigma(1e-3) .. sigma(1) = sqrt(e^{B(t)} - 1); heun starts at N(0, 1/m(1)^2)."""
    from scorematch.denoise import sigma_of_time
    from scorematch.sde import get_sde

    model = load(runs["vp"])
    sde = get_sde("vp")
    seen = []
    generate(model, model.run_info, 8, sampler="euler", n_steps=3, callback=lambda d: seen.append(d["sigma"]))
    assert seen[0] == pytest.approx(float(sigma_of_time(sde, 1.0)), rel=1e-6)
    assert seen[-1] == pytest.approx(float(sigma_of_time(sde, 1e-3)), rel=1e-6)


# ------------------------------------------------------------------------------ EDM runs


def test_an_edm_run_records_its_schedule_and_settings(runs, tmp_path, capsys):
    info = json.loads((runs["edm"] / "run.json").read_text())
    cfg = json.loads((runs["edm"] / "config.json").read_text())
    s = info["schedule"]
    assert set(s) == {"sigma_data", "p_mean", "p_std", "sigma_min", "sigma_max"} and s == cfg["schedule"]
    assert s["sigma_data"] == pytest.approx(1.0, abs=0.01)  # standardised: every coordinate has unit variance
    assert s["p_mean"] == pytest.approx(-1.2 + np.log(s["sigma_data"] / 0.5)) and s["p_std"] == 1.2
    assert info["model"]["name"] == "EDMPrecond" and info["model"]["config"]["net"] == "TimeMLP"
    assert info["model"]["config"]["sigma_data"] == s["sigma_data"]
    out = tmp_path / "e"
    rc, _, err = run_cli(["train", *TINY, "--objective", "edm", "--p-mean", "-1.2", "--p-std", "1.0",
                          "--sigma-max", "9", "--steps", "10", "--out", out], capsys)
    assert rc == 0, err
    s = json.loads((out / "run.json").read_text())["schedule"]
    assert (s["p_mean"], s["p_std"], s["sigma_max"]) == (-1.2, 1.0, 9.0)
    lines = (out / "loss.csv").read_text().splitlines()
    assert lines[0] == "step,loss,grad_norm,steps_per_s" and len(lines) == 2


@pytest.mark.parametrize("args,needle", [
    (["--objective", "dsm", "--p-mean", "0"], "--p-mean"),
    (["--objective", "ncsn", "--p-std", "2"], "--p-std"),
    (["--objective", "edm", "--p-std", "0"], "p_std"),
    (["--objective", "edm", "--p-mean", "nan"], "p_mean"),
    (["--objective", "edm", "--model", "energy"], "needs a sigma-conditioned model"),
    (["--objective", "edm", "--model", "time_unet"], "would be ignored by model 'time_unet'"),
    (["--objective", "edm", "--base-channels", "8"], "--base-channels"),
    (["--objective", "edm", "--sigma-min", "5", "--sigma-max", "1"], "sigma_max"),
])
def test_edm_settings_are_refused_in_one_line_where_they_do_not_apply(args, needle, tmp_path, capsys):
    out = tmp_path / "r"
    rc, _, err = run_cli(["train", *TINY, *args, "--out", out], capsys)
    assert_one_line_error(rc, err, needle)
    assert not (out / "run.json").exists()


def test_an_image_network_is_refused_for_vector_data(tmp_path, capsys):
    rc, _, err = run_cli(["train", "--objective", "edm", "--model", "time_unet", "--steps", "5", "--n-data", "100",
                          "--out", tmp_path / "r", "--no-progress"], capsys)
    assert_one_line_error(rc, err, "for images")


@pytest.fixture(scope="module")
def edm_gmm2d(tmp_path_factory) -> Path:
    """EDM on gmm2d: EDMPrecond(TimeMLP 64 x 3), 2000 steps at batch 128, lr 2e-3 (about 5 s of CPU)."""
    out = tmp_path_factory.mktemp("edm") / "run"
    assert main(["train", "--objective", "edm", "--data", "gmm2d", "--hidden", "64", "--steps", "2000",
                 "--batch-size", "128", "--lr", "2e-3", "--seed", "0", "--device", "cpu", "--no-progress",
                 "--out", str(out)]) == 0
    return out


@pytest.mark.slow
def test_an_edm_model_trained_on_gmm2d_samples_it_with_heun_at_35_evaluations(edm_gmm2d, tmp_path, capsys):
    """Measured with this training over seeds 0, 1, 2 (2000 samples against 2000 fresh draws): MMD^2
    2.9e-4 to 3.8e-4, where two fresh draws give 5e-5 +- 2.6e-4 (8 pairs); mode weights within
    0.023 of 1/2."""
    out = tmp_path / "s.npz"
    rc, _, err = run_cli(["sample", edm_gmm2d, "--sampler", "heun", "--n-steps", 18, "--n", 2000, "--out", out,
                          "--no-progress"], capsys)
    assert rc == 0, err
    x = torch.from_numpy(np.load(out)["samples"]).double()
    mix = toy("gmm2d")
    fresh = [mix.sample(2000, generator=torch.Generator().manual_seed(s)) for s in range(10, 18)]
    spread = torch.tensor([mmd(a, b, bandwidth=1.0) for a, b in zip(fresh[::2], fresh[1::2], strict=True)])
    bound = float(spread.mean() + 4 * max(float(spread.std()), 2.5e-4))
    assert mmd(x, fresh[0], bandwidth=1.0) < bound
    assert (mode_weights(x, mix.means) - mix.weights).abs().max() < 0.05


@pytest.mark.slow
@pytest.mark.parametrize("a", [-1.5, 1.0])
def test_inpainting_imputes_x2_given_x1_like_the_exact_conditional(edm_gmm2d, a, tmp_path, capsys):
    """``--inpaint`` on a standardised run (x1 = a known, x2 NaN) against p(x2 | x1 = a), a two-component
    mixture: the share of x2 in the upper component within 0.06 and MMD^2 (bandwidth 1) below 1e-2,
    where replacement puts 0.39 (a = -1.5) and 0.22 (a = 1) too many or too few samples in the upper
    component (MMD^2 0.2 and 0.1). Measured with the default smc (32 particles, 200 levels), 400 rows:
    shares 0.085-0.102 (exact 0.077) and 0.947-0.965 (exact 0.980) over two trained models."""
    n = 300
    x = np.full((n, 2), np.nan, dtype=np.float32)
    x[:, 0] = a
    np.savez(tmp_path / "in.npz", x=x, mask=np.array([True, False]))
    out = tmp_path / "filled.npz"
    rc, _, err = run_cli(["sample", edm_gmm2d, "--inpaint", tmp_path / "in.npz", "--out", out, "--seed", 1,
                          "--no-progress"], capsys)
    assert rc == 0, err
    filled = torch.from_numpy(np.load(out)["samples"]).double()
    assert filled.shape == (n, 2) and (filled[:, 0] == a).all() and torch.isfinite(filled).all()
    cond = toy("gmm2d").conditional([0], [a])
    exact = cond.sample(4000, generator=torch.Generator().manual_seed(3))
    mid = float(cond.means[:, 0].mean())
    share = float((filled[:, 1] > mid).double().mean())
    assert abs(share - float((exact > mid).double().mean())) < 0.06
    assert mmd(filled[:, 1:], exact, bandwidth=1.0) < 1e-2


def test_an_option_of_another_sampler_than_the_default_says_how_to_choose(runs, tmp_path, capsys):
    rc, _, err = run_cli(["sample", runs["vp"], "--snr", "0.1", "--out", tmp_path / "s.npz", "--no-progress"], capsys)
    assert_one_line_error(rc, err, "--snr does not apply to sampler 'dpm_solver'", "default sampler of this run",
                          "--sampler")
    assert not (tmp_path / "s.npz").exists()


# ------------------------------------------------------------------------------ SDE multistep, adaptive, --log-prob


@pytest.mark.parametrize("sampler,flags,options", [
    ("dpmpp_2m_sde", ["--n-steps", 9, "--solver-type", "heun", "--eta", 0.5], {"n_steps": 9, "solver_type": "heun",
                                                                               "eta": 0.5}),
    ("dpmpp_3m_sde", ["--n-steps", 9, "--s-noise", 0.8], {"n_steps": 9, "s_noise": 0.8}),
    ("dpm_adaptive", ["--rtol", 0.02, "--atol", 0.01, "--h-init", 0.1], {"rtol": 0.02, "atol": 0.01,
                                                                         "h_init": 0.1}),
])
def test_the_new_samplers_and_their_flags_reach_the_sampler(runs, sampler, flags, options, tmp_path, capsys):
    """``scorematch sample --sampler NAME`` with the sampler's own flags gives, bit for bit, what
    ``generate`` gives with those options, and not what it gives without them."""
    out = tmp_path / "s.npz"
    rc, text, err = run_cli(["sample", runs["edm"], "--sampler", sampler, *flags, "--n", 32, "--seed", 3,
                             "--out", out, "--no-progress"], capsys)
    assert rc == 0, err
    x = torch.from_numpy(np.load(out)["samples"])
    model = load(runs["edm"])
    assert torch.equal(x, generate(model, model.run_info, 32, sampler=sampler, seed=3, **options))
    assert not torch.equal(x, generate(model, model.run_info, 32, sampler=sampler, seed=3))


@pytest.mark.parametrize("sampler,steps", [("dpmpp_2m_sde", 35), ("dpmpp_3m_sde", 20)])
def test_the_multistep_sde_samplers_run_their_default_steps(runs, sampler, steps):
    model = load(runs["edm"])
    seen: list[int] = []
    generate(model, model.run_info, 4, sampler=sampler, callback=lambda d: seen.append(d["nfe"]))
    assert seen == list(range(1, steps + 1))  # one evaluation per step, N steps


def test_the_adaptive_sampler_prints_and_records_its_evaluations(runs, tmp_path, capsys):
    """The count written to the .npz and printed is the solver's batched calls (every row steps with
    its own controller; the last callback comes before the final denoising call); each row's own
    count is order per accepted attempt, order - 1 per rejected one (tests/test_sample_rows.py);
    a tighter --rtol takes more."""
    counts = []
    for rtol in (0.1, 0.005):
        out = tmp_path / f"s{rtol}.npz"
        rc, text, err = run_cli(["sample", runs["edm"], "--sampler", "dpm_adaptive", "--rtol", rtol, "--n", 16,
                                 "--out", out, "--no-progress"], capsys)
        assert rc == 0, err
        nfe = int(np.load(out)["nfe"])
        assert f"{nfe} score evaluations" in text and f"took {nfe} score evaluations" in err
        model = load(runs["edm"])
        seen: list[dict] = []
        generate(model, model.run_info, 16, sampler="dpm_adaptive", rtol=rtol, callback=seen.append)
        last = seen[-1]
        assert nfe == last["nfe"] + 1 and last["n_accept"] >= 16
        counts.append(nfe)
    assert counts[1] > counts[0]


def test_eval_records_the_evaluations_of_the_adaptive_sampler(runs):
    from scorematch.run.reporting.evaluate import evaluate

    seen: list[dict] = []
    model = load(runs["edm"])
    generate(model, model.run_info, 64, sampler="dpm_adaptive", seed=1, callback=seen.append)
    res = evaluate(runs["edm"], n=64, seed=1, sampler="dpm_adaptive", likelihood=False, save=False)
    assert res["sampling_nfe"] == seen[-1]["nfe"] + 1  # generate's calls, same seed (+ the final denoising)
    assert "sampling_nfe" not in evaluate(runs["edm"], n=64, seed=1, sampler="heun", likelihood=False, save=False)


def test_one_tolerance_flag_serves_the_ode_sampler_too(runs, tmp_path, capsys):
    out = tmp_path / "s.npz"
    rc, _, err = run_cli(["sample", runs["ve"], "--sampler", "ode", "--rtol", 1e-3, "--atol", 1e-3, "--n", 16,
                          "--out", out, "--no-progress"], capsys)
    assert rc == 0, err
    model = load(runs["ve"])
    seen: list[int] = []
    want = generate(model, model.run_info, 16, sampler="ode", rtol=1e-3, atol=1e-3,
                    callback=lambda d: seen.append(d["nfe"]))
    assert torch.equal(torch.from_numpy(np.load(out)["samples"]), want)
    tight: list[int] = []
    generate(model, model.run_info, 16, sampler="ode", callback=lambda d: tight.append(d["nfe"]))
    assert tight[-1] > seen[-1]  # the default 1e-5 takes more evaluations than 1e-3


@pytest.mark.parametrize("kind", ["edm", "vp"])
def test_log_prob_writes_the_log_likelihood_of_the_samples(runs, kind, tmp_path, capsys):
    """``--log-prob`` stores each sample's log-density (data units, standardised runs included) and
    prints its mean; a second pass of ``scorematch.likelihood.log_prob`` from the written samples,
    at the ODE's end time, gives the same numbers."""
    from scorematch.likelihood import log_prob
    from scorematch.run.sampling.space import space_of, time_sde

    out = tmp_path / "s.npz"
    rc, text, err = run_cli(["sample", runs[kind], "--sampler", "ode", "--log-prob", "--n", 48, "--out", out,
                             "--no-progress"], capsys)
    assert rc == 0, err
    saved = np.load(out)
    lp = torch.from_numpy(saved["log_prob"])
    assert lp.shape == (48,) and torch.isfinite(lp).all()
    assert f"mean log-likelihood: {float(lp.mean()):.6g}" in text
    model = load(runs[kind])
    space = space_of(model, model.run_info)
    sde, score_fn = time_sde(space.inner, space.kind, space.schedule)
    z = space.to_model_space(torch.from_numpy(saved["samples"]).double()).float()
    again = log_prob(score_fn, sde, z, eps_t=1e-3, rtol=1e-5, atol=1e-5, exact_trace=True).double()
    again = again - space.outer.std.double().log().sum()  # log |dz/dx| of the standardisation
    # measured 4e-4 nats (EDM) and 6.5e-3 (VP) on the float32 models: both solves' error at rtol 1e-5
    assert float((again - lp).abs().max()) < 0.02, float((again - lp).abs().max())


@pytest.mark.parametrize("args", [["--sampler", "heun"], ["--sampler", "dpm_adaptive"], []])
def test_log_prob_with_another_sampler_is_refused_in_one_line(runs, args, tmp_path, capsys):
    out = tmp_path / "s.npz"
    rc, _, err = run_cli(["sample", runs["edm"], *args, "--log-prob", "--n", 8, "--out", out, "--no-progress"],
                         capsys)
    assert_one_line_error(rc, err, "--log-prob", "--sampler ode")
    assert not out.exists()
