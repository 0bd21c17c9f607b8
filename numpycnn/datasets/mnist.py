"""MNIST, through ``numpycnn.data.load_mnist``: its mirrors, its SHA-256 checks of the
decoded payloads and its cache in ``<data_dir>/mnist/``, unchanged. The images come as
(N, 1, 28, 28) views of the parsed arrays, with no copy."""

import numpy as np

from ..data import DEFAULT_MIRRORS, load_mnist
from .base import Dataset

NAME = "mnist"
INPUT_SHAPE = (1, 28, 28)
CLASS_NAMES = [str(digit) for digit in range(10)]

__all__ = ["CLASS_NAMES", "DEFAULT_MIRRORS", "INPUT_SHAPE", "NAME", "load"]


def load(data_dir, mirrors=None, progress=None, test_only=False):
    """MNIST from ``<data_dir>/mnist/``, fetched and verified if needed (see load_mnist).

    ``test_only``: read (and fetch) the test files alone, 1.6 MB of the 11 MB, for an
    evaluation; the training set is then empty."""
    if test_only:
        m = load_mnist(data_dir, mirrors, progress, sets=("test",))
        train_x, train_y = np.empty((0, *INPUT_SHAPE), np.uint8), np.empty(0, np.int64)
    else:
        m = load_mnist(data_dir, mirrors, progress)
        train_x, train_y = m.train_images[:, None], m.train_labels
    return Dataset(
        name=NAME,
        train_images=train_x,
        train_labels=train_y,
        test_images=m.test_images[:, None],
        test_labels=m.test_labels,
        class_names=list(CLASS_NAMES),
        source={"dataset": NAME},
    )
