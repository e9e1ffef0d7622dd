"""The bundled painter paints the same pixels as before the protocol gained declared families and options.

The reference pictures in ``data/before-options/`` were painted by danqing as it was before the redesign
(commit 658b119, fp32) with the calls below; ``painted-before-options.png`` is a picture that version wrote, and
its parameters must still regenerate it.  On the machine that painted them the pixels are identical; another
CPU, vector unit or number of threads sums in another order and may move a few values by one level, so the
comparison allows that much and no more (a real change of the sampler moves thousands of values by many levels).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import danqing
from danqing.pipeline import WEIGHTS, read_parameters

pytestmark = pytest.mark.skipif(not (WEIGHTS / "emoji").is_dir(), reason="the bundled painter is not installed")
DATA = Path(__file__).parent / "data"


def assert_same_pixels(images, reference: Path) -> None:
    """``images`` side by side equal the reference picture up to rounding: values at most 1 level apart, and
    fewer than 1% of them apart at all."""
    got = np.concatenate([np.asarray(i.convert("RGB")) for i in images], axis=1).astype(np.int16)
    want = np.asarray(Image.open(reference).convert("RGB")).astype(np.int16)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01, (reference.name, int(diff.max()), (diff > 0).mean())


@pytest.fixture(scope="module")
def pipe():
    return danqing.load("emoji")


def test_txt2img_negative_and_inpainting_pixels_are_unchanged(pipe):
    before = DATA / "before-options"
    assert_same_pixels(pipe("a fox face, 3d style", n=2, steps=4, seed=3, bf16="off"), before / "fox.png")
    assert_same_pixels(pipe("a red apple, flat style", "3d style", n=2, steps=4, seed=5, guidance=5, bf16="off"),
                       before / "apple-negative.png")
    init = pipe("a cat face, noto style", n=1, steps=4, seed=1, bf16="off")[0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    assert_same_pixels(pipe("a cat face, 3d style", n=1, steps=6, seed=2, init_image=init, mask=mask, bf16="off"),
                       before / "inpaint.png")
    assert_same_pixels(pipe.variations("a rocket", n=2, seed=4, steps=4, bf16="off"), before / "variations.png")


def test_a_picture_painted_before_options_regenerates(pipe):
    path = DATA / "painted-before-options.png"
    p = read_parameters(path)
    assert not p.options and (p.steps, p.guidance, p.negative_prompt) == (5, 6.0, "3d style")
    again = pipe.regenerate(p)
    assert_same_pixels([again], path)
    assert again.info["params"].options["steps"] == 5                  # and it now records its options
