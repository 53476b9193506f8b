"""The open training loop: a user's own module and in-memory data through train / load / resume,
the same run information from train() and load(), bare models saved and loaded, and modules
compiled with torch.compile running compiled in the objectives and samplers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from user_models import ForwardEnergy, SigmaScore, TimeScore, TinyScore, WrongShape

import scorematch
from scorematch import objectives as O
from scorematch import samplers
from scorematch.errors import CheckpointError, ConfigError, DataError, ModelError, ScoreMatchWarning
from scorematch.models import ScoreMLP, Standardized
from scorematch.run.sampling.generate import generate

FAST = dict(steps=30, batch_size=64, n_data=500, progress=False, device="cpu", seed=0, checkpoint_every=15)
TESTS = Path(__file__).resolve().parent


def blobs(n: int = 600, seed: int = 0) -> torch.Tensor:
    """Two Gaussian blobs in the hundreds (the scale of the unstandardised CSV a user brought)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[300.0, 500.0], [700.0, 200.0]])
    return centres[torch.randint(0, 2, (n,), generator=g)] + 40 * torch.randn(n, 2, generator=g)


# ----------------------------------------------------------------------------- the protocol


def test_user_score_module_trains_loads_resumes_and_samples(tmp_path):
    run = tmp_path / "run"
    x = blobs()
    torch.manual_seed(5)  # the user's module is initialised before train() is called
    res = scorematch.train(model=TinyScore(2, 32), data=x, out=run, **FAST)
    assert isinstance(res.model, Standardized) and isinstance(res.model.model, TinyScore)
    info = json.loads((run / "run.json").read_text())
    assert info["model"] == {"name": "user_models:TinyScore", "config": {"dim": 2, "hidden": 32}}
    assert info["data"]["source"] == "run:data.npy" and info["data"]["standardize"]["std"][0] > 100
    np.testing.assert_array_equal(np.load(run / "data.npy"), x.numpy())
    loaded = scorematch.load(run)
    assert isinstance(loaded.model, TinyScore)
    assert loaded.run_info == res.model.run_info  # train() and load() give the same run information
    probe = torch.tensor([[300.0, 500.0], [500.0, 350.0]])
    torch.testing.assert_close(loaded.score(probe), res.model.score(probe))
    s = generate(res.model, res.model.run_info, 200, seed=0, n_steps=200)  # KeyError 'data' before
    assert s.shape == (200, 2) and torch.isfinite(s).all()
    assert 100 < float(s.mean()) < 700  # in data units, not standardised ones
    # resume without passing the model: the class is rebuilt from run.json
    again = scorematch.train(resume=run, steps=45, progress=False)
    assert again.steps == 45 and isinstance(again.model.model, TinyScore)
    torch.manual_seed(5)
    scorematch.train(model=TinyScore(2, 32), data=x, out=tmp_path / "whole", **{**FAST, "steps": 45})
    wa, wb = load_file(run / "weights.safetensors"), load_file(tmp_path / "whole" / "weights.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)  # resume reproduces the uninterrupted run


@pytest.mark.parametrize("module, objective", [
    (lambda: ForwardEnergy(2, 16), "dsm"),
    (lambda: SigmaScore(2, 16), "ncsn"),
    (lambda: TimeScore(2, 16), "sde"),
    (lambda: SigmaScore(2, 16), "edm"),  # a sigma-conditioned score, used through D = x + sigma^2 s(x, sigma)
])
def test_energy_noise_and_time_conditional_user_modules(module, objective, tmp_path):
    run = tmp_path / "run"
    res = scorematch.train(model=module(), data=np.asarray(blobs(400)), objective=objective, out=run,
                           **{**FAST, "steps": 10})
    m = scorematch.load(run)
    assert m.conditioning == res.model.conditioning
    x = generate(m, m.run_info, 50, seed=1, **({"n_steps": 20} if objective != "ncsn" else {"steps_per_sigma": 2}))
    assert x.shape == (50, 2) and torch.isfinite(x).all()
    if objective == "dsm":  # an energy model from its forward: s = -grad E, in data units
        z = torch.tensor([[400.0, 300.0]], requires_grad=True)
        (g,) = torch.autograd.grad(m.energy(z).sum(), z)
        torch.testing.assert_close(m.score(z), -g, rtol=1e-5, atol=1e-7)


def test_protocol_violations_are_model_errors(tmp_path):
    x = blobs(200)
    with pytest.raises(ModelError, match=r"score returned \(2, 1\) for x of shape \(2, 2\)"):
        scorematch.train(model=WrongShape(), data=x, out=tmp_path / "a", **FAST)
    with pytest.raises(ModelError, match="objective 'ncsn' needs a sigma-conditioned model"):
        scorematch.train(model=TinyScore(), data=x, objective="ncsn", out=tmp_path / "b", **FAST)
    with pytest.raises(ModelError, match="must be a torch.nn.Module"):
        scorematch.train(model=lambda y: y, data=x, out=tmp_path / "c", **FAST)


def test_data_errors_never_print_the_tensor(tmp_path):
    bad = torch.randn(5000, 3)
    bad[17, 1] = float("nan")
    with pytest.raises(DataError) as err:
        scorematch.train(data=bad, out=tmp_path / "r", **FAST)
    assert len(str(err.value)) < 300 and "shape (5000, 3)" in str(err.value) and "row 17" in str(err.value)
    with pytest.raises(ConfigError) as err:  # a tensor where the config wants a number
        scorematch.train(data="gmm2d", lr=torch.ones(10000), out=tmp_path / "r2", **FAST)
    assert "a Tensor of shape (10000,)" in str(err.value) and len(str(err.value)) < 300


def test_torch_dataset_as_data(tmp_path):
    class Pairs(torch.utils.data.Dataset):
        def __init__(self):
            self.x = blobs(300)

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            return self.x[i], 0

    res = scorematch.train(data=Pairs(), out=tmp_path / "r", **{**FAST, "steps": 5})
    assert res.model.run_info["data"]["sample_shape"] == [2]
    assert res.model.run_info["data"]["n_train"] == 240


def test_class_defined_in_a_function_trains_with_a_warning_and_load_says_why(tmp_path):
    class Local(TinyScore):
        pass

    with pytest.warns(ScoreMatchWarning, match="scorematch.load will not rebuild this model"):
        scorematch.train(model=Local(), data=blobs(200), out=tmp_path / "r", **{**FAST, "steps": 3})
    with pytest.raises(CheckpointError, match=r"cannot be imported .*PYTHONPATH"):
        scorematch.load(tmp_path / "r")


def test_load_from_another_process_needs_the_class_importable(tmp_path):
    run = tmp_path / "r"
    scorematch.train(model=TinyScore(), data=blobs(200), out=run, **{**FAST, "steps": 3})
    code = f"import scorematch; m = scorematch.load({str(run)!r}, trust_model_module=True); " \
           "print(type(m.model).__name__)"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode != 0 and "user_models:TinyScore cannot be imported" in p.stderr
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0 and p.stdout.strip() == "TinyScore", p.stderr


# ----------------------------------------------------------------------------- bare models


def test_save_and_load_a_bare_model(tmp_path):
    torch.manual_seed(0)
    m = ScoreMLP(3, 16, 2)
    scorematch.save(m, tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "manifest.json", "weights.safetensors"]
    assert (tmp_path / "m" / "weights.safetensors").is_file()
    back = scorematch.load(tmp_path / "m")
    x = torch.randn(5, 3)
    assert type(back) is ScoreMLP and torch.equal(back.score(x), m.score(x))
    user = Standardized(TinyScore(2, 8), [100.0, -5.0], [50.0, 2.0])
    user.run_info = {"data": {"kind": "vector"}}
    scorematch.save(torch.compile(user, backend="eager"), tmp_path / "u")
    back = scorematch.load(tmp_path / "u")
    assert isinstance(back, Standardized) and isinstance(back.model, TinyScore)
    y = torch.tensor([[120.0, -4.0]])
    torch.testing.assert_close(back.score(y), user.score(y))
    assert back.run_info == user.run_info


def test_trained_model_saved_bare_still_generates(tmp_path):
    res = scorematch.train(data=blobs(300), out=tmp_path / "r", **{**FAST, "steps": 5})
    scorematch.save(res.model, tmp_path / "bare")
    back = scorematch.load(tmp_path / "bare")
    a = generate(res.model, res.model.run_info, 20, seed=3, n_steps=10)
    b = generate(back, back.run_info, 20, seed=3, n_steps=10)
    torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- torch.compile


class CountingBackend:
    """A torch.compile backend that counts the graphs it is given and runs them as they are."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return gm.forward


def test_compiled_model_runs_compiled_in_dsm_and_gives_the_same_loss():
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = ScoreMLP(2, 16, 2)
    backend = CountingBackend()
    compiled = torch.compile(model, backend=backend)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1))
    eager = O.dsm(model, x, 0.3, generator=torch.Generator().manual_seed(2))
    fast = O.dsm(compiled, x, 0.3, generator=torch.Generator().manual_seed(2))
    assert backend.graphs >= 1  # 0 before: .score of a compiled module ran the original
    torch.testing.assert_close(fast, eager)
    fast.backward()
    assert all(p.grad is not None for p in model.parameters())
    seen = backend.graphs
    ncsn = O.ncsn(torch.compile(SigmaScore(2, 8), backend=backend), x, [1.0, 0.1],
                  generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(ncsn) and backend.graphs > seen


def test_ssm_on_a_compiled_model_warns_and_matches_the_uncompiled_loss():
    torch._dynamo.reset()
    model = ScoreMLP(2, 16, 2)
    compiled = torch.compile(model, backend=CountingBackend())
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(1))
    with pytest.warns(ScoreMatchWarning, match="double backward"):
        loss = O.ssm(compiled, x, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loss, O.ssm(model, x, generator=torch.Generator().manual_seed(0)))
    loss.backward()


@pytest.mark.parametrize("name", ["langevin", "annealed", "pc"])
def test_samplers_run_a_compiled_model_compiled(name):
    torch._dynamo.reset()
    backend = CountingBackend()
    g = torch.Generator().manual_seed(0)
    if name == "langevin":
        m = ScoreMLP(2, 8, 1)
        c = torch.compile(m, backend=backend)
        a = samplers.langevin(c, torch.zeros(8, 2), 0.01, n_steps=5, generator=torch.Generator().manual_seed(0))
        b = samplers.langevin(m, torch.zeros(8, 2), 0.01, n_steps=5, generator=torch.Generator().manual_seed(0))
    elif name == "annealed":
        m = SigmaScore(2, 8)
        c = torch.compile(m, backend=backend)
        a = samplers.annealed_langevin(c, torch.zeros(8, 2), [1.0, 0.1], eps=0.01, steps_per_sigma=3, generator=g)
        b = samplers.annealed_langevin(m, torch.zeros(8, 2), [1.0, 0.1], eps=0.01, steps_per_sigma=3,
                                       generator=torch.Generator().manual_seed(0))
    else:
        from scorematch.sde import VESDE

        m = TimeScore(2, 8)
        c = torch.compile(m, backend=backend)
        sde = VESDE(0.01, 5.0)
        a = samplers.pc(c, (8, 2), sde, n_steps=4, generator=g)
        b = samplers.pc(m, (8, 2), sde, n_steps=4, generator=torch.Generator().manual_seed(0))
    assert backend.graphs >= 1
    torch.testing.assert_close(a, b)


def test_training_a_compiled_user_module(tmp_path):
    torch._dynamo.reset()
    backend = CountingBackend()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScoreMatchWarning)
        res = scorematch.train(model=torch.compile(TinyScore(2, 16), backend=backend), data=blobs(300),
                               out=tmp_path / "r", **{**FAST, "steps": 5})
    assert backend.graphs >= 1
    assert "model.net.0.weight" in load_file(tmp_path / "r" / "weights.safetensors")  # no _orig_mod prefix
    assert isinstance(scorematch.load(tmp_path / "r").model, TinyScore) and res.steps == 5


# ----------------------------------------------------------------------------- sampler callbacks


def test_every_sampler_calls_back_every_step_with_its_state():
    from scorematch.distributions import toy
    from scorematch.sde import VESDE

    gm = toy("gmm2d")
    seen: list[dict] = []
    samplers.langevin(gm.score, torch.zeros(4, 2), 0.01, n_steps=7, callback=seen.append)
    assert [d["i"] for d in seen] == list(range(7)) and seen[-1]["x"].shape == (4, 2)
    seen.clear()
    x = samplers.mala(lambda y: -gm.log_prob(y), torch.zeros(4, 2), 0.01, n_steps=5, callback=seen.append)
    assert len(seen) == 5 and torch.equal(seen[-1]["x"], x)
    assert 0 <= seen[-1]["acceptance_rate"] <= 1 and seen[-1]["nfe"] == 6
    seen.clear()
    samplers.annealed_langevin(lambda y, s: gm.noisy_score(y, s[0]), torch.zeros(4, 2), [2.0, 1.0, 0.5], eps=0.01,
                               steps_per_sigma=2, callback=seen.append)
    assert [(d["i"], d["level"], d["sigma"]) for d in seen] == [
        (0, 0, 2.0), (1, 0, 2.0), (2, 1, 1.0), (3, 1, 1.0), (4, 2, 0.5), (5, 2, 0.5)]
    sde = VESDE(0.01, 5.0)

    def score(y, t):
        return -y / (1 + sde.marginal_std(t)[:, None] ** 2)

    for fn in (samplers.euler_maruyama, samplers.reverse_diffusion, samplers.pc):
        seen.clear()
        fn(score, (4, 2), sde, n_steps=5, callback=seen.append)
        assert [d["i"] for d in seen] == list(range(5))
        assert [d["nfe"] for d in seen] == [k * (2 if fn is samplers.pc else 1) for k in range(1, 6)]
        assert seen[0]["t"] == pytest.approx(1.0) and seen[-1]["t"] < seen[0]["t"]
    seen.clear()
    samplers.ode(score, (4, 2), sde, callback=seen.append)
    # every velocity evaluation, then the denoising step
    assert [d["nfe"] for d in seen] == list(range(1, len(seen) + 1)) and seen[-1]["t"] == pytest.approx(1e-3)
    assert seen[0]["t"] == pytest.approx(1.0)


def test_sampler_progress_prints_lines_when_stderr_is_not_a_terminal(capsys, monkeypatch):
    from scorematch import _progress

    monkeypatch.setattr(_progress, "LOG_EVERY_S", 0.0)
    samplers.langevin(lambda y: -y, torch.zeros(3, 2), 0.01, n_steps=4, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("langevin: 1/4 steps (25%), ") and "ETA" in lines[0]
    assert lines[-1].startswith("langevin: 4/4 steps (100%), ") and "took" in lines[-1]
    samplers.langevin(lambda y: -y, torch.zeros(3, 2), 0.01, n_steps=4)  # progress=False by default: silent
    assert capsys.readouterr().err == ""
