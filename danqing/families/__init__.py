"""The only registry of families: name -> module with Config, Model, PRESETS, TRAIN_DEFAULTS.

Generators have ``Model.sample``; the prompt-consistency scorer is trained the same way but scores instead.
"""
from ..metrics import scorer
from . import autoencoder, dcgan, diffusion, t2i

FAMILIES = {
    "diffusion": diffusion,
    "dcgan": dcgan,
    "autoencoder": autoencoder,
    "t2i": t2i,
    "scorer": scorer,
}


def paints(name: str) -> bool:
    """Whether the family generates images (has ``sample``)."""
    return hasattr(FAMILIES[name].Model, "sample")
