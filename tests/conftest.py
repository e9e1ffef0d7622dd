import os

import pytest
import torch
from tiny_models import build_tiny_bert


@pytest.fixture(scope="session")
def tiny_text_encoder(tmp_path_factory):
    """A folder holding the tiny BERT (32-d states, as the "tiny" text-to-image preset expects)."""
    pytest.importorskip("transformers")
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a private dataset cache, so tests never see each other's files or the user's."""
    monkeypatch.setenv("DANQING_CACHE", str(tmp_path_factory.mktemp("cache")))


def pytest_configure(config):
    # Tests run in parallel workers on small CPUs: one intra-op thread each avoids oversubscription.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
