"""The only registry of families: name -> module with Config, Model, PRESETS, TRAIN_DEFAULTS.

Generators have ``Model.sample``; the prompt-consistency scorer is trained the same way but scores instead,
and the AdaIN decoder (``danqing.style.adain``) stylises instead.
"""
from ..metrics import scorer
from ..style import adain
from . import autoencoder, dcgan, diffusion, t2i

FAMILIES = {
    "diffusion": diffusion,
    "dcgan": dcgan,
    "autoencoder": autoencoder,
    "t2i": t2i,
    "scorer": scorer,
    "adain": adain,
}


def paints(name: str) -> bool:
    """Whether the family generates images (has ``sample``)."""
    return hasattr(FAMILIES[name].Model, "sample")
