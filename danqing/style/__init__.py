"""Pretrained-feature tools for perceptual and style losses (VGG19 features, Gram matrices)."""
from .vgg import (
    CONVENTIONS,
    LAYER_NAMES,
    PERCEPTUAL_LAYERS,
    STYLE_LAYERS,
    VGG19,
    Convention,
    StyleError,
    gram,
    load_vgg19,
    perceptual_distance,
)

__all__ = [
    "CONVENTIONS", "LAYER_NAMES", "PERCEPTUAL_LAYERS", "STYLE_LAYERS", "VGG19", "Convention",
    "StyleError", "gram", "load_vgg19", "perceptual_distance",
]
