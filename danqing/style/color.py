"""Colour helpers shared by both style-transfer methods: pure functions on (B, 3, H, W) tensors in [-1, 1].

Gatys, Bethge, Hertzmann & Shechtman, "Preserving Color in Neural Artistic
Style Transfer" (arXiv:1606.05897, 2016) give two ways to keep the content's
colours:

* **luminance-only transfer**: transfer style between the luminance channels
  only (the style's luminance first matched to the content's mean and spread,
  their eq. 1), then put the content's chroma back.  YIQ is the colour space
  they use: Y is luminance, I and Q carry the colour.
* **colour histogram matching**: recolour the style image so that its colour
  mean and covariance equal the content's (a linear map x' = A x + b), then
  transfer as usual.  A is the "image analogies" choice
  ``A = Sigma_c^(1/2) Sigma_s^(-1/2)`` with symmetric matrix square roots.

Nothing here clamps unless it says so: callers decide when to clip to [-1, 1].
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["PRESERVE_COLOR", "luminance", "match_colors", "match_luminance", "rgb_to_yiq", "with_chroma",
           "yiq_to_rgb"]

PRESERVE_COLOR = ("luminance", "histogram")

# NTSC YIQ from linear-ish RGB in [0, 1] (FCC coefficients); rows are Y, I, Q.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114],
                            [0.595716, -0.274453, -0.321263],
                            [0.211456, -0.522591, 0.311135]], dtype=torch.float64)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)   # exact inverse, so a round trip returns the input


def _apply(matrix: Tensor, x: Tensor) -> Tensor:
    """(3, 3) colour matrix applied to (B, 3, H, W) -> (B, 3, H, W)."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(x.dtype).to(x.device), x)


def rgb_to_yiq(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [-1, 1] -> (B, 3, H, W) YIQ of the [0, 1] image: Y in [0, 1], I and Q about ±0.6."""
    return _apply(_RGB_TO_YIQ, (x + 1) / 2)


def yiq_to_rgb(yiq: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_yiq`: (B, 3, H, W) YIQ -> RGB in [-1, 1] (not clamped)."""
    return _apply(_YIQ_TO_RGB, yiq) * 2 - 1


def luminance(x: Tensor) -> Tensor:
    """(B, 3, H, W) RGB in [-1, 1] -> its luminance as a grey RGB image (B, 3, H, W) in [-1, 1]."""
    y = rgb_to_yiq(x)[:, :1]                                         # (B, 1, H, W) in [0, 1]
    return (y * 2 - 1).expand(-1, 3, -1, -1).contiguous()


def match_luminance(style_grey: Tensor, content_grey: Tensor) -> Tensor:
    """The style's luminance moved to the content's mean and standard deviation (Gatys et al. 2016b, eq. 1).

    L_s' = sigma_c / sigma_s * (L_s - mu_s) + mu_c, one mean and std per image over all pixels.
    style_grey (B, C, H, W), content_grey (B or 1, C, H', W') -> (B, C, H, W).
    """
    mu_s, sd_s = style_grey.mean((1, 2, 3), keepdim=True), style_grey.std((1, 2, 3), keepdim=True)
    mu_c, sd_c = content_grey.mean((1, 2, 3), keepdim=True), content_grey.std((1, 2, 3), keepdim=True)
    return (style_grey - mu_s) * (sd_c / (sd_s + 1e-8)) + mu_c


def with_chroma(result: Tensor, content: Tensor) -> Tensor:
    """The luminance (Y) of ``result`` with the chroma (I, Q) of ``content``: (B, 3, H, W) each -> RGB in [-1, 1].

    Not clamped: clipping afterwards changes I and Q only where the combination falls outside the RGB cube.
    """
    if result.shape[-2:] != content.shape[-2:]:
        raise ValueError(f"with_chroma needs equal sizes, got {tuple(result.shape)} and {tuple(content.shape)}")
    y = rgb_to_yiq(result)[:, :1]
    iq = rgb_to_yiq(content)[:, 1:]
    return yiq_to_rgb(torch.cat([y, iq.expand(y.shape[0], -1, -1, -1)], 1))


def _sqrtm(cov: Tensor, power: float) -> Tensor:
    """Symmetric (3, 3) positive semi-definite matrix to ``power`` (±1/2) via its eigen-decomposition."""
    vals, vecs = torch.linalg.eigh(cov)
    vals = vals.clamp_min(1e-5) ** power
    return vecs @ torch.diag(vals) @ vecs.T


def match_colors(style: Tensor, content: Tensor) -> Tensor:
    """Recolour ``style`` (1, 3, H, W) so its RGB mean and covariance equal ``content``'s (1, 3, H', W').

    x' = A (x - mu_s) + mu_c with A = Sigma_c^(1/2) Sigma_s^(-1/2) (Gatys et al. 2016b, sec. 2.2);
    the result is clamped to [-1, 1] so it is a valid image.
    """
    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        p = x.double().flatten(2)[0]                                 # (3, N)
        mu = p.mean(1, keepdim=True)
        d = p - mu
        return mu, d @ d.T / max(1, d.shape[1] - 1)

    mu_s, cov_s = stats(style)
    mu_c, cov_c = stats(content)
    a = _sqrtm(cov_c, 0.5) @ _sqrtm(cov_s, -0.5)
    p = style.double().flatten(2)[0]
    out = a @ (p - mu_s) + mu_c
    return out.view_as(style).to(style.dtype).clamp(-1, 1)
