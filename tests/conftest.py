"""Shared fixtures: small generated datasets and their files in both public layouts."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

import contextlib

import pytest

# aiortc's libsrtp (the browser app's live webcam) crashes the process when it is first imported after
# TensorFlow, which many tests load; imported first, as fer_utils/app.py does, both work.
with contextlib.suppress(ImportError):
    import pylibsrtp  # noqa: F401

from fer_utils import config, data
from fer_utils.synthetic import make_synthetic_fer


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (``make test``): one worker per core, plus one for the notebooks' run in sequence,
    whose worker only waits while each notebook's kernel (another process) does the work."""
    return (os.cpu_count() or 1) + 1


def pytest_collection_modifyitems(items):
    """The notebooks' run in sequence first: the longest test, started at once on one worker
    (``make test`` runs pytest-xdist) while the other workers share the rest."""
    items.sort(key=lambda item: item.get_closest_marker("notebooks") is None)


@pytest.fixture(autouse=True)
def isolated_paths(tmp_path_factory, monkeypatch):
    """Keep every test away from the user's data/, caches and $FER2013."""
    root = tmp_path_factory.mktemp("project")
    monkeypatch.setenv(config.CACHE_ENV_VAR, str(root / "cache"))
    monkeypatch.delenv(config.DATA_ENV_VAR, raising=False)
    monkeypatch.delenv(config.FERPLUS_ENV_VAR, raising=False)
    monkeypatch.setattr(config, "DATA_DIR", root / "data")
    return root


@pytest.fixture(scope="session")
def small_ds():
    """A 350-image synthetic FER-like dataset (all classes in all splits)."""
    return make_synthetic_fer(350, seed=1)


@pytest.fixture
def csv_file(small_ds, tmp_path):
    return data.write_csv(small_ds, tmp_path / "fer2013.csv")


@pytest.fixture
def folder(small_ds, tmp_path):
    return data.write_image_folder(small_ds, tmp_path / "fer2013-images")
