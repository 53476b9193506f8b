"""The protocol of a user's own model (docs/your-model.md): every example of that page runs as it is
written, the EDM one to the quality bar of the built-in EDM model (tests/test_edm.py: Heun at 35
evaluations, MMD^2 against fresh draws of gmm2d below 2.5e-3, mode weights within 0.05 of 1/2),
EDMPrecond around a user's network is saved and rebuilt, and the mistakes a user makes with an
own model end in scorematch's one-line errors."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from user_models import SigmaScore, TinyScore

import scorematch
from scorematch.distributions import toy
from scorematch.errors import DataError, ModelError, ScoreMatchError
from scorematch.metrics import mmd, mode_weights
from scorematch.models.edm import EDMPrecond
from scorematch.run.sampling.generate import generate
from scorematch.run.sampling.inpaint import inpaint_run

PAGE = Path(__file__).resolve().parents[1] / "docs" / "your-model.md"
FENCE = re.compile(r"^```python(?P<attrs>[^\n]*)\n(?P<code>.*?)^```", re.S | re.M)
FAST = dict(steps=10, batch_size=64, progress=False, device="cpu", seed=0)


def examples() -> dict[str, list[tuple[str | None, str]]]:
    """{heading: [(file name or None for the script, code), ...]} of the page's "## Examples" section."""
    text = PAGE.read_text()
    body = text[text.index("\n## Examples"):]
    body = body[:body.index("\n## ", 5)]
    found: dict[str, list[tuple[str | None, str]]] = {}
    for part in body.split("\n### ")[1:]:
        heading = part.splitlines()[0].strip()
        blocks = []
        for m in FENCE.finditer(part):
            title = re.search(r'title="([^"]+)"', m["attrs"])
            blocks.append((title[1] if title else None, m["code"]))
        found[heading] = blocks
    return found


EXAMPLES = examples()


