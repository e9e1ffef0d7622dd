"""The only registry of families: name -> module with Config, Model, PRESETS, TRAIN_DEFAULTS."""
from . import dcgan, diffusion

FAMILIES = {
    "diffusion": diffusion,
    "dcgan": dcgan,
}
