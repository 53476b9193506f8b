"""Score and energy models. Every model has ``score(x)``, ``score(x, sigma)`` or ``score(x, t)``."""

from scorematch.models.base import MODEL_REGISTRY, build_model, model_spec, register_model
from scorematch.models.images import NCSNUNet
from scorematch.models.mlp import (
    EnergyMLP,
    NoiseConditionalMLP,
    ScoreMLP,
    energy_to_score,
    is_piecewise_linear,
)
from scorematch.models.standardized import Standardized
from scorematch.models.time import TimeMLP, TimeUNet

__all__ = [
    "MODEL_REGISTRY", "EnergyMLP", "NCSNUNet", "NoiseConditionalMLP", "ScoreMLP", "Standardized", "TimeMLP", "TimeUNet",
    "build_model", "energy_to_score", "is_piecewise_linear", "model_spec", "register_model",
]
