"""Faults a long run meets: kills, NaN losses, unwritable folders, broken writes, malformed configs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import scorematch
from scorematch.errors import ConfigError, ScoreMatchError, TrainingError
from scorematch.files import OutputError
from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.folder.config import TrainConfig, from_dict, load_config
from scorematch.samplers import annealed_langevin, langevin


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}


@pytest.mark.slow
def test_sigkill_loses_only_the_steps_since_the_last_checkpoint(tmp_path: Path) -> None:
    args = ["--data", "gmm2d", "--objective", "dsm", "--steps", "400", "--batch-size", "64",
            "--checkpoint-every", "50", "--n-data", "2000", "--no-progress"]
    ref = scorematch.train(data="gmm2d", objective="dsm", steps=400, batch_size=64, checkpoint_every=50,
                           n_data=2000, progress=False, out=tmp_path / "ref")
    run = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "scorematch", "train", *args, "--out", str(run)],
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not ckpt.list_checkpoints(run / "checkpoints"):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stems = ckpt.list_checkpoints(run / "checkpoints")
    assert stems, "no checkpoint was written before the kill"
    killed_at = int(stems[-1].name.split("_")[1])
    assert not (run / "weights.safetensors").exists() or killed_at == 400
    res = scorematch.train(resume=run, steps=400, progress=False)
    assert res.steps == 400
    a, b = load_file(run / "weights.safetensors"), load_file(ref.run_dir / "weights.safetensors")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)


def test_a_torn_checkpoint_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "checkpoints"
    state = {"world_size": 1, "optimizer": {"scalars": {}, "param_groups": [
        {"params": [0], "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0}]}}
    ckpt.save_checkpoint(folder, 10, {"w": torch.ones(3)}, state)

    def fail(src, dst, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputError, match="no space left on the device"):
        ckpt.save_checkpoint(folder, 20, {"w": torch.zeros(3)}, state)
    monkeypatch.undo()
    assert [p.name for p in ckpt.list_checkpoints(folder)] == ["step_00000010"]
    assert not list(folder.glob(".*.tmp")), "temporary files must be cleaned up"
    tensors, meta = ckpt.latest_checkpoint(folder)
    assert meta["step"] == 10 and torch.equal(tensors["w"], torch.ones(3))


def test_nan_loss_stops_with_step_and_noise_level_and_keeps_the_checkpoint(tmp_path: Path) -> None:
    run = tmp_path / "nan"
    res = subprocess.run([sys.executable, "-m", "scorematch", "train", "--data", "gmm2d", "--objective", "ncsn",
                          "--lr", "1e12", "--grad-clip", "1e30", "--steps", "200", "--checkpoint-every", "1",
                          "--keep-checkpoints", "1", "--n-data", "500", "--no-progress", "--out", str(run)],
                         capture_output=True, text=True, env=_env(), timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    msg = res.stderr.strip().splitlines()[-1]
    assert msg.startswith("scorematch: error: loss became")
    assert "at step" in msg and "noise level" in msg and "sigma =" in msg and "--lr" in msg
    stems = ckpt.list_checkpoints(run / "checkpoints")
    assert stems, "the last good checkpoint must be kept"
    tensors, _ = ckpt.load_checkpoint(stems[-1])
    assert all(torch.isfinite(v).all() for k, v in tensors.items() if k.startswith("model."))


def test_skip_nonfinite_skips_bad_batches_instead_of_stopping(tmp_path: Path, capsys) -> None:
    res = scorematch.train(data="gmm2d", objective="ncsn", lr=1e12, grad_clip=1e30, steps=30, n_data=500,
                           progress=False, skip_nonfinite=True, max_skipped=30, out=tmp_path / "skip")
    assert res.steps == 30
    assert "skipping step" in capsys.readouterr().err


def test_unwritable_output_fails_before_training(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TrainingError, match="cannot write to the run folder"):
        scorematch.train(data="gmm2d", steps=10, progress=False, out=blocker / "run")


def test_full_disk_fails_before_training(tmp_path: Path, monkeypatch) -> None:
    def full(path, root=None):
        raise OutputError("no space left on the device holding " + str(path))

    monkeypatch.setattr(ckpt, "probe_writable", full)
    t0 = time.perf_counter()
    with pytest.raises(TrainingError, match="no space left on the device"):
        scorematch.train(data="gmm2d", steps=100_000, progress=False, out=tmp_path / "run")
    assert time.perf_counter() - t0 < 30
    assert not (tmp_path / "run" / "config.json").exists()


def test_trajectory_larger_than_memory_is_refused_before_allocating() -> None:
    x0 = torch.zeros(100_000, 2)
    with pytest.raises(ConfigError, match="trajectory_every"):
        langevin(lambda x: -x, x0, step_size=0.1, n_steps=10_000, return_trajectory=True)
    with pytest.raises(ConfigError, match="GiB"):
        annealed_langevin(lambda x, s: -x, torch.zeros(4096, 3, 256, 256), [1.0, 0.1], eps=1e-5,
                          steps_per_sigma=1, return_trajectory=True)


def test_loading_and_resuming_never_unpickle(tmp_path: Path, monkeypatch) -> None:
    import pickle

    run = scorematch.train(data="gmm2d", steps=4, checkpoint_every=2, n_data=300, progress=False,
                           out=tmp_path / "run").run_dir

    def refuse(*args, **kwargs):
        raise AssertionError("scorematch unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model = scorematch.load(run)
    assert model.score(torch.zeros(3, 2)).shape == (3, 2)
    assert scorematch.train(resume=run, steps=6, progress=False).steps == 6


def test_newer_run_folder_is_refused(tmp_path: Path) -> None:
    d = TrainConfig().to_dict() | {"format": 99, "version": "9.0.0"}
    (tmp_path / "config.json").write_text(json.dumps(d))
    with pytest.raises(ScoreMatchError, match="newer scorematch"):
        load_config(tmp_path)


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True), st.text(max_size=12),
    st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
_keys = st.one_of(st.sampled_from(sorted(TrainConfig().to_dict())), st.text(max_size=10))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(_keys, _values, max_size=6))
def test_malformed_configs_fail_with_scorematch_errors(d: dict) -> None:
    try:
        cfg = from_dict(d)
    except ScoreMatchError as err:
        assert str(err)
        return
    assert isinstance(cfg, TrainConfig)
    assert set(d) <= set(cfg.to_dict())


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=200))
def test_malformed_config_files_fail_with_scorematch_errors(tmp_path_factory, blob: bytes) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_bytes(blob)
    with pytest.raises(ScoreMatchError):
        load_config(path)
