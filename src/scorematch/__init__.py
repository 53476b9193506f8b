"""scorematch: learn the score grad_x log p(x) by score matching, and sample with it.

Modules, one concept each: ``distributions`` (closed-form toys), ``models`` (score, energy,
noise- and time-conditional nets), ``objectives`` (ESM, ESM-KDE, ISM, SSM, SSM-VR, DSM, NCSN,
continuous-time DSM), ``noise`` (sigma schedules), ``sde`` (VE/VP/sub-VP), ``samplers``,
``likelihood`` and ``density``, ``metrics``, ``data``, ``train``, ``viz``, ``cli``.
The mathematical contract is conventions.md: every public function quotes its equation.
"""

from scorematch.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    DataNotFoundError,
    ModelError,
    ScoreMatchError,
    ScoreMatchWarning,
    TrainingError,
)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError", "ConfigError", "DataError", "DataNotFoundError", "ModelError",
    "ScoreMatchError", "ScoreMatchWarning", "TrainingError", "__version__", "load", "train",
]


def __getattr__(name: str):
    """``scorematch.train`` and ``scorematch.load`` import the training stack on first use."""
    if name in ("train", "load"):
        from scorematch import training

        return getattr(training, name)
    raise AttributeError(f"module 'scorematch' has no attribute {name!r}")
