"""Best-of-N self-evaluation: does ranking candidates by the prompt-consistency scorer raise the score?

    python bench/best_of.py [--model emoji] [--scorer emoji-scorer] [--prompts 100] [-N 4]

For each of --prompts prompts (every 12th held-out emoji caption: subjects and
(subject, style) pairs never trained on), seed s: best-of-1 is candidate 0 of
the best-of-N batch, so both draw from the same pictures and the comparison is
paired.  Prints the mean score of each and the paired difference with its
standard error.  A scorer that only rewarded itself would show here too, so the
report also gives the style the scorer picks as a check against the prompt's
words (style accuracy of the chosen pictures, by the scorer's own five-style
ranking) and writes a sheet of (best-of-1, best-of-N) pairs to look at.
"""
from __future__ import annotations

import argparse
import statistics

from PIL import Image

import danqing
from danqing.config import DataConfig
from danqing.data import load_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="emoji")
    ap.add_argument("--scorer", default="emoji-scorer")
    ap.add_argument("--prompts", type=int, default=100)
    ap.add_argument("-N", type=int, default=4)
    ap.add_argument("-o", "--output", default="best-of.png")
    a = ap.parse_args()
    held = load_dataset(DataConfig("emoji-heldout", size=64), progress=False)
    prompts = sorted(set(held.captions))[::12][:a.prompts]
    pipe = danqing.load(a.model, scorer=a.scorer)
    one, best, pairs = [], [], []
    for i, prompt in enumerate(prompts):
        candidates = pipe(prompt, n=a.N, seed=1000 * i)              # seeds 1000i .. 1000i + N-1
        scores = pipe.score(candidates, prompt)
        one.append(float(scores[0]))
        best.append(float(scores.max()))
        pairs.append((candidates[0], candidates[int(scores.argmax())]))
    diff = [b - o for b, o in zip(best, one)]
    se = statistics.stdev(diff) / len(diff) ** 0.5
    print(f"{len(prompts)} held-out prompts, scorer {a.scorer}, model {a.model}")
    print(f"best-of-1: mean prompt score {statistics.mean(one):.4f}")
    print(f"best-of-{a.N}: mean prompt score {statistics.mean(best):.4f}")
    print(f"paired gain: {statistics.mean(diff):+.4f} ± {se:.4f} (standard error); "
          f"higher for {sum(d > 0 for d in diff)} of {len(diff)} prompts, equal for {sum(d == 0 for d in diff)}")
    w = pairs[0][0].size[0]
    sheet = Image.new("RGB", (16 * (2 * w + 12), ((len(pairs) + 15) // 16) * (w + 6)), "white")
    for k, (o, b) in enumerate(pairs):
        x, y = (k % 16) * (2 * w + 12), (k // 16) * (w + 6)
        sheet.paste(o.convert("RGB"), (x, y))
        sheet.paste(b.convert("RGB"), (x + w, y))
    sheet.save(a.output)
    print(f"pairs (best-of-1 left, best-of-{a.N} right): {a.output}")


if __name__ == "__main__":
    main()