def run_example(heading: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Write the example's module files into tmp_path and run its script there; its namespace."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    ns: dict = {"__name__": "__example__"}
    for title, code in EXAMPLES[heading]:
        if title is not None:
            (tmp_path / title).write_text(code)
            monkeypatch.delitem(sys.modules, Path(title).stem, raising=False)
    for title, code in EXAMPLES[heading]:
        if title is None:
            exec(compile(code, f"{PAGE.name}: {heading}", "exec"), ns)
    return ns


def test_the_page_has_one_example_per_conditioning():
    assert len(EXAMPLES) == 6
    for heading, blocks in EXAMPLES.items():
        titles = [t for t, _ in blocks]
        assert titles[0] is not None and titles[0].endswith(".py") and titles[1:] == [None], heading
    conditioning = {h: re.search(r'conditioning = "(\w+)"', b[0][1]) for h, b in EXAMPLES.items()}
    found = {m[1] for m in conditioning.values() if m}
    assert found == {"none", "sigma", "time"}
    assert any("labels" in b[0][1] and "class_conditional=True" in b[1][1] for b in EXAMPLES.values())


@pytest.mark.slow
@pytest.mark.parametrize("heading", [h for h in EXAMPLES if "preconditioned" not in h])
def test_each_example_trains_and_samples(heading, tmp_path, monkeypatch):
    ns = run_example(heading, tmp_path, monkeypatch)
    out = ns.get("samples", ns.get("threes"))
    shape = (16, 1, 8, 8) if "labels" in heading else (1000, 2)
    assert isinstance(out, torch.Tensor) and out.shape == shape and torch.isfinite(out).all()
    if "labels" not in heading:
        # in data units: the mixture's modes are at (2, 2) and (-2, -2), its points within |x| < 8
        assert float(out.abs().max()) < 20 and float(out.std()) > 0.5
    assert [p.name for p in (tmp_path / "runs").glob("*/run.json")] == ["run.json"]


@pytest.mark.slow
def test_the_edm_example_reaches_the_built_in_models_bar(tmp_path, monkeypatch):
    ns = run_example("Noise conditioning for EDM: your network F, preconditioned", tmp_path, monkeypatch)
    mix = toy("gmm2d")
    x = ns["samples"]
    fresh = mix.sample(2000, torch.Generator().manual_seed(2))
    assert float(mmd(x[:2000], fresh, bandwidth=1.0)) < 2.5e-3
    assert float((mode_weights(x, mix.means.float()) - mix.weights.float()).abs().max()) < 0.05
    calls = []
    net = ns["res"].model.model.net
    handle = net.register_forward_hook(lambda *a: calls.append(1))
    generate(ns["res"].model, ns["res"].model.run_info, 10, sampler="heun", n_steps=18, seed=1)
    handle.remove()
    assert len(calls) == 35  # Heun: 2 x 18 - 1 evaluations of the user's network
    loaded = scorematch.load(tmp_path / "runs" / "edm")
    assert type(loaded.model.net).__name__ == "MyNet" and loaded.model.config["net"] == "my_edm:MyNet"
    probe, sigma = torch.randn(5, 2), torch.full((5,), 0.7)
    torch.testing.assert_close(loaded.score(probe, sigma), ns["res"].model.score(probe, sigma))


# ----------------------------------------------------------------------------- EDMPrecond around F


class Net(nn.Module):
    def __init__(self, dim: int = 2, hidden: int = 8):
        super().__init__()
        self.config = {"dim": dim, "hidden": hidden}
        self.lin = nn.Linear(dim + 1, dim)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        return self.lin(torch.cat([x, c_noise[:, None]], 1))


def test_precond_of_a_user_network_is_the_edm_formula(gen):
    m = EDMPrecond(Net(), sigma_data=1.3)
    x, sigma = torch.randn(6, 2, generator=gen), torch.rand(6, generator=gen) + 0.1
    s, sd = sigma[:, None], 1.3
    c_skip, c_out, c_in = sd**2 / (s**2 + sd**2), s * sd / (s**2 + sd**2).sqrt(), (s**2 + sd**2).rsqrt()
    d = c_skip * x + c_out * m.net(c_in * x, sigma.log() / 4)
    torch.testing.assert_close(m.denoise(x, sigma), d)
    torch.testing.assert_close(m.score(x, sigma), (d - x) / s**2, rtol=1e-5, atol=1e-5)
    assert m.config == {"net": f"{__name__}:Net", "net_config": {"dim": 2, "hidden": 8}, "sigma_data": 1.3}
    with pytest.raises(ScoreMatchError, match="leave net_config out"):
        EDMPrecond(Net(), {"dim": 2})


def test_a_network_of_the_running_script_is_refused_inside_edmprecond_too(tmp_path):
    main_net = type("MainNet", (Net,), {"__module__": "__main__"})
    with pytest.raises(ModelError, match="MainNet is defined in the script being run"):
        scorematch.save(EDMPrecond(main_net(), sigma_data=1.0), tmp_path / "m")


def test_edm_takes_a_sigma_conditioned_model_and_refuses_others_in_one_line(tmp_path):
    x = toy("gmm2d").sample(300, torch.Generator().manual_seed(0))
    res = scorematch.train(model=SigmaScore(2, 16), data=x, objective="edm", out=tmp_path / "a", **FAST)
    s = generate(res.model, res.model.run_info, 20, sampler="heun", n_steps=5, seed=0)
    assert s.shape == (20, 2) and torch.isfinite(s).all()
    with pytest.raises(ModelError, match="needs a sigma-conditioned model"):
        scorematch.train(model=TinyScore(2, 16), data=x, objective="edm", out=tmp_path / "b", **FAST)

    class OnlyDenoise(nn.Module):
        conditioning = "sigma"

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def denoise(self, x, sigma):
            return self.lin(x)

    with pytest.raises(ModelError, match="has denoise but no score"):
        scorematch.train(model=OnlyDenoise(), data=x, objective="edm", out=tmp_path / "c", **FAST)


class ForwardOnlyScore(nn.Module):
    """A score model without a ``score`` method: forward is the score."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, x):
        return self.lin(x)


@pytest.mark.parametrize("module", [TinyScore, ForwardOnlyScore])
def test_mala_on_a_users_score_model_is_refused_in_one_line(module, tmp_path):
    x = toy("gmm2d").sample(300, torch.Generator().manual_seed(0))
    res = scorematch.train(model=module(), data=x, out=tmp_path / "run", **FAST)
    with pytest.raises(ScoreMatchError, match="mala.* is for energy models.*use --sampler langevin") as err:
        generate(res.model, res.model.run_info, 10, sampler="mala")
    assert "\n" not in str(err.value)


def test_inpaint_run_takes_numpy_arrays(tmp_path):
    x = toy("gmm2d").sample(300, torch.Generator().manual_seed(0))
    res = scorematch.train(model=SigmaScore(2, 16), data=x, objective="ncsn", out=tmp_path / "run", **FAST)
    known = np.array([[2.0, 0.0], [-2.0, 0.0], [1.0, 0.0]], dtype=np.float32)
    mask = np.array([[True, False]] * 3)
    out = inpaint_run(res.model, res.model.run_info, known, mask, method="replace", n_steps=5, seed=0)
    assert out.shape == (3, 2) and torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 0], torch.from_numpy(known[:, 0]))  # the known part is kept
    again = inpaint_run(res.model, res.model.run_info, torch.from_numpy(known), torch.from_numpy(mask),
                        method="replace", n_steps=5, seed=0)
    torch.testing.assert_close(out, again)
    with pytest.raises(DataError, match="mask must be boolean"):
        inpaint_run(res.model, res.model.run_info, known, mask.astype(np.float32), method="replace", n_steps=5)
    with pytest.raises(DataError, match="x must be a tensor or a NumPy array"):
        inpaint_run(res.model, res.model.run_info, known.tolist(), mask, method="replace", n_steps=5)
