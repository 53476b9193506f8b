"""The exception types scorematch raises at its boundaries.

Every error a user can cause (bad data, a bad configuration, a broken
checkpoint, an input that breaks the mathematical contract) is one of these,
with a message that names the problem and the fix.  Each also derives from
the built-in type a caller would expect (ValueError, FileNotFoundError, ...).
"""

from __future__ import annotations


class ScoreMatchError(Exception):
    """Base class of every error scorematch raises on purpose."""


class DataError(ScoreMatchError, ValueError):
    """A data set or data file cannot be used: wrong shape, NaN/inf, empty, unknown name."""


class DataNotFoundError(DataError, FileNotFoundError):
    """A data file or folder does not exist where it was looked for."""


class DataChangedError(DataError):
    """The data a run was trained on changed since (a different file at the recorded path)."""


class ConfigError(ScoreMatchError, ValueError):
    """An argument or configuration value is invalid (unknown name, non-positive step size, ...)."""


class ModelError(ScoreMatchError, ValueError):
    """A model does not fit the data or the call (shape mismatch, missing conditioning)."""


class CheckpointError(ScoreMatchError, OSError):
    """A run folder or checkpoint is missing, truncated, corrupted or from an incompatible version."""


class TrainingError(ScoreMatchError, RuntimeError):
    """Training cannot go on (a NaN or inf loss, an unwritable output folder)."""


class SamplingError(ScoreMatchError, RuntimeError):
    """A sampler produced samples that cannot be used (NaN or inf)."""


class ScoreMatchWarning(UserWarning):
    """Warnings about a setup that runs but is mathematically degenerate."""
