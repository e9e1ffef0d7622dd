"""StyleGAN on the emoji faces: the truncation trade-off and the projection of held-out pictures.

    python bench/stylegan.py truncation --model stylegan-emoji-faces
    python bench/stylegan.py projection --model stylegan-emoji-faces [--diffusion emoji] [--autoencoder emoji-autoencoder]

truncation  For psi in --psi, paints -n pictures (the five styles in turn, seeds 0..n-1) and scores them against
            the 560 training faces (--data.select of the model card): FID and KID on the TF-FID Inception,
            precision and recall (k = 3) on the same features.  Low psi trades variety (recall) for typical
            pictures (precision); FID against the training set is the figure StyleGAN's papers report.
projection  Projects the held-out emoji faces (subjects never trained on, and faces whose style was held out)
            into W and into W+ with the VGG19 + pixel distance and reports the VGG distance and PSNR of the
            reconstructions; the baseline is the closest (by the same distance) of 64 samples of the picture's
            style, i.e. what the model paints without projection.  With --diffusion NAME, the same pictures at
            the painter's 64 px are inverted by DDIM inversion (sampling.invert) with their captions.  With
            --autoencoder NAME, they are encoded (the posterior mean) and then refined by --ae-steps of the
            same distance.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from danqing import pipeline
from danqing.config import DataConfig
from danqing.data import load_dataset
from danqing.evaluate import features
from danqing.generate import Request
from danqing.metrics.features import Inception
from danqing.metrics.scores import fid, kid, precision_recall
from danqing.pixels import from_uint8, to_uint8
from danqing.projection import perceptual, psnr

FACES = r"^[^,]*\bface\b[^,]*,"          # the model card's --data.select


def faces(source: str, size: int):
    return load_dataset(DataConfig(source, size=size, select=FACES), progress=False)


def truncation(a: argparse.Namespace) -> None:
    pipe = pipeline.load(a.model)
    painter = pipe.painter
    side = painter.facts.image_size
    real = faces("emoji", side)
    inception = Inception()
    ref = features(real, inception)
    names = painter.class_names
    print(f"{a.model}: {a.n} pictures a psi against the {len(real)} training faces at {side} px")
    print("| psi | FID | KID (x1000) | precision | recall |\n|---|---|---|---|---|")
    for psi in a.psi:
        t0 = time.perf_counter()
        seeds = list(range(a.n))
        req = Request(seeds, labels=[i % len(names) for i in seeds], options={"truncation": psi})
        pictures = to_uint8(painter(req, batch_size=100)).numpy()
        gen = features(np.ascontiguousarray(pictures), inception)
        k_mean, k_std = kid(gen, ref, subset_size=min(1000, len(ref) // 2))
        p, r = precision_recall(ref, gen, k=3)
        print(f"| {psi:g} | {fid(gen, ref):.1f} | {1000 * k_mean:.1f} ± {1000 * k_std:.1f} | {p:.3f} | {r:.3f} |"
              f"  ({time.perf_counter() - t0:.0f} s)")


def projection(a: argparse.Namespace) -> None:
    distance = perceptual()
    print("| latent | VGG + pixel distance | PSNR (dB) | time |\n|---|---|---|---|")
    if a.model:
        _stylegan(a, distance)
    if a.diffusion:
        _diffusion(a, distance)
    if a.autoencoder:
        _autoencoder(a, distance)


def _row(name: str, back: torch.Tensor, target: torch.Tensor, distance, seconds: float | None = None) -> None:
    with torch.no_grad():
        d, p = distance(back, target), psnr(back, target)
    took = "" if seconds is None else f"{seconds:.0f} s"
    print(f"| {name} | {d.mean():.3f} ± {d.std():.3f} | {p.mean():.2f} ± {p.std():.2f} | {took} |", flush=True)


def _stylegan(a: argparse.Namespace, distance) -> None:
    painter = pipeline.load(a.model).painter
    side = painter.facts.image_size
    held = faces("emoji-heldout", side)
    names = painter.class_names
    style_of = {"3d style": "fluent-3d", "flat style": "fluent-flat", "noto style": "noto",
                "outline style": "openmoji", "twemoji style": "twemoji"}
    labels = [names.index(style_of[c.split(", ")[-1]]) for c in held.captions][:a.n]
    target = from_uint8(torch.from_numpy(np.array(held.images[:a.n])))
    print(f"{a.model}: {len(target)} held-out faces at {side} px, {a.steps} steps")
    with torch.no_grad():                               # the baseline: the closest of 64 samples of the style
        best_d, best = torch.full((len(target),), float("inf")), torch.zeros_like(target)
        for k in range(64):
            seeds = [1000 + 64 * i + k for i in range(len(target))]
            sample = painter(Request(seeds, labels=labels))
            d = distance(sample, target)
            best = torch.where((d < best_d)[:, None, None, None], sample, best)
            best_d = torch.minimum(d, best_d)
    _row("closest of 64 samples", best, target, distance)
    for space in ("w", "w+"):
        t0 = time.perf_counter()
        latent = painter.project(Request([0] * len(target), labels=labels, image=target), steps=a.steps,
                                 space=space, distance=distance)
        with torch.no_grad():
            back = painter(Request([0] * len(target), labels=labels, latent=latent))
        _row(space.upper(), back, target, distance, time.perf_counter() - t0)


def _diffusion(a: argparse.Namespace, distance) -> None:
    painter = pipeline.load(a.diffusion).painter
    target, prompts = _big(painter, a.n)
    t0 = time.perf_counter()
    latent = painter.project(Request([0] * len(target), prompts=prompts, image=target), steps=a.diffusion_steps)
    with torch.no_grad():
        back = painter(Request([0] * len(target), prompts=prompts, latent=latent))
    _row(f"{a.diffusion}: DDIM inversion, {a.diffusion_steps} steps, {painter.facts.image_size} px", back, target,
         distance, time.perf_counter() - t0)


def _autoencoder(a: argparse.Namespace, distance) -> None:
    painter = pipeline.load(a.autoencoder).painter
    target, _ = _big(painter, a.n)
    model = painter.model
    with torch.no_grad():
        back = model.decoder(model.posterior(target)[0]).float().clamp(-1, 1)
    _row(f"{a.autoencoder}: the encoder's posterior mean, {painter.facts.image_size} px", back, target, distance)
    t0 = time.perf_counter()
    latent = painter.project(Request([0] * len(target), image=target), steps=a.ae_steps, distance=distance)
    with torch.no_grad():
        back = painter(Request([0] * len(target), latent=latent))
    _row(f"{a.autoencoder}: encoder + {a.ae_steps} steps", back, target, distance, time.perf_counter() - t0)


def _big(painter, n: int):
    """The first n held-out faces at the painter's size, and their captions."""
    big = faces("emoji-heldout", painter.facts.image_size)
    return from_uint8(torch.from_numpy(np.array(big.images[:n]))), big.captions[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    t = sub.add_parser("truncation")
    t.add_argument("--model", default="stylegan-emoji-faces")
    t.add_argument("-n", type=int, default=1000)
    t.add_argument("--psi", type=float, nargs="+", default=[0.4, 0.55, 0.7, 0.85, 1.0])
    p = sub.add_parser("projection")
    p.add_argument("--model", default="stylegan-emoji-faces", help="the StyleGAN ('' to leave it out)")
    p.add_argument("-n", type=int, default=39, help="held-out faces to project (there are 39)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--diffusion", help="also invert the pictures with this diffusion painter, e.g. emoji")
    p.add_argument("--diffusion-steps", type=int, default=50)
    p.add_argument("--autoencoder", help="also project the pictures with this autoencoder, e.g. emoji-autoencoder")
    p.add_argument("--ae-steps", type=int, default=100)
    a = ap.parse_args()
    torch.manual_seed(0)
    {"truncation": truncation, "projection": projection}[a.what](a)


if __name__ == "__main__":
    main()
