"""Shared fixtures: where the real MNIST files are, for tests where data matters."""

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def shared_dir():
    return ROOT.parent / "shared"


def mnist_candidates():
    """Where the real MNIST files may be, in order: ``$NUMPYCNN_TEST_MNIST`` if set, else
    ``../shared/mnist`` beside the project, then the download cache that ``numpycnn
    download`` fills (``$NUMPYCNN_DATA_DIR/mnist``, by default ``data/mnist`` here)."""
    if "NUMPYCNN_TEST_MNIST" in os.environ:
        return [Path(os.environ["NUMPYCNN_TEST_MNIST"])]
    cache = Path(os.environ.get("NUMPYCNN_DATA_DIR", ROOT / "data")) / "mnist"
    return [shared_dir() / "mnist", cache]


@pytest.fixture(scope="session")
def mnist_dir():
    """The folder with the four real MNIST .gz files (the tests' download mirror)."""
    from numpycnn import data

    candidates = mnist_candidates()
    for path in candidates:
        if all((path / name).is_file() for name in data.MNIST_FILES):
            return path
    pytest.skip(
        f"real MNIST files not found in {' or '.join(map(str, candidates))}: "
        "run `numpycnn download` first"
    )


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


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium through Playwright, with test_inspect_browser's flags (the browser
    tests skip when Chromium is absent)."""
    from playwright.sync_api import sync_playwright
    from test_inspect_browser import ARGS, CHROMIUM

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()
