"""A labelled sheet of prompts for a text-to-image model (for model cards and for looking).

    python bench/prompt_grid.py --model emoji -o docs/emoji-grid.png
    python bench/prompt_grid.py --model runs/t2i-emoji --compare-guidance -o guidance.png
    python bench/prompt_grid.py --model emoji --heldout 20 -o heldout-pairs.png
    python bench/prompt_grid.py --model emoji --per-prompt 4 -o seeds.png
    python bench/prompt_grid.py --model emoji --phrasings -o phrasings.png

By default 32 prompts: 16 subjects from many categories, each in two of the
five styles (all five styles appear equally often).  --per-prompt N paints
N pictures of every prompt (seeds 1000 * (prompt + 1) + 0 ... N-1), so that a
subject is judged on more than one draw.  --phrasings paints 16 prompts
worded as people type them rather than as the captions read ("a fox face,
3d style" for "fox, 3d style"), 4 draws each; the last four use words no
caption or caption variant has ("a cup of tea").  --compare-guidance puts
guidance 1 (no guidance) next to the model's default for every prompt.
--heldout N paints N held-out (subject, style) pairs of the emoji data set
(pairs never seen in training while the subject's other styles were), each
next to the real held-out picture.  The pairs are picked without looking at
results: N / 5 per style, in the order of a hash of the subject, leaving out
skin-tone variants so that the sheet is not mostly people.
"""
from __future__ import annotations

import argparse
import hashlib
import json

from PIL import Image, ImageDraw, ImageFont

import danqing
from danqing.data.emoji import emoji_dir, heldout_subject
from danqing.data.sources import cache_root

SUBJECTS = ["fox", "red apple", "rocket", "sunflower", "pizza", "cat face", "grinning face", "red heart",
            "snowman", "guitar", "house", "sun", "frog", "teacup without handle", "airplane", "birthday cake"]
STYLES = ["twemoji style", "noto style", "outline style", "flat style", "3d style"]
PHRASED = ["a fox face, 3d style", "a red apple, flat style", "a cat face, noto style", "a rocket, outline style",
           "an apple, twemoji style", "a cat, 3d style", "a snowman, flat style", "a house, twemoji style",
           "a sunflower, outline style", "a birthday cake, noto style", "an airplane, 3d style",
           "a guitar, noto style", "a cup of tea, flat style", "a smiling face, 3d style",
           "a slice of pizza, twemoji style", "a frog face, outline style"]


def prompts() -> list[str]:
    return [f"{s}, {STYLES[(2 * i + j) % 5]}" for i, s in enumerate(SUBJECTS) for j in range(2)]


def heldout_pairs(n: int) -> list[tuple[str, Image.Image]]:
    """(caption, real picture) for n held-out (subject, style) pairs, n / 5 per style (see the module doc)."""
    folder = emoji_dir(cache_root()) / "heldout"
    rows = [json.loads(line) for line in (folder / "metadata.jsonl").read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if not heldout_subject(r["key"]) and "skin tone" not in r["subject"]]
    rows.sort(key=lambda r: hashlib.sha256(r["subject"].encode()).hexdigest())
    per_style = {style: [r for r in rows if r["style"] == style][:n // len(STYLES)] for style in STYLES}
    picked = [r for style in STYLES for r in per_style[style]]
    return [(r["text"], Image.open(folder / r["file_name"]).convert("RGB").resize((64, 64), Image.Resampling.LANCZOS))
            for r in picked]


def sheet(images: list[Image.Image], labels: list[str], cols: int, scale: int = 2) -> Image.Image:
    """Images in a grid, each with its label underneath."""
    w, h = images[0].size[0] * scale, images[0].size[1] * scale
    font = ImageFont.load_default()
    cell_h = h + 28
    rows = (len(images) + cols - 1) // cols
    out = Image.new("RGB", (cols * (w + 8) + 8, rows * cell_h + 8), "white")
    draw = ImageDraw.Draw(out)
    for i, (img, label) in enumerate(zip(images, labels)):
        x, y = 8 + (i % cols) * (w + 8), 8 + (i // cols) * cell_h
        out.paste(img.convert("RGB").resize((w, h), Image.Resampling.NEAREST), (x, y))
        for k, line in enumerate([label[:22], label[22:44]]):
            draw.text((x, y + h + 2 + 11 * k), line, fill="black", font=font)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--compare-guidance", action="store_true")
    ap.add_argument("--heldout", type=int, metavar="N", help="N held-out (subject, style) pairs, real vs painted")
    ap.add_argument("--per-prompt", type=int, default=1, metavar="N", help="N pictures of each prompt (other seeds)")
    ap.add_argument("--phrasings", action="store_true", help="16 prompts worded as people type them, 4 draws each")
    ap.add_argument("-o", "--output", default="prompt-grid.png")
    a = ap.parse_args()
    pipe = danqing.load(a.model)
    images, labels = [], []
    if a.heldout:
        for i, (p, real) in enumerate(heldout_pairs(a.heldout)):
            images += [real, *pipe(p, n=1, seed=a.seed + i)]
            labels += [f"real: {p}", "painted"]
    elif a.per_prompt > 1 or a.phrasings:
        n = a.per_prompt if a.per_prompt > 1 else 4
        for i, p in enumerate(PHRASED if a.phrasings else prompts()):
            images += pipe(p, n=n, seed=a.seed + 1000 * (i + 1))
            labels += [p] + [""] * (n - 1)
    else:
        for i, p in enumerate(prompts()):
            scales = [1.0, pipe.model.config.guidance] if a.compare_guidance else [None]
            for g in scales:
                images += pipe(p, n=1, seed=a.seed + i, guidance=g)
                labels.append(p if g is None else f"{p} (g={g:g})")
    sheet(images, labels, cols=8).save(a.output)
    print(f"wrote {a.output} ({len(images)} pictures)")


if __name__ == "__main__":
    main()
