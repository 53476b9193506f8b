"""A received run folder cannot make scorematch write elsewhere, lose the user's files, load a
changed file, crash with a traceback or silently do something else than asked.

Each test replays a command of a hostile but fair test of the CLI (planted symbolic links, a
dead-end run folder, the user's own folder as --out, tampered checkpoints and weights, broken
run files, absurd sizes, settings that would be ignored) in-process through
``scorematch.cli.main``; the signal, DDP and several-node cases are in test_launcher.py, the fuzzing
and the full disk in test_run_files_fuzz.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import TINY, last_line_error, reseal
from cli_helpers import run_cli as cli
from safetensors.torch import load_file, save_file

import scorematch
from scorematch.cli import main
from scorematch.errors import CheckpointError
from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.folder import manifest

SAMPLE = ["--n", "10", "--n-steps", "5"]


def train(out: Path, capsys, *extra: str, steps: int = 20) -> Path:
    rc, _, err = cli(["train", *TINY, "--steps", steps, "--checkpoint-every", "10", "--out", out, *extra], capsys)
    assert rc == 0, err
    return out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hardening") / "run"
    assert main([str(a) for a in ["train", *TINY, "--steps", 20, "--checkpoint-every", 10, "--out", out]]) == 0
    return out


@pytest.fixture
def run(base_run: Path, tmp_path: Path) -> Path:
    """A private copy of a finished 20-step run (checkpoints at steps 10 and 20)."""
    copy = tmp_path / "run"
    shutil.copytree(base_run, copy)
    return copy


def reseal_checkpoint(stem: Path, state: dict | None = None, tensors: dict | None = None) -> None:
    """Rewrite a checkpoint's state and/or tensors with matching checksums."""
    doc = json.loads(stem.with_suffix(".json").read_text())
    if tensors is not None:
        save_file(tensors, stem.with_suffix(".safetensors"), metadata={"step": str(doc["state"]["step"])})
        doc["sha256"][stem.name + ".safetensors"] = manifest.sha256(stem.with_suffix(".safetensors").read_bytes())
    if state is not None:
        doc["state"] = state
        doc["sha256"]["state"] = ckpt._state_hash(state)
    stem.with_suffix(".json").write_text(json.dumps(doc))


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = load_file(a / "weights.safetensors"), load_file(b / "weights.safetensors")
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# --------------------------------------------------------------------------------------------
# 1. no write through a planted symbolic link


