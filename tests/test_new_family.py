"""A new family is one file and one registry line.

A toy family is written into a temporary module that nothing in danqing knows about, registered with one
entry in ``FAMILIES``, and then listed by ``danqing models``, trained by ``danqing train``, painted by
``danqing paint`` (with its own option as a flag) and listed, with that option, by the studio.
"""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
from PIL import Image

from danqing.cli import main
from danqing.families import FAMILIES

TOY = textwrap.dedent('''
    """A toy generator: z (B, 8) -> a linear map -> tanh -> (B, C, S, S); trained to match the data's mean."""
    from dataclasses import dataclass

    import torch
    from torch import nn

    from danqing.options import option
    from danqing.protocol import Facts, FamilySpec, Generates, Phase, randn


    @dataclass(frozen=True)
    class Config:
        image_size: int = 8
        image_channels: int = 1


    @dataclass(frozen=True)
    class Options:
        brightness: float = option(0.0, "added to every pixel", lo=-1.0, hi=1.0)


    class Toy(nn.Module):
        def __init__(self, config):
            super().__init__()
            self.config = config
            self.net = nn.Linear(8, config.image_channels * config.image_size ** 2)

        def phases(self):
            return [Phase("main")]

        def loss(self, batch, phase, step=0, carry=None):
            fake = self.sample(len(batch.images), generator=None)
            return {"loss": (fake.mean(0) - batch.images.mean(0)).square().mean()}

        def noise(self, n, generator=None, size=None):
            return randn((n, 8), generator, self.net.weight.device)

        def sample(self, n, cond=None, *, generator=None, noise=None, options=None):
            c, o = self.config, options or Options()
            z = self.noise(n, generator) if noise is None else noise
            x = torch.tanh(self.net(z)).view(n, c.image_channels, c.image_size, c.image_size)
            return (x + o.brightness).clamp(-1, 1)


    SPEC = FamilySpec("toy", Config, Toy, {"tiny": Config()}, "a toy generator for the registry test",
                      {"lr": 1e-2, "warmup": 0}, Options, frozenset({Generates}),
                      lambda c: Facts(c.image_size, c.image_channels))
''')


@pytest.fixture
def toy(tmp_path, monkeypatch):
    (tmp_path / "toy_family.py").write_text(TOY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(FAMILIES, "toy", "toy_family")          # the one registry line
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_a_family_in_one_file_lists_trains_paints_and_shows_in_the_studio(toy, capsys):
    assert main(["models"]) == 0
    listed = [line.split("│")[1].strip() for line in capsys.readouterr().out.splitlines() if line.count("│") > 2]
    assert "toy" in listed

    assert main(["train", "toy", "--data", "digits", "--preset", "tiny", "--steps", "3", "--out", "runs/toy",
                 "-q", "--train.sample_every=0"]) == 0
    assert (toy / "runs" / "toy" / "samples" / "step-0000003.png").is_file()      # the trainer's grid painted it

    assert main(["paint", "--model", "runs/toy", "-n", "2", "--seed", "3", "-o", "out", "-q"]) == 0
    assert main(["paint", "--model", "runs/toy", "-n", "2", "--seed", "3", "--brightness", "1", "-o", "bright",
                 "-q"]) == 0
    plain = np.asarray(Image.open(toy / "out" / "0001.png"), np.int16)
    bright = np.asarray(Image.open(toy / "bright" / "0001.png"), np.int16)
    assert plain.shape == (8, 8) and (bright >= plain).all()       # its own option: +1 on [-1, 1], clamped
    assert bright.mean() - plain.mean() > 50
    assert main(["paint", "--model", "runs/toy", "--steps", "4", "-o", "out", "-q"]) == 2
    assert "steps does not apply to the toy model" in capsys.readouterr().err

    pytest.importorskip("fastapi")
    pytest.importorskip("python_multipart")
    from starlette.testclient import TestClient

    from danqing.studio import create_app
    app = create_app(toy / "data", runs_dir=toy / "runs", static_dir=toy / "static")
    try:
        client = TestClient(app)
        entry = next(e for e in client.get("/api/models").json()["models"] if e["name"] == "toy")
        assert entry["family"] == "toy" and [o["name"] for o in entry["options"]] == ["brightness"]
        assert entry["options"][0]["min"] == -1.0 and entry["options"][0]["default"] == 0.0
        # its option is a studio setting and a grid axis, checked against its limits
        grid = {"type": "grid", "model": "toy", "seed": 3, "x": {"param": "brightness", "values": [0, 1]}}
        assert client.post("/api/jobs", json={**grid, "x": {"param": "brightness", "values": [2]}}).status_code == 422
        job = client.post("/api/jobs", json={**grid, "options": {"brightness": 0.5}})
        assert job.status_code == 202, job.text
        assert app.state.studio.runner.wait_idle(60)
        assert client.get(f"/api/jobs/{job.json()['id']}").json()["state"] == "done"
    finally:
        app.state.studio.close()
