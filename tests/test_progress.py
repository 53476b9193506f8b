"""Progress on stderr when it is not a terminal (a log file, a pipe): every sampler of the catalogue
writes plain lines, one every ``LOG_EVERY_S`` seconds and a last one with the time taken, and never
a carriage return (a tqdm bar in a log file is one endless line of redrawn bars)."""

from __future__ import annotations

import re

import pytest
import torch

from scorematch import _progress
from scorematch.distributions import toy
from scorematch.noise import karras_sigmas
from scorematch.samplers import catalogue
from scorematch.sde import get_sde

MIX = toy("gmm2d")
STEPS = 6
SDE = get_sde("ve", sigma_min=0.01, sigma_max=10.0)


def run(entry: catalogue.Sampler, gen: torch.Generator, n_steps: int = STEPS) -> None:
    """``entry``'s sampler on the analytic mixture, ``n_steps`` steps, progress on."""
    common = {"generator": gen, "progress": True}
    if entry.family == catalogue.UNCONDITIONAL:
        entry.function(MIX.score, torch.randn(50, 2, generator=gen), 0.01, n_steps=n_steps, **common)
    elif entry.family == catalogue.NCSN_LEVELS:
        sigmas = karras_sigmas(n_steps, 0.1, 10.0, append_zero=False)
        entry.function(MIX.noisy_score, torch.randn(50, 2, generator=gen), sigmas, eps=1e-3, steps_per_sigma=1,
                       **common)
    elif entry.family == catalogue.SCORE_SDE:
        score = lambda x, t: MIX.noisy_score(x, SDE.marginal_std(t))  # noqa: E731
        entry.function(score, SDE.prior_sample((50, 2), generator=gen), SDE, n_steps=n_steps, **common)
    else:
        sigmas = karras_sigmas(n_steps, 0.01, 10.0)  # n_steps levels and a final 0: n_steps steps
        entry.function(MIX.noisy_score, 10 * torch.randn(50, 2, generator=gen), sigmas, **common)


# every sampler with a number of steps (mala needs an energy; the adaptive solvers, whose evaluations
# the solver chooses, have no step count)
STEPPED = [e for e in catalogue.entries() if e.name != "mala" and e.nfe(
    STEPS, {o.name: 1 if o.default is None else o.default for o in e.options}) is not None]


@pytest.mark.parametrize("entry", STEPPED, ids=[e.name for e in STEPPED])
def test_progress_off_a_terminal_is_plain_lines(entry, gen, capsys, monkeypatch):
    monkeypatch.setattr(_progress, "LOG_EVERY_S", 0.0)  # a line at every step instead of every 10 s
    run(entry, gen)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    last = re.fullmatch(r"[\w ]+: (\d+)/(\d+) steps \(100%\), [\d.e+-]+ steps/s, took \d+:\d\d", lines[-1])
    assert last and last[1] == last[2] and int(last[2]) >= STEPS, lines[-1]
    total = int(last[2])
    assert len(lines) == total + 1, err  # one per step, then the last one with the time taken
    assert all(re.fullmatch(rf"[\w ]+: {k}/{total} steps \(\d+%\), [\d.e+-]+ steps/s, ETA \d+:\d\d", line)
               for k, line in enumerate(lines[:-1], start=1)), lines


@pytest.mark.parametrize("entry", STEPPED[:3], ids=[e.name for e in STEPPED[:3]])
def test_the_default_period_writes_only_the_last_line(entry, gen, capsys):
    run(entry, gen)  # a few milliseconds: no periodic line, only the final one
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "took" in lines[0]


def test_progress_off_writes_nothing(gen, capsys):
    entry = catalogue.entry("dpm_solver")
    entry.function(MIX.noisy_score, 10 * torch.randn(5, 2, generator=gen), karras_sigmas(4, 0.01, 10.0),
                   generator=gen)
    assert capsys.readouterr().err == ""
