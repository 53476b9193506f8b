"""DDP training under torchrun on 2 CPU processes (gloo): equal to one process, resumable."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import scorematch
from scorematch.errors import ConfigError
from scorematch.run.system.distributed import DistContext, shard

# the DDP runs share one xdist worker (make test uses --dist loadgroup), so two gloo process
# groups never start at the same moment on the 2 CI cores
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ddp")]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    return subprocess.run([sys.executable, "-m", "scorematch", *args], capture_output=True, text=True,
                          env=env, timeout=600)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "weights.safetensors")


@pytest.mark.parametrize("model", ["mlp", "energy"])
def test_ddp_equals_single_process_on_the_same_global_batches(tmp_path: Path, model: str) -> None:
    """Exact ISM under DDP, for a score network and an energy network (whose last bias gets no
    gradient: DDP must expect an unused parameter), equals one process on the same batches."""
    common = ["--data", "gmm2d", "--objective", "ism", "--steps", "12", "--batch-size", "64",
              "--n-data", "500", "--no-progress", "--seed", "3", "--model", model]
    ddp = cli("train", *common, "--out", str(tmp_path / "ddp"), "--nproc", "2")
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    assert "DDP on 2 processes (gloo): global batch 64 = 2 x 32 per process" in ddp.stderr
    single = scorematch.train(data="gmm2d", objective="ism", steps=12, batch_size=64, n_data=500,
                              progress=False, seed=3, model=model, out=tmp_path / "single")
    a, b = weights(tmp_path / "ddp"), weights(single.run_dir)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-5, rtol=1e-4)
    # the training moved the weights: equality is not the trivial one of two untrained nets
    init = scorematch.train(data="gmm2d", objective="ism", steps=0, batch_size=64, n_data=500,
                            progress=False, seed=3, model=model, out=tmp_path / "init")
    moved = max(float((weights(init.run_dir)[k] - b[k]).abs().max()) for k in b if k.startswith("model."))
    assert moved > 1e-3


def test_ddp_resume_reproduces_an_uninterrupted_ddp_run(tmp_path: Path) -> None:
    common = ["--data", "gmm2d", "--objective", "dsm", "--batch-size", "32", "--n-data", "400",
              "--checkpoint-every", "5", "--no-progress", "--nproc", "2"]
    full = cli("train", *common, "--steps", "10", "--out", str(tmp_path / "full"))
    assert full.returncode == 0, full.stderr[-2000:]
    part = cli("train", *common, "--steps", "5", "--out", str(tmp_path / "part"))
    assert part.returncode == 0, part.stderr[-2000:]
    resumed = cli("train", "--resume", str(tmp_path / "part"), "--steps", "10", "--no-progress", "--nproc", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a, b = weights(tmp_path / "full"), weights(tmp_path / "part")
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=1e-5)
    # both ranks' noise generators are in the checkpoint
    from scorematch.run.folder.checkpoint import latest_checkpoint

    tensors, meta = latest_checkpoint(tmp_path / "part" / "checkpoints")
    assert meta["world_size"] == 2 and {"rng.noise.0", "rng.noise.1"} <= set(tensors)
    assert not torch.equal(tensors["rng.noise.0"], tensors["rng.noise.1"])


@pytest.mark.parametrize("objective,flags", [("dsm", []), ("sde", ["--sampler", "euler_ancestral", "--brownian"])])
def test_sampling_split_over_ranks_and_gathered(tmp_path: Path, objective: str, flags: list[str]) -> None:
    run = scorematch.train(data="gmm2d", objective=objective, steps=5, n_data=300, progress=False,
                           out=tmp_path / "run").run_dir
    res = cli("sample", str(run), "--n", "11", "--seed", "4", "--n-steps", "5", "--nproc", "2",
              "--out", str(tmp_path / "s.npz"), *flags)
    assert res.returncode == 0, res.stderr[-2000:]
    x = np.load(tmp_path / "s.npz")["samples"]
    assert x.shape == (11, 2) and np.isfinite(x).all()
    # per-sample seeds: rank 0 draws samples 0..5 of seed 4, rank 1 samples 6..11, the rows one process
    # draws (to float rounding of the network's batched arithmetic)
    single = cli("sample", str(run), "--n", "11", "--seed", "4", "--n-steps", "5", "--out", str(tmp_path / "one.npz"),
                 *flags)
    assert single.returncode == 0
    with np.load(tmp_path / "one.npz") as one, np.load(tmp_path / "s.npz") as two:
        np.testing.assert_allclose(one["samples"], x, rtol=1e-5, atol=1e-5)
        assert list(two["row_index"]) == list(range(11)) and int(two["score_evaluations"]) == 5


def test_global_batch_must_split_evenly() -> None:
    assert shard(64, DistContext(1, 2, 1)) == slice(32, 64)
    with pytest.raises(ConfigError, match="multiple of 3"):
        shard(64, DistContext(0, 3, 0))


def test_ssm_inside_ddp_takes_the_autograd_path_and_its_gradient(tmp_path: Path) -> None:
    """SSM-VR of DDP(model) on a one-process gloo group: the same loss and parameter gradient
    as of the bare model (the "auto" Jacobian-vector product falls back to plain autograd there)."""
    import gc

    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        _compare_bare_and_ddp()
    finally:
        # the DDP wrapper (its reducer holds the group) must be gone before the group: freeing it
        # after destroy_process_group can hang in the gloo group's destructor
        gc.collect()
        dist.destroy_process_group()


def _compare_bare_and_ddp() -> None:
    from torch.nn.parallel import DistributedDataParallel as DDP

    from scorematch.autodiff import _inside_ddp, _score_network
    from scorematch.models import ScoreMLP
    from scorematch.objectives import ssm
    from scorematch.run.system.distributed import ScoreModule

    torch.manual_seed(0)
    model = ScoreMLP(3, hidden=16)
    wrapped = DDP(ScoreModule(model))
    assert _inside_ddp(wrapped) and not _inside_ddp(model)
    assert _score_network(model) and not _score_network(wrapped)
    x = torch.randn(32, 3)
    grads = []
    for fn in (model, wrapped):
        model.zero_grad()
        loss = ssm(fn, x, variance_reduced=True, generator=torch.Generator().manual_seed(1))
        loss.backward()
        grads.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    for a, b in zip(grads[0][1], grads[1][1], strict=True):
        torch.testing.assert_close(a, b)
