"""Where the inspector gets its test images: the model's own data source.

``data_loaders(data_source, data_dir, mirrors, config)`` gives the two callables an
``Inspector`` takes: ``test_set`` (the confusion matrix and the test-image lists) and
``train_set`` (the out-of-distribution cue's sample, MNIST only). Both load when first
called, once. MNIST reads only the files it needs (the test set is downloaded if missing;
the training images are only read, so that starting the page never waits for a
download); any other source goes through ``datasource.load_data``, its test split only.
"""

import threading

from ..data import DataError, load_mnist, resolve_data_dir, resolve_mirrors

__all__ = ["config_source", "data_loaders"]

#: The keys of a config's ``data:`` section that describe its source (``datasets.load``).
SOURCE_KEYS = ("dataset", "path", "input_shape", "test_fraction", "resize", "seed")


def config_source(config):
    """The data source a run's config dict names (its ``data:`` section), or None: MNIST."""
    cfg_data = (config if isinstance(config, dict) else {}).get("data") or {}
    if not isinstance(cfg_data, dict) or cfg_data.get("dataset") in (None, "mnist"):
        return None
    return {k: cfg_data[k] for k in SOURCE_KEYS if cfg_data.get(k) is not None}


def data_loaders(data_source=None, data_dir=None, mirrors=None, config=None):
    """(test_set, train_set) for a model trained on ``data_source`` (a model file's
    ``data_source``; None: MNIST); ``data_dir`` and ``mirrors`` as the commands take them,
    ``config`` the model's config dict (its ``data:`` section's defaults). ``train_set``
    is None for data other than MNIST."""
    cfg_data = (config if isinstance(config, dict) else {}).get("data") or {}
    directory = resolve_data_dir(data_dir, cfg_data.get("data_dir"))
    source = dict(data_source or {"dataset": "mnist"})
    if source.get("dataset", "mnist") == "mnist":
        return _mnist(directory, mirrors, cfg_data)
    return _other(source, directory, resolve_mirrors(mirrors, cfg_data.get("mirrors", ()))), None


def _mnist(directory, mirrors, cfg_data):
    lock, loaded = threading.Lock(), {}

    def mnist(which, download):
        with lock:
            if which not in loaded:
                try:
                    mirrors_ = resolve_mirrors(mirrors, cfg_data.get("mirrors", ()))
                    loaded[which] = load_mnist(
                        directory, mirrors_ if download else [], sets=(which,)
                    )
                except DataError:
                    if download:
                        raise
                    raise DataError(
                        f"the MNIST training files are not in {directory / 'mnist'} yet "
                        "(`numpycnn download`)"
                    ) from None
        return loaded[which]

    def test_set():
        test = mnist("test", download=True)
        return test.test_images, test.test_labels

    def train_set():
        return mnist("train", download=False).train_images

    return test_set, train_set


def _other(source, directory, mirrors):
    """The test split of ``source`` (``datasource.load_data``: the test images only),
    loaded on the first call."""
    from ..datasource import load_data

    lock, loaded = threading.Lock(), []

    def test_set():
        with lock:
            if not loaded:
                try:
                    ds = load_data(source, directory, mirrors, test_only=True)
                except ValueError as exc:  # a source description this version cannot load
                    raise DataError(str(exc)) from None
                loaded.append((ds.test_images, ds.test_labels))
        return loaded[0]

    return test_set
