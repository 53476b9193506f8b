"""Shared fixtures: seeded generators, so every statistical test draws the same numbers each run."""

from __future__ import annotations

import pytest
import torch

# The suite runs as two pytest-xdist workers on 2 cores (make test): one thread each. Small
# tensors run several times slower when two threads per process contend for the cores.
torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    """A CPU generator seeded with 0 (pass it to every random call of the library)."""
    return torch.Generator().manual_seed(0)


@pytest.fixture
def make_gen():
    """Factory for independent seeded CPU generators: ``make_gen(seed)``."""

    def make(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return make


@pytest.fixture(autouse=True)
def _seed_global_rng() -> None:
    """Seed the global RNG too (parameter initialisation of the models a test builds)."""
    torch.manual_seed(1234)


@pytest.fixture(autouse=True, scope="session")
def _feature_cache(tmp_path_factory) -> None:
    """Feature networks of the image metrics are cached in a folder of this session, not the user's."""
    import os

    os.environ["SCOREMATCH_CACHE"] = str(tmp_path_factory.mktemp("scorematch-cache"))
