"""Shared fixtures: where the real MNIST files are, for tests where data matters."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def shared_dir():
    return ROOT.parent / "shared"


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder with the four real MNIST .gz files (the tests' download mirror).

    ``NUMPYCNN_TEST_MNIST`` names it; by default ``../shared/mnist`` beside the project.
    """
    path = Path(os.environ.get("NUMPYCNN_TEST_MNIST", shared_dir() / "mnist"))
    if not (path / "train-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST files not found in {path}")
    return path


@pytest.fixture(scope="session")
def reference_params_path():
    path = shared_dir() / "reference" / "escontrela-params.pkl"
    if not path.is_file():
        pytest.skip(f"reference parameters not found at {path}")
    return path


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """The real MNIST arrays (``numpycnn.data.MNIST``, read-only), parsed once per session."""
    from numpycnn import data

    return data.MNIST(
        *(
            data.read_idx(mnist_dir / name)
            for name in (data.TRAIN_IMAGES, data.TRAIN_LABELS, data.TEST_IMAGES, data.TEST_LABELS)
        )
    )
