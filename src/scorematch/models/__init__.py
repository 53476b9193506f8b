"""Score and energy models. Every model has ``score(x)``, ``score(x, sigma)`` or ``score(x, t)``;
class-conditional ones (``n_classes > 0``) take the labels as a third argument."""

from scorematch.models.base import MODEL_REGISTRY, build_model, model_spec, register_model
from scorematch.models.edm import EDMPrecond, edm_coefficients, estimate_sigma_data
from scorematch.models.images import NCSNUNet
from scorematch.models.masked import MaskedDenoiser
from scorematch.models.mlp import (
    EnergyMLP,
    NoiseConditionalMLP,
    ScoreMLP,
    energy_to_score,
    is_piecewise_linear,
)
from scorematch.models.standardized import Standardized
from scorematch.models.time import TimeMLP, TimeUNet
from scorematch.models.unet import UNET_SIZES, UNet, unet_config

__all__ = [
    "EDMPrecond", "MODEL_REGISTRY", "EnergyMLP", "MaskedDenoiser", "NCSNUNet", "NoiseConditionalMLP", "ScoreMLP",
    "Standardized",
    "TimeMLP", "TimeUNet", "UNET_SIZES", "UNet", "build_model", "edm_coefficients", "energy_to_score",
    "estimate_sigma_data",
    "is_piecewise_linear", "model_spec", "register_model", "unet_config",
]
