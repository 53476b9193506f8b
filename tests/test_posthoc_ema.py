"""Post-hoc EMA in runs: snapshots while training (and across a resume), `scorematch ema` and its
one-line errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from scorematch.ema import reconstruct, sigma_rel_to_gamma
from scorematch.run.training.posthoc import list_snapshots, read_snapshot
from tests.cli_helpers import assert_one_line_error, run_cli

TRAIN = ["train", "--data", "gmm2d", "--objective", "dsm", "--n-data", "500", "--batch-size", "64",
         "--hidden", "16", "--depth", "1", "--posthoc-ema-every", "20", "--checkpoint-every", "30",
         "--no-progress", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from scorematch.cli import main

    root = tmp_path_factory.mktemp("posthoc")
    assert main([*TRAIN, "--steps", "60", "--out", str(root / "run")]) == 0
    return root / "run"


def _snapshot_steps(run):
    return [int(s.name.split("_")[1]) for s in list_snapshots(run / "posthoc-ema")]


def test_snapshots_every_k_steps_and_at_checkpoints(trained):
    assert _snapshot_steps(trained) == [20, 30, 40, 60]
    snaps = read_snapshot(trained / "posthoc-ema" / "step_00000060")
    assert [s.gamma for s in snaps] == pytest.approx([sigma_rel_to_gamma(0.05), sigma_rel_to_gamma(0.10)])
    assert all(s.step == 60 for s in snaps)
    weights = load_file(trained / "weights.safetensors")
    assert set(snaps[0].state) == {k[len("model."):] for k in weights if k.startswith("model.")}


def test_a_resumed_run_continues_the_averages(trained, tmp_path, capsys):
    run = tmp_path / "resumed"
    assert run_cli([*TRAIN, "--steps", "30", "--out", run], capsys)[0] == 0
    # a snapshot after the checkpoint (as a run killed after writing it would leave) is removed
    (run / "posthoc-ema" / "step_00000050.json").write_text("{}")
    assert run_cli(["train", "--resume", run, "--steps", "60", "--no-progress"], capsys)[0] == 0
    assert _snapshot_steps(run) == [20, 30, 40, 60]
    for a, b in zip(read_snapshot(run / "posthoc-ema" / "step_00000060"),
                    read_snapshot(trained / "posthoc-ema" / "step_00000060"), strict=True):
        for k in a.state:
            torch.testing.assert_close(a.state[k], b.state[k], rtol=0, atol=1e-6)


def test_ema_command_writes_a_run_with_the_reconstructed_average(trained, tmp_path, capsys):
    out = tmp_path / "ema007"
    rc, text, err = run_cli(["ema", trained, "--sigma-rel", "0.07", "--out", out], capsys)
    assert rc == 0, err
    assert str(out) in text
    snapshots = [s for stem in list_snapshots(trained / "posthoc-ema") for s in read_snapshot(stem)]
    expected = reconstruct(snapshots, 0.07)
    new, old = load_file(out / "weights.safetensors"), load_file(trained / "weights.safetensors")
    for k, v in expected.items():
        torch.testing.assert_close(new[f"ema.{k}"], v.to(new[f"ema.{k}"].dtype))
        assert torch.equal(new[f"model.{k}"], old[f"model.{k}"])
    # the length that was tracked comes back as its own snapshot
    rc, _, _ = run_cli(["ema", trained, "--sigma-rel", "0.1", "--out", tmp_path / "ema01"], capsys)
    tracked = read_snapshot(trained / "posthoc-ema" / "step_00000060")[1].state
    again = load_file(tmp_path / "ema01" / "weights.safetensors")
    for k, v in tracked.items():
        torch.testing.assert_close(again[f"ema.{k}"], v, rtol=1e-5, atol=1e-6)
    info = json.loads((out / "run.json").read_text())["posthoc_ema"]
    assert info["sigma_rel"] == 0.07 and info["at_step"] == 60 and info["snapshots"] == 4
    # the new folder is a run: sample reads its weights
    rc, _, err = run_cli(["sample", out, "--n", "8", "--out", tmp_path / "s.npz", "--no-progress"], capsys)
    assert rc == 0, err


def test_ema_command_errors_are_one_line(trained, tmp_path, capsys):
    rc, _, err = run_cli(["ema", tmp_path / "nowhere", "--sigma-rel", "0.05"], capsys)
    assert_one_line_error(rc, err, "does not exist")
    rc, _, err = run_cli(["ema", trained, "--sigma-rel", "0.5", "--out", tmp_path / "x"], capsys)
    assert_one_line_error(rc, err, "sigma_rel")
    rc, _, err = run_cli(["ema", trained, "--sigma-rel", "0.05", "--out", trained], capsys)
    assert_one_line_error(rc, err, "exists", "--out")
    plain = tmp_path / "plain"
    assert run_cli([*TRAIN[:-7], "--no-progress", "--device", "cpu", "--steps", "5", "--out", plain], capsys)[0] == 0
    rc, _, err = run_cli(["ema", plain, "--sigma-rel", "0.05"], capsys)
    assert_one_line_error(rc, err, "no post-hoc EMA snapshots", "--posthoc-ema-every")
    assert not (tmp_path / "x").exists()


def test_a_damaged_snapshot_is_named(trained, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(trained, run)
    f = run / "posthoc-ema" / "step_00000040.safetensors"
    f.write_bytes(f.read_bytes()[:-4] + b"\0\0\0\0")
    rc, _, err = run_cli(["ema", run, "--sigma-rel", "0.05", "--out", tmp_path / "y"], capsys)
    assert_one_line_error(rc, err, "step_00000040.safetensors", "SHA-256")
