"""scorematch: learn the score grad_x log p(x) by score matching, and sample with it.

Layers, each importing only the ones below it:

1. ``errors``, ``files`` (the one atomic writer), checks and random draws;
2. ``distributions`` (closed-form toys), ``models``, ``noise`` (sigma schedules), ``sde``
   (VE/VP/sub-VP), ``autodiff`` (Jacobian traces);
3. ``objectives``, ``samplers``, ``likelihood``, ``density``, ``metrics``, ``data``, ``plotting``;
4. ``run``: training, checkpoints, generation, evaluation, run figures, the HTML report;
5. ``cli``.

The mathematical contract is conventions.md: every public function quotes its equation.
"""

from scorematch._version import __version__
from scorematch.errors import (
    CheckpointError,
    ConfigError,
    DataChangedError,
    DataError,
    DataNotFoundError,
    ModelError,
    SamplingError,
    ScoreMatchError,
    ScoreMatchWarning,
    TrainingError,
)

__all__ = [
    "CheckpointError", "ConfigError", "DataChangedError", "DataError", "DataNotFoundError", "ModelError",
    "SamplingError", "ScoreMatchError", "ScoreMatchWarning", "TrainingError", "__version__", "load", "save",
    "train",
]


def __getattr__(name: str):
    """``scorematch.train``, ``load`` and ``save`` import the training stack on first use."""
    if name == "train":
        from scorematch.run.training.loop import train

        return train
    if name == "load":
        from scorematch.run.build.loading import load

        return load
    if name == "save":
        from scorematch.run.build.user_model import save

        return save
    raise AttributeError(f"module 'scorematch' has no attribute {name!r}")
