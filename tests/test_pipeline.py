"""The painter end to end on tiny models: prompts, PNG metadata, exact regeneration, img2img, inpainting, CLI."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from tiny_models import FAST, train_tiny

from danqing.cli import main
from danqing.pipeline import PipelineError, load, read_parameters


@pytest.fixture(scope="module")
def painter(tmp_path_factory, tiny_text_encoder):
    """A tiny autoencoder, then a tiny text-to-image model trained inside it (a few steps each)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    mp.setenv("DANQING_CACHE", str(tmp_path_factory.mktemp("cache")))
    root = tmp_path_factory.mktemp("runs")
    train_tiny(root, "ae", "t2i", "scorer")
    yield root / "t2i"
    mp.undo()


@pytest.fixture
def pipe(painter, tiny_text_encoder, monkeypatch):
    monkeypatch.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    return load(painter)


def pixels(img):
    return np.asarray(img.convert("RGB"), np.int16)


def test_paint_metadata_and_exact_regeneration(pipe, tmp_path):
    images = pipe("handwritten digit 3", n=3, seed=5, steps=4, bf16="off")
    assert len(images) == 3 and images[0].size == (16, 16)
    path = pipe.save(images[1], tmp_path / "x.png")
    p = read_parameters(path)
    assert (p.prompt, p.seed, p.steps, p.batch_seeds, p.precision) == ("handwritten digit 3", 6, 4, [5, 6, 7], "fp32")
    assert p.weights == pipe.weights and p.version
    text = Image.open(path).info["parameters"]
    assert text.startswith("handwritten digit 3\nSteps: 4, Sampler: dpmpp2m") and "Seed: 6" in text
    again = pipe.regenerate(p)
    assert np.array_equal(pixels(again), pixels(Image.open(path)))       # bit-identical, not just close


def test_negative_prompt_and_guidance_change_the_picture(pipe):
    import torch
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():                # a few training steps leave the zero-initialised layers near zero:
        for p in pipe.model.net.parameters():          # move them so that the text really matters
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    a = pipe("digit 3", n=1, seed=1, steps=3, guidance=3.0, bf16="off")[0]
    b = pipe("digit 3", "digit 8", n=1, seed=1, steps=3, guidance=3.0, bf16="off")[0]
    assert not np.array_equal(pixels(a), pixels(b))


def test_img2img_and_inpainting_keep_what_they_should(pipe):
    rng = np.random.default_rng(0)
    init = Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8))
    out = pipe("digit 1", n=2, seed=0, steps=4, init_image=init, strength=0.5, bf16="off")
    assert out[0].size == (16, 16) and out[0].info["params"].strength == 0.5
    mask = np.zeros((16, 16), np.uint8)
    mask[:, :8] = 255                                                      # paint the left half only
    painted = pipe("digit 1", n=1, seed=0, steps=4, init_image=init, mask=Image.fromarray(mask), bf16="off")[0]
    assert np.array_equal(pixels(painted)[:, 8:], pixels(init)[:, 8:])     # the kept half is untouched


@pytest.mark.parametrize("kwargs, needle", [
    ({"prompt": "  "}, "prompt is empty"),
    ({"prompt": "a", "n": 0}, "n must be between 1 and 16"),
    ({"prompt": "a", "steps": 500}, "steps must be between 1 and 200"),
    ({"prompt": "a", "sampler": "plms"}, "unknown sampler"),
])
def test_bad_input_is_a_clear_error(pipe, kwargs, needle):
    with pytest.raises(PipelineError, match=needle):
        pipe(**kwargs)


