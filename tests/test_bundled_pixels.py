"""The bundled painter paints the same pixels as before the protocol gained declared families and options.

The hashes were taken from pictures painted by danqing 0.1.0 as it was before the redesign (fp32, on the
project's 2-core AVX-512 machine); a CPU with other vector units may round differently and fail here while
painting correctly.  ``painted-before-options.png`` is a picture that version wrote: its parameters must still
regenerate it exactly.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import danqing
from danqing.pipeline import WEIGHTS, read_parameters

pytestmark = pytest.mark.skipif(not (WEIGHTS / "emoji").is_dir(), reason="the bundled painter is not installed")
DATA = Path(__file__).parent / "data"


def digest(images) -> str:
    return hashlib.sha256(b"".join(np.asarray(i).tobytes() for i in images)).hexdigest()[:16]


@pytest.fixture(scope="module")
def pipe():
    return danqing.load("emoji")


def test_txt2img_negative_and_inpainting_pixels_are_unchanged(pipe):
    assert digest(pipe("a fox face, 3d style", n=2, steps=4, seed=3, bf16="off")) == "8d86ab94fa2d3286"
    assert digest(pipe("a red apple, flat style", "3d style", n=2, steps=4, seed=5, guidance=5,
                       bf16="off")) == "ce3682f3ba2a34a2"
    init = pipe("a cat face, noto style", n=1, steps=4, seed=1, bf16="off")[0]
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    assert digest(pipe("a cat face, 3d style", n=1, steps=6, seed=2, init_image=init, mask=mask,
                       bf16="off")) == "b85f5931a0b564ac"
    assert digest(pipe.variations("a rocket", n=2, seed=4, steps=4, bf16="off")) == "37741ddf5329f4bd"


def test_a_picture_painted_before_options_regenerates_exactly(pipe):
    path = DATA / "painted-before-options.png"
    p = read_parameters(path)
    assert not p.options and (p.steps, p.guidance, p.negative_prompt) == (5, 6.0, "3d style")
    again = pipe.regenerate(p)
    assert np.array_equal(np.asarray(again), np.asarray(Image.open(path).convert("RGB")))
    assert again.info["params"].options["steps"] == 5                  # and it now records its options
