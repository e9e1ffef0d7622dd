"""Projection for the families whose latent is a code (DCGAN's z, the autoencoder's z), and the projector's loop.
(StyleGAN's W and W+ are tested in test_stylegan, the diffusion models' inversion in test_sampling.)"""
from __future__ import annotations

import pytest
import torch

from danqing import projection
from danqing.families import spec
from danqing.protocol import Cond, generators


def test_learning_rate_and_latent_noise_follow_the_projector_schedule():
    """Closed forms of the StyleGAN2 projector's ramps (appendix D): zero at the start, the full rate from 5% to
    75% of the run, a cosine down to zero at the end; the latent noise falls quadratically to zero at 75%."""
    s = projection.Schedule()
    assert projection.learning_rate(0.0, s) == 0.0
    assert projection.learning_rate(0.025, s) == pytest.approx(0.05)
    assert projection.learning_rate(0.5, s) == pytest.approx(0.1)
    assert projection.learning_rate(0.875, s) == pytest.approx(0.05)
    assert projection.latent_noise(0.0, 2.0, s) == pytest.approx(0.1)
    assert projection.latent_noise(0.375, 2.0, s) == pytest.approx(0.025)
    assert projection.latent_noise(0.8, 2.0, s) == 0.0


@pytest.fixture(scope="module")
def dcgan():
    torch.manual_seed(0)
    return spec("dcgan").Model(spec("dcgan").Config(image_size=16, z_dim=16, g_channels=16, d_channels=16,
                                                    num_classes=10)).eval()


def test_dcgan_projection_recovers_its_own_sample_and_keeps_z_on_the_sphere(dcgan):
    """A picture the generator painted comes back (PSNR > 35 dB, far above the nearest other sample of its class)
    from a code on the sphere of radius sqrt(z_dim); the model's weights get no gradients."""
    m, cond = dcgan, Cond(labels=torch.tensor([2, 7]))
    target = m.sample(2, cond, generator=generators([1, 2]))
    others = m.sample(32, Cond(labels=torch.tensor([2, 7] * 16)), generator=generators(range(10, 42)))
    nearest_other = projection.psnr(others, target.repeat(16, 1, 1, 1)).view(16, 2).max(0).values
    found = m.project(target, cond, steps=200, generator=torch.Generator().manual_seed(0))
    assert found["z"].shape == (2, 16)
    torch.testing.assert_close(found["z"].norm(dim=1), torch.full((2,), 4.0))
    got = projection.psnr(m.render(found, cond), target)
    assert (got > 35).all() and (got > nearest_other + 10).all(), (got, nearest_other)
    assert all(p.grad is None for p in m.parameters())
    with pytest.raises(ValueError, match="projects into z"):
        m.project(target, cond, steps=1, space="w")


def test_dcgan_render_moves_a_code_towards_a_seed_on_the_sphere(dcgan):
    """Rendering a code is sampling it; strength 1 towards another seed's code paints that seed's picture, and
    halfway keeps the code's norm (slerp)."""
    m, cond = dcgan, Cond(labels=torch.tensor([4]))
    z, other = m.noise(1, generators([3])), m.noise(1, generators([6]))
    torch.testing.assert_close(m.render({"z": z}, cond), m.sample(1, cond, generator=generators([3])))
    torch.testing.assert_close(m.render({"z": z}, cond, toward=other, strength=torch.ones(1)),
                               m.sample(1, cond, generator=generators([6])))
    with pytest.raises(ValueError, match="projected with another model"):
        m.render({"z": z[:, :8]}, cond)


def test_autoencoder_projection_starts_at_the_encoder_and_refines_it():
    """The autoencoder's projection is its posterior mean, then steps on the decoder's distance: one step moves
    nothing (the learning rate ramps up from 0), 100 steps lower the distance below the encoder's."""
    torch.manual_seed(0)
    m = spec("autoencoder").Model(spec("autoencoder").presets["tiny"]).eval()
    pictures = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        encoded = m.posterior(pictures)[0]
    once = m.project(pictures, steps=1)
    torch.testing.assert_close(once["z"], encoded)
    torch.testing.assert_close(m.render(once), m.decoder(encoded).clamp(-1, 1))
    refined = m.project(pictures, steps=100)
    before = projection.pixel_distance(m.render(once), pictures)
    after = projection.pixel_distance(m.render(refined), pictures)
    assert (after < 0.8 * before).all(), (before, after)
    with pytest.raises(ValueError, match="projected with another model"):
        m.render({"z": encoded[:, :, :2]})


def test_the_project_command_takes_every_family_that_projects(tmp_path, capsys):
    """`danqing project` with a DCGAN and with an autoencoder run: the latent file names its family and space,
    and `danqing sample --latent` paints it back."""
    from PIL import Image

    from danqing.cli import main
    from danqing.projection import load_latent

    Image.new("RGB", (16, 16), (200, 30, 30)).save(tmp_path / "red.png")
    for family, extra in [("dcgan", ["--class", "3"]), ("autoencoder", [])]:
        run = tmp_path / family
        assert main(["train", family, "--data", "digits", "--preset", "tiny", "--steps", "1", "--batch-size", "4", "-q",
                     "--bf16", "off", "--train.sample_every=0", "--train.sample_n=1", "--out", str(run)]) == 0
        out = tmp_path / f"{family}-out"
        assert main(["project", str(tmp_path / "red.png"), "--model", str(run), *extra, "-o", str(out),
                     "--steps", "4", "--distance", "pixel"]) == 0
        assert "PSNR" in capsys.readouterr().out
        _, about = load_latent(out / "red.latent.safetensors")
        assert about["family"] == family and about["space"] == "z"
        assert main(["sample", str(run), "--latent", str(out / "red.latent.safetensors"), "-o",
                     str(tmp_path / f"{family}.png")]) == 0
        assert Image.open(tmp_path / f"{family}.png").size[0] >= 16
