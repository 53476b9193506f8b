"""Progress on stderr when it is not a terminal (a log file, a pipe): every sampler family writes
plain lines, one every ``LOG_EVERY_S`` seconds and a last one with the time taken, and never a
carriage return (a tqdm bar in a log file is one endless line of redrawn bars)."""

from __future__ import annotations

import re

import pytest
import torch

from scorematch import _progress
from scorematch.distributions import toy
from scorematch.noise import karras_sigmas
from scorematch.samplers import langevin
from scorematch.samplers.denoising import DENOISING_SAMPLERS

MIX = toy("gmm2d")
STEPS = 6


def run_denoising(name: str, gen: torch.Generator) -> None:
    fn = DENOISING_SAMPLERS[name][0]
    sigmas = karras_sigmas(STEPS, 0.01, 10.0)  # STEPS levels and a final 0: STEPS steps
    fn(MIX.noisy_score, 10 * torch.randn(50, 2, generator=gen), sigmas, generator=gen, progress=True)


def run_langevin(gen: torch.Generator) -> None:
    langevin(MIX.score, torch.randn(50, 2, generator=gen), step_size=0.01, n_steps=STEPS, generator=gen,
             progress=True)


CASES = [("langevin", run_langevin)] + [(name, lambda g, n=name: run_denoising(n, g)) for name in DENOISING_SAMPLERS]


@pytest.mark.parametrize("name, run", CASES, ids=[c[0] for c in CASES])
def test_progress_off_a_terminal_is_plain_lines(name, run, gen, capsys, monkeypatch):
    monkeypatch.setattr(_progress, "LOG_EVERY_S", 0.0)  # a line at every step instead of every 10 s
    run(gen)
    err = capsys.readouterr().err
    assert "\r" not in err and "\x1b" not in err
    lines = err.splitlines()
    assert len(lines) == STEPS + 1, err  # one per step, then the last one with the time taken
    assert all(re.fullmatch(rf"[\w ]+: {k}/{STEPS} steps \(\d+%\), [\d.e+-]+ steps/s, ETA \d+:\d\d", line)
               for k, line in enumerate(lines[:-1], start=1)), lines
    assert re.fullmatch(rf"[\w ]+: {STEPS}/{STEPS} steps \(100%\), [\d.e+-]+ steps/s, took \d+:\d\d", lines[-1])


@pytest.mark.parametrize("name, run", CASES[:2], ids=[c[0] for c in CASES[:2]])
def test_the_default_period_writes_only_the_last_line(name, run, gen, capsys):
    run(gen)  # a few milliseconds: no periodic line, only the final one
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and "took" in lines[0]


def test_progress_off_writes_nothing(gen, capsys):
    fn = DENOISING_SAMPLERS["dpm_solver"][0]
    fn(MIX.noisy_score, 10 * torch.randn(5, 2, generator=gen), karras_sigmas(4, 0.01, 10.0), generator=gen)
    assert capsys.readouterr().err == ""
