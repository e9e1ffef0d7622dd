"""Text-to-image: the diffusion family in an autoencoder's latent space, conditioned on
MiniLM text states through cross-attention (a small Stable-Diffusion-shaped model,
Rombach et al. 2022).  Same Config and Model as ``diffusion``; its own presets.

Train the autoencoder first, then the painter with it frozen inside:

    danqing train autoencoder --preset emoji --data emoji --out runs/ae-emoji
    danqing train t2i --preset emoji --data emoji --autoencoder runs/ae-emoji --out runs/t2i-emoji
"""
from __future__ import annotations

import dataclasses

from . import autoencoder
from .diffusion import SPEC as DIFFUSION
from .diffusion import TRAIN_DEFAULTS, Config, Diffusion

Model = Diffusion

# EDM's preconditioning assumes data of std sigma_data (EDM sec. 5: unit-variance network input and
# target at every sigma).  The autoencoder's latent_scale makes the latents unit-variance, so sigma_data
# is 1, not the 0.5 of pixels in [-1, 1].  Training noise: EDM2's latent-space distribution (Karras et al.
# 2024: P_mean -0.4, P_std 1.0 for latents of std 0.5) moved to std 1: P_mean -0.4 + ln 2.
LATENT_EDM = {"sigma_data": 1.0, "p_mean": 0.29, "p_std": 1.0}      # -0.4 + ln 2 = 0.293

PRESETS: dict[str, Config] = {
    # conformance tests: a 16x16 image, f=2 autoencoder -> 8x8x4 latents, a 32-d text encoder
    "tiny": Config(image_size=16, channels=16, mult=(1, 2), num_res=1, attn=(4,), text_dim=32, text_tokens=24,
                   ae=autoencoder.PRESETS["tiny"], sampler="dpmpp2m", steps=8, **LATENT_EDM),
    # the painter: 64x64 RGB via 16x16x4 latents, MiniLM (384-d, 32 tokens).  Widths 64/128/192 with
    # attention at 8x8 and 4x4 put the parameters where they are cheap: 13.4M parameters, 1.05 GFLOP/image
    # forward (a 12.5M UNet at widths 80/160/160 with attention at 16x16 costs 1.5 GFLOP)
    "emoji": Config(image_size=64, channels=64, mult=(1, 2, 3), num_res=2, attn=(8, 4), text_dim=384,
                    text_tokens=32, text_encoder="minilm", ae=autoencoder.PRESETS["emoji"],
                    sampler="dpmpp2m", steps=20, guidance=4.0, cond_drop=0.1, **LATENT_EDM),
}

SPEC = dataclasses.replace(DIFFUSION, name="t2i", presets=PRESETS,
                           summary="text to image: latent diffusion with MiniLM prompts (the bundled painter)")

__all__ = ["Config", "Model", "PRESETS", "SPEC", "TRAIN_DEFAULTS"]
