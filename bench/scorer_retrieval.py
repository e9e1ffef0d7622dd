"""How well the prompt-consistency scorer matches pictures to captions it never trained on.

    python bench/scorer_retrieval.py [--scorer emoji-scorer|RUN]

On the emoji held-out split (1251 images of subjects and (subject, style) pairs
never seen in training) and, for comparison, 1251 evenly spaced training images:

- R@1 / R@5: each image's caption ranked among all the split's distinct captions;
- style accuracy: the right style chosen among the five "SUBJECT, STYLE" captions;
- mean cosine of matching vs shuffled pairs (the scale best-of-N works on).
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from danqing import checkpoint as ckpt
from danqing.config import DataConfig
from danqing.data import load_dataset
from danqing.metrics.scorer import facts, retrieval_at
from danqing.pipeline import resolve_model
from danqing.pixels import from_uint8
from danqing.text import text_encoder_for

STYLES = ["twemoji style", "noto style", "outline style", "flat style", "3d style"]


def evaluate(scorer, encoder, images: torch.Tensor, captions: list[str]) -> dict[str, float]:
    unique = sorted(set(captions))
    pooled = encoder.encode(unique).pooled.half().float()            # as the training cache stores them
    x = from_uint8(images)
    with torch.no_grad():
        img = torch.cat([scorer.embed_images(b) for b in x.split(256)])
        txt = scorer.embed_text(pooled)
    sim = img @ txt.T                                                 # (N, unique)
    truth = torch.tensor([unique.index(c) for c in captions])
    r = retrieval_at(sim, truth)
    # style: the same subject in the five styles
    subjects = [c.rsplit(", ", 1)[0] for c in captions]
    variants = [f"{s}, {st}" for s in sorted(set(subjects)) for st in STYLES]
    vp = encoder.encode(variants).pooled.half().float()
    with torch.no_grad():
        vt = scorer.embed_text(vp).view(-1, len(STYLES), img.shape[1])   # (subjects, 5, E)
    order = {s: i for i, s in enumerate(sorted(set(subjects)))}
    per = torch.einsum("ne,nse->ns", img, vt[[order[s] for s in subjects]])
    style_truth = torch.tensor([STYLES.index(c.rsplit(", ", 1)[1]) for c in captions])
    match = sim[torch.arange(len(sim)), truth]
    perm = torch.randperm(len(truth), generator=torch.Generator().manual_seed(0))
    shuffled = sim[torch.arange(len(sim)), truth[perm]]
    return {"R@1": r[1], "R@5": r[5], "captions": len(unique),
            "style": float((per.argmax(1) == style_truth).float().mean()),
            "cos match": float(match.mean()), "cos shuffled": float(shuffled.mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--scorer", default="emoji-scorer")
    a = ap.parse_args()
    scorer, _ = ckpt.load(resolve_model(a.scorer, kind="scorer"))
    scorer.eval()
    encoder = text_encoder_for(facts(scorer.config).text)
    held = load_dataset(DataConfig("emoji-heldout", size=64), progress=False)
    train = load_dataset(DataConfig("emoji", size=64), progress=False)
    idx = np.linspace(0, len(train) - 1, len(held)).round().astype(np.int64)
    sets = {"held-out": (torch.from_numpy(np.array(held.images)), list(held.captions)),
            "train subset": (torch.from_numpy(np.take(train.images, idx, axis=0)), [train.captions[i] for i in idx])}
    print(f"{'':14s}{'captions':>9s}{'R@1':>7s}{'R@5':>7s}{'style':>7s}{'cos match':>11s}{'shuffled':>10s}")
    for name, (imgs, caps) in sets.items():
        r = evaluate(scorer, encoder, imgs, caps)
        print(f"{name:14s}{r['captions']:9d}{r['R@1']:7.1%}{r['R@5']:7.1%}{r['style']:7.1%}"
              f"{r['cos match']:11.3f}{r['cos shuffled']:10.3f}")


if __name__ == "__main__":
    main()