def test_sample_does_not_write_through_a_planted_link(run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (run / "samples.npz").symlink_to("../victim.txt")
    rc, _, err = cli(["sample", run, *SAMPLE], capsys)
    assert rc == 0, err
    assert victim.read_text() == "keep"
    assert not (run / "samples.npz").is_symlink() and np.load(run / "samples.npz")["samples"].shape == (10, 2)


def test_train_does_not_write_through_a_planted_loss_csv(run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    fresh = tmp_path / "d"
    fresh.mkdir()
    (fresh / "loss.csv").symlink_to("../victim.txt")
    rc, _, err = cli(["train", *TINY, "--steps", "5", "--out", fresh], capsys)
    last_line_error(rc, err, "not empty", "--force")
    # a resumed run whose loss.csv was replaced by a link to a file that looks like a loss log
    victim.write_text("step,loss,grad_norm,steps_per_s\r\n")
    (run / "loss.csv").unlink()
    (run / "loss.csv").symlink_to(victim)
    rc, _, err = cli(["train", "--resume", run, "--steps", "25", "--no-progress"], capsys)
    last_line_error(rc, err, f"{run / 'loss.csv'} is a symbolic link; scorematch never writes through one")
    assert victim.read_bytes() == b"step,loss,grad_norm,steps_per_s\r\n"


def test_plot_refuses_a_planted_folder_link_and_replaces_a_file_link(run, tmp_path, capsys):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (run / "plots").symlink_to(elsewhere)
    rc, _, err = cli(["plot", run, "--n", "50"], capsys)
    last_line_error(rc, err, "plots is a symbolic link", "never writes through one")
    assert list(elsewhere.iterdir()) == []
    (run / "plots").unlink()
    (run / "plots").mkdir()
    victim = tmp_path / "victim.png"
    victim.write_text("keep")
    (run / "plots" / "loss.png").symlink_to(victim)
    rc, _, err = cli(["plot", run, "--n", "50"], capsys)
    assert rc == 0, err
    assert victim.read_text() == "keep" and (run / "plots" / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_report_and_eval_do_not_write_through_planted_links(run, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (run / "report.html").symlink_to(victim)
    (run / "eval.json").symlink_to(victim)
    rc, _, err = cli(["report", run, "--n", "50"], capsys)
    assert rc == 0, err
    assert victim.read_text() == "keep"
    assert not (run / "report.html").is_symlink() and (run / "report.html").read_text().startswith("<!DOCTYPE")
    assert not (run / "eval.json").is_symlink() and "mmd" in json.loads((run / "eval.json").read_text())


def test_a_planted_checkpoints_link_is_neither_written_nor_pruned(run, tmp_path, capsys):
    """A link at RUN/checkpoints would make the pruning of old checkpoints delete files elsewhere."""
    elsewhere = tmp_path / "mine"
    shutil.move(run / "checkpoints", elsewhere)
    (run / "checkpoints").symlink_to(elsewhere)
    before = sorted(p.name for p in elsewhere.iterdir())
    rc, _, err = cli(["train", "--resume", run, "--steps", "40", "--no-progress"], capsys)
    assert rc == 2 and "Traceback" not in err
    assert sorted(p.name for p in elsewhere.iterdir()) == before


# --------------------------------------------------------------------------------------------
# 3. a run folder is resumable or restartable


def test_nan_at_the_first_step_leaves_a_resumable_run(tmp_path, capsys):
    out = tmp_path / "N"
    rc, _, err = cli(["train", *TINY, "--hidden", "128", "--depth", "3", "--lr", "1e6", "--steps", "50",
                      "--out", out], capsys)
    line = last_line_error(rc, err, "loss became", "The last good checkpoint is step 0",
                          f"{out}/checkpoints/step_00000000.safetensors", f"--resume {out} --lr",
                          "--lr, --grad-clip, --precision, --skip-nonfinite, --max-skipped")
    assert "--steps" in line
    assert ckpt.list_checkpoints(out / "checkpoints")[0].name == "step_00000000"
    rc, out_text, err = cli(["train", "--resume", out, "--lr", "1e-3", "--grad-clip", "0.5", "--no-progress"], capsys)
    assert rc == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["lr"] == 1e-3 and cfg["grad_clip"] == 0.5 and cfg["steps"] == 50
    assert cfg["history"] == [{"step": 0, "set": {"lr": 1e-3, "grad_clip": 0.5}, "was": {"lr": 1e6, "grad_clip": 1.0}}]
    # the resumed run is the run that had lr 1e-3 and grad-clip 0.5 from the start
    ref = train(tmp_path / "ref", capsys, "--hidden", "128", "--depth", "3", "--lr", "1e-3", "--grad-clip", "0.5",
                steps=50)
    assert same_weights(out, ref)


@pytest.mark.parametrize("case", ["constant data", "batch 1e12", "bad schedule in --config"])
def test_failures_before_training_leave_nothing_behind(case, tmp_path, capsys):
    out = tmp_path / "out"
    np.savetxt(tmp_path / "const.csv", np.ones((50, 2)), delimiter=",")
    bad = {**json.loads(json.dumps({"objective": "dsm"})), "schedule": {"sigma": -1.0}}
    (tmp_path / "cfg.json").write_text(json.dumps(bad))
    args, needle = {
        "constant data": (["--data", tmp_path / "const.csv"], "are the same point"),
        "batch 1e12": (["--batch-size", "1e12"], "TiB of memory"),
        "bad schedule in --config": (["--config", tmp_path / "cfg.json"], "sigma must be a positive finite number"),
    }[case]
    rc, _, err = cli(["train", "--steps", "5", "--no-progress", "--out", out, *args], capsys)
    last_line_error(rc, err, needle)
    assert not out.exists()
    train(out, capsys, steps=5)  # the same --out then simply works


def test_a_run_killed_before_its_first_checkpoint_is_started_again(run, tmp_path, capsys):
    """What a kill during set-up leaves (config.json, run.json, no checkpoint): --out restarts it,
    --resume too, each after saying so."""
    shutil.rmtree(run / "checkpoints")
    (run / "weights.safetensors").unlink()
    (run / "loss.csv").unlink()
    rc, _, err = cli(["train", *TINY, "--steps", "20", "--checkpoint-every", "10", "--out", run], capsys)
    assert rc == 0 and "stopped before its first checkpoint; starting it again" in err
    assert same_weights(run, train(tmp_path / "ref", capsys))
    shutil.rmtree(run / "checkpoints")
    (run / "weights.safetensors").unlink()
    rc, _, err = cli(["train", "--resume", run, "--no-progress"], capsys)
    assert rc == 0 and "starting it again from step 0" in err
    assert same_weights(run, tmp_path / "ref")


# --------------------------------------------------------------------------------------------
# 4. the user's files are never overwritten


def test_out_refuses_the_users_folder_and_force_keeps_every_file(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    files = {"loss.csv": b"my,own\n1,2\n", "run.json": b'{"mine": true}', "weights.safetensors": b"my weights",
             "notes.txt": b"notes"}
    for name, data in files.items():
        (mine / name).write_bytes(data)
    rc, _, err = cli(["train", *TINY, "--steps", "5", "--out", mine], capsys)
    last_line_error(rc, err, "is not empty", "is not a scorematch run", "--force", "nothing there is deleted")
    assert {p.name: p.read_bytes() for p in mine.iterdir()} == files
    rc, _, err = cli(["train", *TINY, "--steps", "5", "--out", mine, "--force"], capsys)
    assert rc == 0, err
    for name in ("loss.csv", "run.json", "weights.safetensors"):
        assert (mine / f"{name}.orig").read_bytes() == files[name]
        assert f"kept {mine / name} as {mine / name}.orig" in err
    assert (mine / "notes.txt").read_bytes() == b"notes"
    assert scorematch.load(mine).score(torch.zeros(3, 2)).shape == (3, 2)


def test_out_on_a_started_run_is_refused(run, capsys):
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    rc, _, err = cli(["train", *TINY, "--steps", "5", "--out", run], capsys)
    last_line_error(rc, err, "already holds a run (newest checkpoint: step 20)", f"--resume {run}")
    rc, _, err = cli(["train", *TINY, "--steps", "5", "--out", run, "--force"], capsys)
    last_line_error(rc, err, "already holds a run")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


# --------------------------------------------------------------------------------------------
# 5. integrity: every file checked against its manifest


def test_tampered_checkpoint_state_is_refused_and_the_previous_one_used(run, tmp_path, capsys):
    stem = run / "checkpoints" / "step_00000020"
    doc = json.loads(stem.with_suffix(".json").read_text())
    doc["state"]["optimizer"]["param_groups"][0]["lr"] = 100
    stem.with_suffix(".json").write_text(json.dumps(doc))
    rc, _, err = cli(["train", "--resume", run, "--steps", "30", "--no-progress"], capsys)
    assert rc == 0
    assert f"{stem}.json does not match its SHA-256" in err and "trying the previous checkpoint" in err
    assert same_weights(run, train(tmp_path / "ref", capsys, steps=30))  # resumed from step 10, lr 1e-3


@pytest.mark.parametrize("step", [-100, 10**6, "abc", 20.0])
def test_checkpoint_step_out_of_range_is_refused_even_with_matching_checksums(step, run, capsys):
    stem = run / "checkpoints" / "step_00000020"
    state = json.loads(stem.with_suffix(".json").read_text())["state"]
    reseal_checkpoint(stem, {**state, "step": step})
    rc, _, err = cli(["train", "--resume", run, "--steps", "30", "--no-progress"], capsys)
    assert rc == 0 and f"{stem}.json.step is" in err and "trying the previous checkpoint" in err


def test_bit_flips_in_the_weights_are_refused(run, capsys):
    w = run / "weights.safetensors"
    tensors = {k: v.clone() for k, v in load_file(w).items()}
    data = bytearray(w.read_bytes())
    rng = np.random.default_rng(0)
    header = 8 + int.from_bytes(data[:8], "little")
    for i in rng.choice(np.arange(header, len(data)), 100, replace=False):
        data[i] ^= 1 << int(rng.integers(8))
    w.write_bytes(bytes(data))
    changed = [k for k, v in load_file(w).items() if not torch.equal(v, tensors[k])]
    assert any(k.startswith("ema.") for k in changed)
    rc, _, err = cli(["sample", run, *SAMPLE, "--out", run / "s.npz"], capsys)
    assert rc == 0 and f"{w} does not match its SHA-256 in manifest.json" in err and "newest checkpoint" in err
    shutil.rmtree(run / "checkpoints")
    rc, _, err = cli(["sample", run, *SAMPLE, "--out", run / "t.npz"], capsys)
    last_line_error(rc, err, f"{w} does not match its SHA-256 in manifest.json")
    assert not (run / "t.npz").exists()


@pytest.mark.parametrize("name", ["config.json", "run.json"])
def test_edited_run_files_are_refused(name, run, capsys):
    doc = json.loads((run / name).read_text())
    if name == "config.json":
        doc["lr"] = 100.0
    else:
        doc["data"]["hi"] = 50.0
    (run / name).write_text(json.dumps(doc))
    rc, _, err = cli(["sample", run, *SAMPLE], capsys)
    last_line_error(rc, err, f"{run / name} does not match its SHA-256 in manifest.json")


def test_a_run_folder_without_manifest_is_refused(run, capsys):
    (run / manifest.MANIFEST).unlink()
    rc, _, err = cli(["sample", run, *SAMPLE], capsys)
    last_line_error(rc, err, "manifest.json is missing")


# --------------------------------------------------------------------------------------------
# 6. broken run files: one line, exit 2, never a traceback


def _write(path: Path, data: bytes | str | None) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    if data is None:
        path.mkdir()
    else:
        path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _edit_json(path: Path, fn) -> str:
    doc = json.loads(path.read_text())
    fn(doc)
    return json.dumps(doc)


BROKEN = {  # file, new content (None: a folder), words of the error
    "run.json binary": ("run.json", b"\x00\xff\xfe\x13" * 16, ["run.json is not text"]),
    "run.json 5": ("run.json", "5", ["run.json must be a JSON object"]),
    "run.json without kind": ("run.json", lambda p: _edit_json(p, lambda d: d["data"].pop("kind")),
                              ["run.json.data lacks 'kind'"]),
    "run.json sample_shape -1": ("run.json", lambda p: _edit_json(p, lambda d: d["data"].update(sample_shape=[-1])),
                                 ["sample_shape[0] must be an integer in [1, 65536], got -1"]),
    "run.json other model": ("run.json", lambda p: _edit_json(p, lambda d: d["model"]["config"].update(hidden=64)),
                             ["weights.safetensors: net.0.bias has shape (16,)", "needs (64,)",
                              "it is from another run or model"]),
    "config.json a folder": ("config.json", None, ["config.json is a folder"]),
    "config.json nested": ("config.json", "[" * 100_000 + "]" * 100_000, ["nested far deeper"]),
    "config.json schedule without sigma": ("config.json", lambda p: _edit_json(p, lambda d: d.update(schedule={})),
                                           ["config.json does not match"]),
    "config.json schedule other key": ("config.json",
                                       lambda p: _edit_json(p, lambda d: d.update(schedule={"sigmas": [1.0]})),
                                       ["config schedule lacks 'sigma'"]),
    "weights a folder": ("weights.safetensors", None, ["weights.safetensors is a folder"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_run_files_are_one_line_errors(case, run, capsys):
    name, content, needles = BROKEN[case]
    shutil.rmtree(run / "checkpoints")  # no fallback: the error itself must come out
    data = content(run / name) if callable(content) else content
    _write(run / name, data)
    if name == "run.json" and "other model" in case:
        reseal(run, name)
    rc, _, err = cli(["sample", run, *SAMPLE, "--out", run / "s.npz"], capsys)
    last_line_error(rc, err, *needles)
    assert not (run / "s.npz").exists()


def test_checkpoint_json_without_optimizer_and_rng_of_the_wrong_size(run, capsys):
    stem20, stem10 = run / "checkpoints" / "step_00000020", run / "checkpoints" / "step_00000010"
    state = json.loads(stem20.with_suffix(".json").read_text())["state"]
    reseal_checkpoint(stem20, {k: v for k, v in state.items() if k != "optimizer"})
    tensors = load_file(stem10.with_suffix(".safetensors"))
    reseal_checkpoint(stem10, tensors={**tensors, "rng.data": tensors["rng.data"][:100]})
    rc, _, err = cli(["train", "--resume", run, "--steps", "30", "--no-progress"], capsys)
    line = last_line_error(rc, err, "has no usable checkpoint to resume from")
    assert "step_00000020.json lacks 'optimizer'" in err
    assert "rng.data has shape (100,)" in err and "(5056,)" in err
    assert line


def test_a_checkpoint_pair_from_another_architecture_is_refused(run, tmp_path, capsys):
    other = train(tmp_path / "wide", capsys, "--hidden", "24")
    for suffix in (".json", ".safetensors"):
        shutil.copy(other / "checkpoints" / f"step_00000020{suffix}", run / "checkpoints" / f"step_00000020{suffix}")
    rc, _, err = cli(["train", "--resume", run, "--steps", "30", "--no-progress"], capsys)
    assert rc == 0 and "step_00000020.safetensors: " in err and "(24" in err and "(16" in err
    assert "it is from another run or model; trying the previous checkpoint" in err


@pytest.mark.parametrize("line", ["garbage,line\r\n", "\x00\x01binary\r\n"])
def test_a_damaged_loss_csv_is_a_one_line_error_for_plot_and_is_repaired_on_resume(line, run, capsys):
    with (run / "loss.csv").open("a", newline="") as f:
        f.write(line)
    rc, _, err = cli(["plot", run, "--n", "20", "--out", run / "p"], capsys)
    last_line_error(rc, err, "loss.csv")
    rc, _, err = cli(["train", "--resume", run, "--steps", "30", "--no-progress"], capsys)
    assert rc == 0 and "dropped 1 malformed or unterminated line(s)" in err
    steps = [int(r.split(",")[0]) for r in (run / "loss.csv").read_text().splitlines()[1:]]
    assert steps == list(range(10, 31, 10))


def test_a_partial_last_line_of_loss_csv_is_repaired_on_resume(tmp_path, capsys):
    run = train(tmp_path / "run", capsys, "--log-every", "1")
    with (run / "loss.csv").open("a", newline="") as f:
        f.write("21,0.53")  # a kill in the middle of writing row 21
    rc, _, err = cli(["train", "--resume", run, "--steps", "25", "--no-progress"], capsys)
    assert rc == 0, err
    rows = (run / "loss.csv").read_text().splitlines()[1:]
    assert [int(r.split(",")[0]) for r in rows] == list(range(1, 26))
    assert all(len(r.split(",")) == 4 for r in rows)


def test_output_problems_are_one_line_errors_before_the_work(run, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc, _, err = cli(["sample", run, *SAMPLE, "--out", blocker / "s.npz"], capsys)
    last_line_error(rc, err, "is not a folder")
    (tmp_path / "adir").mkdir()
    rc, _, err = cli(["sample", run, *SAMPLE, "--out", tmp_path / "adir"], capsys)
    last_line_error(rc, err, "is a folder; give a file name")
    rc, _, err = cli(["plot", run, "--out", blocker / "plots"], capsys)
    last_line_error(rc, err, "is not a folder")
    rc, _, err = cli(["report", run, "--out", tmp_path / "adir"], capsys)
    last_line_error(rc, err, "is a folder; give a file name")


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` read-only: by permissions for a normal user, by a read-only bind mount for root
    (skipped where neither works)."""
    if os.geteuid() != 0:
        paths = [folder, *folder.rglob("*")]
        for p in paths:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield
        finally:
            for p in paths:
                p.chmod(0o755 if p.is_dir() else 0o644)
        return
    if not shutil.which("mount") or subprocess.run(["mount", "--bind", folder, folder], capture_output=True).returncode:
        pytest.skip("root, and no bind mount here to make a folder read-only")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", folder, folder], capture_output=True).returncode:
            pytest.skip("root, and no read-only remount here")
        yield
    finally:
        subprocess.run(["umount", folder], capture_output=True)


def test_read_only_run_folder(run, tmp_path, capsys):
    with read_only(run):
        rc, _, err = cli(["sample", run, *SAMPLE], capsys)
        last_line_error(rc, err, "is not writable")
        rc, _, err = cli(["eval", run, "--n", "50"], capsys)
        last_line_error(rc, err, "is not writable")
        rc, _, err = cli(["plot", run, "--n", "50"], capsys)
        last_line_error(rc, err, "is not writable")
        rc, _, err = cli(["report", run, "--n", "50", "--out", tmp_path / "r.html"], capsys)
        assert rc == 0, err  # a report elsewhere works: eval.json is simply not saved
        assert "Not saved to eval.json" in (tmp_path / "r.html").read_text()


@pytest.mark.parametrize("args, needles", [
    (["sample", "{run}", "--seed", "99999999999999999999999"], ["seed must be an integer between 0 and 2**62"]),
    (["eval", "{run}", "--seed", "99999999999999999999999"], ["seed must be an integer between 0 and 2**62"]),
    (["sample", "{run}", "--n", "1e12"], ["--n 1000000000000 samples", "TiB of memory", "GiB of this machine"]),
    (["train", *TINY, "--batch-size", "1e12", "--out", "{tmp}/b"], ["--batch-size 1000000000000", "TiB of memory"]),
    (["train", *TINY, "--n-data", "1e12", "--out", "{tmp}/b"], ["--n-data 1000000000000", "TiB of memory"]),
    (["train", *TINY, "--seed", "99999999999999999999999", "--out", "{tmp}/b"], ["seed must be an integer"]),
    (["train", *TINY, "--nproc", "0", "--out", "{tmp}/b"], ["--nproc must be an integer from 1"]),
    (["train", *TINY, "--nproc", "-1", "--out", "{tmp}/b"], ["--nproc must be an integer from 1"]),
])
def test_absurd_values_are_refused_before_allocating(args, needles, base_run, tmp_path, capsys):
    rc, _, err = cli([a.format(run=base_run, tmp=tmp_path) for a in args], capsys)
    last_line_error(rc, err, *needles)
    assert not (tmp_path / "b").exists()


# --------------------------------------------------------------------------------------------
# 7. temporary files of killed writes are removed at the next start


def test_stale_temporaries_and_orphan_checkpoints_are_removed_at_the_next_start(run, capsys):
    stale = [run / "checkpoints" / ".step_00000030.safetensors.0123456789abcdef.tmp",
             run / ".weights.safetensors.fedcba9876543210.tmp", run / ".config.json.00112233445566ff.tmp"]
    for p in stale:
        p.write_bytes(b"\0" * 4096)
    orphan = run / "checkpoints" / "step_00000030.safetensors"
    orphan.write_bytes(b"half a checkpoint")
    live = run / ".loss.csv.aaaaaaaaaaaaaaaa.tmp"  # held by a live writer: kept
    live.write_bytes(b"x")
    with live.open("rb") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        rc, _, err = cli(["train", "--resume", run, "--steps", "25", "--no-progress"], capsys)
    assert rc == 0 and f"removed 4 file(s) left by an interrupted write in {run}" in err
    assert not any(p.exists() for p in stale) and live.exists()
    assert [ckpt.step_of(s) for s in ckpt.list_checkpoints(run / "checkpoints")] == [20, 25]


# --------------------------------------------------------------------------------------------
# 8. nothing silently accepted


@pytest.mark.parametrize("extra, needles", [
    (["--out", "{tmp}/other"], ["--out cannot be used with --resume"]),
    (["--config", "{run}/config.json"], ["--config cannot be used with --resume"]),
    (["--steps", "10"], ["has trained 20 steps", "--steps 10 would go back", "--steps 20 or more"]),
    (["--sigma-max", "3"], ["--sigma-max cannot change when resuming"]),
])
def test_resume_refuses_what_it_cannot_honour(extra, needles, run, tmp_path, capsys):
    before = (run / "config.json").read_bytes()
    rc, _, err = cli(["train", "--resume", run, *[a.format(tmp=tmp_path, run=run) for a in extra]], capsys)
    last_line_error(rc, err, *needles)
    assert (run / "config.json").read_bytes() == before and not (tmp_path / "other").exists()


@pytest.mark.parametrize("objective, extra, needles", [
    ("dsm", ["--sigma-max", "3", "--n-levels", "5", "--sde", "vp"],
     ["--n-levels, --sde, --sigma-max would be ignored by objective 'dsm'"]),
    ("ncsn", ["--sigma", "0.3"], ["--sigma would be ignored by objective 'ncsn'", "used: --sigma by dsm"]),
    ("sde", ["--sde", "vp", "--sigma-max", "5"], ["--sigma-max would be ignored by objective 'sde' with --sde vp"]),
    ("ism", ["--n-projections", "4"], ["--n-projections would be ignored"]),
    ("dsm", ["--base-channels", "8"], ["--base-channels would be ignored by model 'mlp'"]),
    ("dsm", ["--dequantize"], ["--dequantize only apply to image data"]),
])
def test_settings_the_objective_ignores_are_refused(objective, extra, needles, tmp_path, capsys):
    rc, _, err = cli(["train", *TINY, "--objective", objective, "--steps", "5", "--out", tmp_path / "o", *extra],
                     capsys)
    last_line_error(rc, err, *needles)
    assert not (tmp_path / "o").exists()


def test_all_nan_samples_exit_non_zero_and_write_nothing(run, capsys):
    rc, _, err = cli(["sample", run, "--n", "10", "--n-steps", "5", "--step-size", "1e30", "--out", run / "nan.npz"],
                     capsys)
    line = last_line_error(rc, err, "NaN", "nothing was written")
    assert sum(ln.startswith("scorematch: error:") for ln in err.splitlines()) == 1, err
    assert "--step-size" in line
    assert not (run / "nan.npz").exists()


def test_skip_nonfinite_past_max_skipped_exits_non_zero(tmp_path, capsys):
    out = tmp_path / "sk"
    rc, _, err = cli(["train", *TINY, "--objective", "ncsn", "--lr", "1e12", "--grad-clip", "1e30",
                      "--skip-nonfinite", "--max-skipped", "3", "--steps", "290", "--out", out], capsys)
    last_line_error(rc, err, "4 batches had a non-finite loss", "more than --max-skipped 3",
                   "The last good checkpoint is step 0")
    assert err.count("skipping step") == 3


def test_checkpoints_fit_checks_the_model(run):
    """check_fits itself: a tensor of another shape and a missing tensor, named."""
    tensors = load_file(run / "checkpoints" / "step_00000020.safetensors")
    model = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.items()}
    ckpt.check_fits(model, expected, "x")
    k0 = next(iter(model))
    with pytest.raises(CheckpointError, match=rf"{k0} has shape \(1,\)"):
        ckpt.check_fits({**model, k0: torch.zeros(1)}, expected, "x")
    with pytest.raises(CheckpointError, match=rf"missing {k0}"):
        ckpt.check_fits({k: v for k, v in model.items() if k != k0}, expected, "x")
    with pytest.raises(CheckpointError, match="NaN or inf"):
        ckpt.check_fits({**model, k0: torch.full_like(model[k0], float("nan"))}, expected, "x")
