"""Samples and inpainting from a trained run, with the defaults of its kind of model."""
