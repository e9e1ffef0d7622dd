import os

import pytest
import torch


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets a private dataset cache, so tests never see each other's files or the user's."""
    monkeypatch.setenv("DANQING_CACHE", str(tmp_path_factory.mktemp("cache")))


def pytest_configure(config):
    # Tests run in parallel workers on small CPUs: one intra-op thread each avoids oversubscription.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
