"""The only registry of families: name -> module with Config, Model, PRESETS, TRAIN_DEFAULTS."""
from . import autoencoder, dcgan, diffusion, t2i

FAMILIES = {
    "diffusion": diffusion,
    "dcgan": dcgan,
    "autoencoder": autoencoder,
    "t2i": t2i,
}