def test_cli_paint_from_and_errors(painter, tiny_text_encoder, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DANQING_TEXT_ENCODER", str(tiny_text_encoder))
    out = tmp_path / "paintings"
    base = ["paint", "--model", str(painter), "-q", "--steps", "3", "-o", str(out), "--bf16", "off"]
    assert main([*base, "red apple", "-n", "2", "--seed", "4"]) == 0
    written = capsys.readouterr().out.split()
    assert [p.rsplit("/", 1)[-1] for p in written] == ["0001.png", "0002.png"]
    assert main([*base, "--from", written[1]]) == 0
    res = capsys.readouterr()
    assert res.out.strip().endswith("0003.png") and "identical to the original pixels" in res.err
    bad = tmp_path / "bad.png"
    bad.write_text("not a picture")
    for argv, needle in (([*base, ""], "prompt is empty"), ([*base, "x", "--init", str(bad)], "cannot read the init"),
                         ([*base, "x", "--mask", written[0]], "give it with --init"),
                         ([*base, "x", "-n", "40"], "n must be between")):
        assert main(argv) == 2 and needle in capsys.readouterr().err
    from danqing.text import TextWarning
    with pytest.warns(TextWarning, match="too long"):                     # truncated, with a warning
        assert main([*base, " ".join(["apple"] * 40), "-n", "1"]) == 0


def test_best_of_keeps_the_best_scored_candidate_and_regenerates_it(pipe, painter, tmp_path):
    pipe.scorer_source = painter.parent / "scorer"
    images = pipe("handwritten digit 7", n=2, seed=10, steps=3, bf16="off", best_of=3)
    assert len(images) == 2
    # every candidate, painted alone with the same batch of seeds: the kept one has the highest score
    candidates = pipe("handwritten digit 7", n=6, seed=10, steps=3, bf16="off")
    scores = pipe.score(candidates, "handwritten digit 7").view(2, 3)
    for i, img in enumerate(images):
        p = img.info["params"]
        assert p.best_of == 3 and p.seed == 10 + 3 * i + int(scores[i].argmax())
        assert p.score == pytest.approx(float(scores[i].max()), abs=1e-6)
        assert (pixels(img) == pixels(candidates[p.seed - 10])).all()
    pipe.save(images[1], tmp_path / "best.png")
    params = read_parameters(tmp_path / "best.png")
    assert "Best of: 3" in Image.open(tmp_path / "best.png").info["parameters"]
    assert (pixels(pipe.regenerate(params)) == pixels(images[1])).all()


def test_best_of_without_a_scorer_says_what_to_do(pipe, tmp_path):
    pipe.scorer_source = tmp_path / "no-such-scorer"
    with pytest.raises(PipelineError, match="best_of needs the prompt-consistency scorer"):
        pipe("handwritten digit 7", n=1, steps=2, best_of=2)
    with pytest.raises(PipelineError, match="best_of must be between 1 and 16"):
        pipe("handwritten digit 7", n=1, steps=2, best_of=40)


# ---------------------------------------------------------------- latent space: variations and interpolation

def test_slerp_closed_form():
    from danqing.pipeline import slerp
    a, b = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    for t, want in ((0.0, [1.0, 0.0]), (0.5, [0.5**0.5, 0.5**0.5]), (1.0, [0.0, 1.0])):
        torch.testing.assert_close(slerp(a, b, torch.tensor([t])), torch.tensor([want]))
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 4, 8, 8, generator=g)
    mid = slerp(x, y, torch.full((3,), 0.5))
    # two independent Gaussian draws are nearly orthogonal: the great circle keeps their norm
    ratio = mid.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    assert ((ratio - 1).abs() < 0.1).all()
    assert torch.equal(slerp(x, y, torch.zeros(3)), x)


def test_interpolation_runs_from_seed_to_seed_and_regenerates(pipe, tmp_path):
    frames = pipe.interpolate("handwritten digit 4", frames=3, seed=11, seed_b=12, steps=3, bf16="off")
    a = pipe("handwritten digit 4", n=1, seed=11, steps=3, bf16="off")[0]
    b = pipe("handwritten digit 4", n=1, seed=12, steps=3, bf16="off")[0]
    assert np.abs(pixels(frames[0]) - pixels(a)).max() <= 2 and np.abs(pixels(frames[2]) - pixels(b)).max() <= 2
    assert np.abs(pixels(frames[1]) - pixels(a)).max() > 2
    p = frames[1].info["params"]
    assert (p.seed, p.variation_seed, p.variation_strength, p.index) == (11, 12, 0.5, 1)
    pipe.save(frames[1], tmp_path / "mid.png")
    assert (pixels(pipe.regenerate(read_parameters(tmp_path / "mid.png"))) == pixels(frames[1])).all()
    assert "Variation seed: 12" in Image.open(tmp_path / "mid.png").info["parameters"]


def test_variations_stay_near_their_seed(pipe):
    base = pipe("handwritten digit 5", n=1, seed=20, steps=3, bf16="off")[0]
    near = pipe.variations("handwritten digit 5", n=2, seed=20, variation_strength=0.1, steps=3, bf16="off")
    far = pipe.variations("handwritten digit 5", n=2, seed=20, variation_strength=0.9, steps=3, bf16="off")
    d = [np.abs(pixels(x) - pixels(base)).mean() for x in (*near, *far)]
    assert max(d[:2]) < min(d[2:])
    assert [v.info["params"].variation_seed for v in near] == [21, 22]
    with pytest.raises(PipelineError, match="variation strength must be in"):
        pipe.variations("handwritten digit 5", n=1, seed=20, variation_strength=1.5, steps=2)


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    root = tmp_path_factory.mktemp("gan")
    assert main(["train", "dcgan", "--data", "digits", "--preset", "tiny", *FAST, "--out", str(root)]) == 0
    return load(root)


def test_class_and_latent_controls_for_a_gan(gan):
    threes = gan("3", n=2, seed=1)
    assert len(threes) == 2 and threes[0].info["params"].prompt == "3"
    mixed = gan(n=3, seed=1)                                   # no prompt: the classes in turn
    assert mixed[0].size == (16, 16)
    frames = gan.interpolate("7", frames=4, seed=1, seed_b=2)  # in z
    assert len({pixels(f).tobytes() for f in frames}) == 4
    with pytest.raises(PipelineError, match="paints the classes 0, 1"):
        gan("cat", n=1)
    with pytest.raises(PipelineError, match="need a diffusion model"):
        gan("3", n=1, init_image=threes[0])


def test_parameters_of_a_style_picture_point_to_its_command(tmp_path):
    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("danqing", '{"kind": "style", "method": "gatys"}')
    Image.new("RGB", (8, 8)).save(tmp_path / "styled.png", pnginfo=info)
    with pytest.raises(PipelineError, match="made by `danqing style`"):
        read_parameters(tmp_path / "styled.png")
