"""What the IDX sources share: MNIST's four file names and layout, other publishers.

Fashion-MNIST and KMNIST are drop-in replacements for MNIST: the same four gzipped IDX
files, with the same names, 60,000 training and 10,000 test images of 28x28 grey pixels
and ten classes. Each is cached in a folder of its own under the data directory
(``<data_dir>/<name>/``), so that files of the same name never mix, and verified by the
publisher's MD5 of each .gz file (see ``download``).
"""

from pathlib import Path

import numpy as np

from ..data import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    DataError,
    idx_bytes,
    parse_idx,
)
from . import download
from .base import Dataset

SIDE = 28
INPUT_SHAPE = (1, SIDE, SIDE)
FILE_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)


def _images(path):
    images = parse_idx(idx_bytes(path), path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (SIDE, SIDE):
        raise DataError(
            f"{path}: expected uint8 images of {SIDE}x{SIDE}, "
            f"got {images.dtype} {'x'.join(map(str, images.shape))}"
        )
    return images


def _labels(path, count, classes):
    labels = parse_idx(idx_bytes(path), path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{path}: expected a uint8 vector of labels, "
            f"got {labels.dtype} {'x'.join(map(str, labels.shape))}"
        )
    if len(labels) != count:
        raise DataError(f"{path}: {len(labels)} labels for {count} images")
    if labels.size and labels.max() >= classes:
        bad = int(np.argmax(labels >= classes))
        raise DataError(f"{path}: label {labels[bad]} of image {bad} is not in 0..{classes - 1}")
    return labels.astype(np.int64)


def load_idx_source(name, files, mirrors, class_names, data_dir, progress=None, **transfer):
    """The IDX data set ``name`` from ``<data_dir>/<name>/``, fetched first if needed.

    ``files``: {file name: MD5 of the .gz}; ``mirrors``: URL prefixes, file:// URLs or
    folders; ``transfer``: timeout, retries, backoff (see ``download.fetch``).
    """
    paths = download.fetch(Path(data_dir) / name, files, mirrors, name, progress, **transfer)
    train_x = _images(paths[TRAIN_IMAGES])
    test_x = _images(paths[TEST_IMAGES])
    train_y = _labels(paths[TRAIN_LABELS], len(train_x), len(class_names))
    test_y = _labels(paths[TEST_LABELS], len(test_x), len(class_names))
    return Dataset(
        name=name,
        train_images=train_x[:, None],
        train_labels=train_y,
        test_images=test_x[:, None],
        test_labels=test_y,
        class_names=list(class_names),
        source={"dataset": name},
    )
