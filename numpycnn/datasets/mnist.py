"""MNIST, through ``numpycnn.data.load_mnist``: its mirrors, its SHA-256 checks of the
decoded payloads and its cache in ``<data_dir>/mnist/``, unchanged. The images come as
(N, 1, 28, 28) views of the parsed arrays, with no copy."""

from ..data import DEFAULT_MIRRORS, load_mnist
from .base import Dataset

NAME = "mnist"
INPUT_SHAPE = (1, 28, 28)
CLASS_NAMES = [str(digit) for digit in range(10)]

__all__ = ["CLASS_NAMES", "DEFAULT_MIRRORS", "INPUT_SHAPE", "NAME", "load"]


def load(data_dir, mirrors=None, progress=None):
    """MNIST from ``<data_dir>/mnist/``, fetched and verified if needed (see load_mnist)."""
    m = load_mnist(data_dir, mirrors, progress)
    return Dataset(
        name=NAME,
        train_images=m.train_images[:, None],
        train_labels=m.train_labels,
        test_images=m.test_images[:, None],
        test_labels=m.test_labels,
        class_names=list(CLASS_NAMES),
        source={"dataset": NAME},
    )
