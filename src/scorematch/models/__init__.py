"""Score and energy models. Every model has ``score(x)``, ``score(x, sigma)`` or ``score(x, t)``;
class-conditional ones (``n_classes > 0``) take the labels as a third argument."""

from scorematch.models.base import MODEL_REGISTRY, build_model, model_spec, register_model
from scorematch.models.mlp import (
    EnergyMLP,
    NoiseConditionalMLP,
    ScoreMLP,
    energy_to_score,
    is_piecewise_linear,
)

__all__ = [
    "MODEL_REGISTRY", "EnergyMLP", "NoiseConditionalMLP", "ScoreMLP", "build_model",
    "energy_to_score", "is_piecewise_linear", "model_spec", "register_model",
]


def _register_optional() -> None:
    """Import the image, time-conditioned and preconditioned models so they register themselves."""
    import importlib

    for name in ("scorematch.models.images", "scorematch.models.time", "scorematch.models.edm"):
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name != name:
                raise


_register_optional()
