"""Data sources, one module per data set (as torchvision.datasets), one face for all.

Every source returns a ``Dataset``: uint8 images (N, C, H, W) for training and testing,
int64 labels, ``class_names``, ``input_shape`` and ``source``, a plain dict for the model
file that ``load`` takes back to load the same data again. The sources:

=================  =========================================================  ==========
name               what                                                       shape
=================  =========================================================  ==========
``mnist``          handwritten digits (``numpycnn.data``)                     1x28x28
``fashion-mnist``  Zalando's clothing photographs, MNIST's format             1x28x28
``kmnist``         cursive hiragana, MNIST's format                           1x28x28
``cifar10``        colour photographs of ten classes (binary version)         3x32x32
``folder``         your own images, one subfolder per class                   chosen
=================  =========================================================  ==========

    >>> ds = datasets.load("fashion-mnist", data_dir="data")
    >>> ds = datasets.load({"dataset": "folder", "path": "pets", "input_shape": [3, 32, 32]},
    ...                    data_dir="data")
"""

import difflib

from ..data import DataError
from . import cifar10, fashion_mnist, folder, kmnist, mnist
from .base import Dataset

#: Name -> source module; each has NAME and load().
SOURCES = {m.NAME: m for m in (mnist, fashion_mnist, kmnist, cifar10, folder)}
#: The options a source description may carry besides "dataset", per source.
OPTIONS = {
    folder.NAME: ("path", "input_shape", "test_fraction", "resize", "seed", "threads"),
}
#: Keys the folder source writes into its description for the record, not as options.
RECORD_ONLY = ("layout", "fingerprint")

__all__ = ["SOURCES", "DataError", "Dataset", "get", "load", "names"]


def names():
    """The known source names, sorted."""
    return sorted(SOURCES)


def get(name):
    """The source module called ``name``; ValueError with a suggestion if there is none."""
    if name in SOURCES:
        return SOURCES[name]
    close = difflib.get_close_matches(str(name), names(), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ValueError(f"unknown dataset {name!r}{hint}; known: {', '.join(names())}")


def load(
    source,
    data_dir,
    mirrors=None,
    progress=None,
    decode_progress=None,
    test_only=False,
    **transfer,
):
    """The data set a name or a source description (``Dataset.source``) names.

    ``source``: "cifar10", or {"dataset": "folder", "path": ..., "input_shape": [...], ...}
    (the folder's options as in ``folder.load``); ``data_dir``: the download and decoding
    cache; ``mirrors``: for the downloaded sets (None: each one's defaults); ``progress``:
    a tqdm-like factory for downloads (bytes), ``decode_progress`` for decoding a folder
    (images); ``test_only``: for MNIST, read only the test files (an evaluation; the
    training set is then empty; the other sources read everything); ``transfer``:
    timeout, retries, backoff for downloads.
    """
    options = {"dataset": source} if isinstance(source, str) else dict(source)
    if "dataset" not in options:
        raise ValueError(f"a data source needs a 'dataset' key, got {source!r}")
    module = get(options.pop("dataset"))
    allowed = OPTIONS.get(module.NAME, ())
    for key in RECORD_ONLY if module is folder else ():
        options.pop(key, None)
    unknown = [key for key in options if key not in allowed]
    if unknown:
        takes = f"takes only {', '.join(allowed)}" if allowed else "takes no options"
        raise ValueError(f"dataset {module.NAME!r}: unknown option {unknown[0]!r} ({takes})")
    if module is folder:
        if "path" not in options:
            raise ValueError("dataset 'folder' needs a 'path'")
        return folder.load(data_dir=data_dir, progress=decode_progress, **options)
    if module is mnist:
        return mnist.load(data_dir, mirrors, progress, test_only=test_only)
    return module.load(data_dir, mirrors, progress, **transfer)
