"""Fashion-MNIST (Xiao, Rasul and Vollgraf, Zalando Research, 2017): 70,000 grey 28x28
photographs of clothing in ten classes, in MNIST's four IDX files.

Mirrors: Zalando's own bucket (the one the publishers and torchvision name), then the
copy Keras downloads from. Each file is verified by the MD5 of the .gz file that the
publishers' README lists and torchvision pins (see ``download``); no network request is
made when the cached files verify.
"""

from ..data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from .idxfiles import INPUT_SHAPE, load_idx_source

NAME = "fashion-mnist"

#: File name -> MD5 of the published .gz file.
FILES = {
    TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
    TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
    TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
}

DEFAULT_MIRRORS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
]

#: The publishers' label descriptions, by label.
CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

__all__ = ["CLASS_NAMES", "DEFAULT_MIRRORS", "FILES", "INPUT_SHAPE", "NAME", "load"]


def load(data_dir, mirrors=None, progress=None, **transfer):
    """Fashion-MNIST from ``<data_dir>/fashion-mnist/``, fetched and verified if needed.

    ``mirrors``: URL prefixes, file:// URLs or folders (DEFAULT_MIRRORS if None);
    ``progress``: a tqdm-like factory for the downloads; ``transfer``: timeout, retries,
    backoff, as in ``numpycnn.data.fetch_mnist``.
    """
    mirrors = DEFAULT_MIRRORS if mirrors is None else mirrors
    return load_idx_source(NAME, FILES, mirrors, CLASS_NAMES, data_dir, progress, **transfer)
