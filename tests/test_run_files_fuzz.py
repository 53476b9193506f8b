"""Fuzzed run files (run.json, config.json, checkpoint JSON, loss.csv) give success or a
ScoreMatchError, never anything else; a full disk gives one line, keeps the last checkpoint,
and the run resumes once there is room again.

Most JSON examples are a valid file with one field replaced, deleted or added, and the
manifest updated to match (as a writer that knows the format would do), so that the
validation of every field is what is exercised, not only the checksums.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file

import scorematch
from scorematch.errors import ScoreMatchError
from scorematch.run.folder import checkpoint as ckpt
from scorematch.run.folder import manifest
from scorematch.run.folder.runfiles import read_loss_csv
from scorematch.run.training.logs import CsvLog

TINY = dict(data="gmm2d", objective="dsm", batch_size=32, hidden=8, depth=1, n_data=300, device="cpu",
            progress=False, log_every=1)
FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                          HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=8,
)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("fuzz") / "run"
    scorematch.train(steps=4, checkpoint_every=2, out=out, **TINY)
    return out


@pytest.fixture
def fresh(base: Path, tmp_path_factory):
    """A factory of private copies of the base run."""
    def copy() -> Path:
        dst = tmp_path_factory.mktemp("copy") / "run"
        shutil.copytree(base, dst)
        return dst

    return copy


def _paths(doc: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc[:4]):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw, doc: Any, under: tuple = ()) -> Any:
    """``doc`` with one value (at or below ``under``) replaced, one key deleted or one key added."""
    doc = json.loads(json.dumps(doc))
    node = doc
    for k in under:
        node = node[k]
    path = draw(st.sampled_from(_paths(node)))
    op = draw(st.sampled_from(["replace", "delete", "add"]))
    value = draw(json_values)
    if not path:
        return value if op == "replace" else doc
    parent = node
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if op == "delete" and isinstance(parent, dict):
        del parent[last]
    elif op == "add" and isinstance(parent, dict):
        parent[draw(st.text(max_size=6))] = value
    else:
        parent[last] = value
    return doc


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def _reseal(run: Path, name: str) -> None:
    m = json.loads((run / manifest.MANIFEST).read_text())
    m["sha256"][name] = [manifest.sha256((run / name).read_bytes())]
    (run / manifest.MANIFEST).write_text(json.dumps(m))


def _only_scorematch_errors(fn) -> None:
    try:
        fn()
    except ScoreMatchError as err:
        assert str(err) and "\n" not in str(err).strip()


@FUZZ
@pytest.mark.parametrize("name", ["run.json", "config.json"])
@given(data=st.data(), reseal=st.booleans())
def test_fuzzed_run_files(fresh, base, name, data, reseal):
    run = fresh()
    doc = json.loads((base / name).read_text())
    blob = data.draw(st.one_of(mutated(doc).map(_dump), st.binary(max_size=64)), label=name)
    (run / name).write_bytes(blob)
    if reseal:
        _reseal(run, name)
    _only_scorematch_errors(lambda: scorematch.load(run).score(torch.zeros(2, 2)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                 HealthCheck.function_scoped_fixture])
@given(data=st.data(), reseal=st.booleans(), newest=st.booleans())
def test_fuzzed_checkpoint_json(fresh, base, data, reseal, newest):
    run = fresh()
    stem = ckpt.list_checkpoints(run / "checkpoints")[-1 if newest else 0]
    doc = json.loads(stem.with_suffix(".json").read_text())
    new = data.draw(mutated(doc, ("state",)) if reseal else mutated(doc), label="checkpoint json")
    if reseal and isinstance(new, dict) and isinstance(new.get("sha256"), dict) and isinstance(new.get("state"), dict):
        new["sha256"]["state"] = ckpt._state_hash(new["state"])
    stem.with_suffix(".json").write_bytes(_dump(new))

    def resume() -> None:
        res = scorematch.train(resume=run, steps=6)
        assert res.steps == 6

    _only_scorematch_errors(resume)


loss_lines = st.one_of(
    st.text(alphabet="0123456789.,-einaf\r", max_size=30),
    st.binary(max_size=20).map(lambda b: b.decode("latin-1")),
    st.builds(lambda s, v: f"{s},{v},1.0,2.0", st.integers(-5, 10**20), st.floats().map(str)),
)


@FUZZ
@given(lines=st.lists(loss_lines, max_size=5), where=st.integers(0, 6), end=st.sampled_from(["", "\r\n", "\n"]))
def test_fuzzed_loss_csv(fresh, lines, where, end):
    run = fresh()
    rows = (run / "loss.csv").read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    text = "".join(rows[:where] + [ln + "\r\n" for ln in lines] + rows[where:]).rstrip("\r\n") + end
    (run / "loss.csv").write_bytes(text.encode("utf-8", errors="surrogateescape"))
    _only_scorematch_errors(lambda: read_loss_csv(run / "loss.csv"))

    def repair() -> None:
        CsvLog(run / "loss.csv", 0, append=True, start=4).close()
        steps, _ = read_loss_csv(run / "loss.csv")  # what the repair leaves is a well-formed log
        assert steps == sorted(steps) and all(1 <= s <= 4 for s in steps)

    _only_scorematch_errors(repair)


# --------------------------------------------------------------------------------------------
# a full disk: the file-size limit of the process


def _env() -> dict[str, str]:
    drop = ("WORLD_SIZE", "RANK", "LOCAL_RANK")
    return {**{k: v for k, v in os.environ.items() if k not in drop}, "OMP_NUM_THREADS": "1"}


def _limit(nbytes: int):
    def apply() -> None:  # in the child, before exec: ignored SIGXFSZ makes write() fail with EFBIG
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return apply


@pytest.mark.slow
def test_full_disk_one_line_last_checkpoint_kept_and_resume_after_space_is_freed(tmp_path):
    run = tmp_path / "full"
    args = ["--data", "gmm2d", "--hidden", "8", "--depth", "1", "--batch-size", "32", "--n-data", "300",
            "--log-every", "1", "--checkpoint-every", "25", "--device", "cpu", "--no-progress"]
    res = subprocess.run([sys.executable, "-m", "scorematch", "train", *args, "--steps", "2000", "--out", str(run)],
                         capture_output=True, text=True, preexec_fn=_limit(16384), timeout=600, env=_env())
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.strip().splitlines() if not ln.startswith("scorematch train: device")]
    assert lines == [f"scorematch: error: {run}/loss.csv would exceed the file-size limit of this process; "
                     "raise it (ulimit -f) or write less"]
    stems = ckpt.list_checkpoints(run / "checkpoints")
    last = ckpt.step_of(stems[-1])
    tensors, state = ckpt.load_checkpoint(stems[-1])  # verifies: the last checkpoint is whole
    assert state["step"] == last >= 100 and not list(run.rglob("*.tmp"))
    # space freed: the run resumes from its last checkpoint and equals an uninterrupted run
    target = last + 30
    resumed = subprocess.run([sys.executable, "-m", "scorematch", "train", "--resume", str(run), "--steps",
                              str(target), "--no-progress"], capture_output=True, text=True, timeout=600, env=_env())
    assert resumed.returncode == 0, resumed.stderr
    ref = scorematch.train(steps=target, checkpoint_every=25, out=tmp_path / "ref", **TINY)
    a, b = load_file(run / "weights.safetensors"), load_file(ref.run_dir / "weights.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    steps, _ = read_loss_csv(run / "loss.csv")
    assert steps == list(range(1, target + 1))
