"""Fixtures shared by the test modules that train real runs."""

import pytest

from stn_repro.data import sources
from stn_repro.train import quiet_lightning


@pytest.fixture
def offline(monkeypatch):
    """No torchvision download (tests never touch the network) and Lightning's start-up chatter off; the modules
    that train runs use it on every test (``pytestmark = pytest.mark.usefixtures("offline")``)."""

    def refuse(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(sources, "_download_with_torchvision", refuse)
    quiet_lightning()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A data folder shared by a module's runs: its caches (the bundled sample, each generated set) are built once."""
    return tmp_path_factory.mktemp("data")
