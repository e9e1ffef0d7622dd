"""Style transfer and pretrained-feature tools: VGG19 features and Gram matrices (vgg.py), Gatys et al.'s
optimisation (gatys.py), AdaIN (adain.py, also the trainable ``adain`` family), colour preservation (color.py)
and the picture pipeline (transfer.py: ``transfer`` and ``save``)."""
from .transfer import METHODS, StyleParams, load_decoder, save, transfer
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
    "CONVENTIONS", "LAYER_NAMES", "METHODS", "PERCEPTUAL_LAYERS", "STYLE_LAYERS", "VGG19", "Convention",
    "StyleError", "StyleParams", "gram", "load_decoder", "load_vgg19", "perceptual_distance", "save", "transfer",
]
