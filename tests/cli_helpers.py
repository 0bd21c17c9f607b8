"""Helpers shared by the CLI tests: running a command, checking errors, small configs.

Most CLI tests swap the MNIST source's ``load_mnist`` for ``FakeLoader``, which records the data
directory and mirrors it is asked for and returns the real MNIST arrays read once per
session: it saves a copy, a SHA-256 check and a decompression per command. The real
download path is exercised by the eval reference tests, the Ctrl-C test and test_e2e.py.
"""

import copy
import functools
import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import yaml
from click.testing import CliRunner
from PIL import Image

from numpycnn import data
from numpycnn.cli.main import main
from numpycnn.modelfile import load_model

#: A network of 1,490 parameters that trains in a fraction of a second per epoch.
TINY_NETWORK = [
    {"type": "maxpool2d", "size": 2, "stride": 2},
    {"type": "conv2d", "filters": 4, "kernel": 3},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2, "stride": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 10},
]
TINY_PARAMS = 1490


def invoke(*args):
    """Run ``numpycnn ARGS`` in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(main, [str(a) for a in args])


def error_line(result, code=1):
    """The single ``Error: ...`` line of a failed command, after checking that it exited
    with ``code`` through SystemExit (no uncaught exception, no traceback)."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    if code == 1:  # ClickException: exactly one line on stderr
        (line,) = result.stderr.splitlines()
    else:  # UsageError: the usage, a hint, then the error line
        line = result.stderr.splitlines()[-1]
    assert line.startswith("Error: "), result.stderr
    return line.removeprefix("Error: ")


def write_config(path, network=TINY_NETWORK, **sections):
    """Write a YAML config with ``network`` and the given sections; returns its path."""
    path = Path(path)
    path.write_text(yaml.safe_dump({"network": network, **sections}, sort_keys=False))
    return path


def tiny_config(
    tmp_path,
    name="tiny.yaml",
    *,
    epochs=1,
    limit=300,
    validation=0,
    batch_size=50,
    seed=1,
    optimizer=None,
    runs_dir="runs",
    params="out.pkl",
    run_name=None,
):
    """A config for the tiny network whose outputs go under ``tmp_path``."""
    return write_config(
        tmp_path / name,
        data={"limit": limit, "validation": validation},
        training={
            "epochs": epochs,
            "batch_size": batch_size,
            "seed": seed,
            "optimizer": optimizer or {"name": "adam", "lr": 0.01},
            "schedule": {"name": "exponential"},  # a constant rate, whatever the length
        },
        output={
            "params": str(tmp_path / params),
            "runs_dir": str(tmp_path / runs_dir),
            **({} if run_name is None else {"name": run_name}),
        },
    )


@functools.cache
def real_mnist(mnist_dir):
    """The four real MNIST arrays, read from the test mirror once per session."""
    path = Path(mnist_dir)
    return data.MNIST(
        train_images=data.read_idx(path / data.TRAIN_IMAGES),
        train_labels=data.read_idx(path / data.TRAIN_LABELS).astype(np.int64),
        test_images=data.read_idx(path / data.TEST_IMAGES),
        test_labels=data.read_idx(path / data.TEST_LABELS).astype(np.int64),
    )


class FakeLoader:
    """Stands in for ``load_mnist``: records its arguments, returns the cached real data
    (the test set cut to ``test_limit`` images when given)."""

    def __init__(self, mnist_dir, test_limit=None):
        self.mnist_dir, self.test_limit, self.calls = mnist_dir, test_limit, []

    def __call__(self, data_dir, mirrors=None, progress=None, sets=("train", "test")):
        self.calls.append((Path(data_dir), list(mirrors or ())))
        mnist = real_mnist(self.mnist_dir)
        if "train" not in sets:  # as load_mnist: a set not asked for is None
            mnist = data.MNIST(None, None, mnist.test_images, mnist.test_labels)
        n = self.test_limit
        if n is None:
            return mnist
        return data.MNIST(
            mnist.train_images, mnist.train_labels, mnist.test_images[:n], mnist.test_labels[:n]
        )


def fake_mnist(monkeypatch, mnist_dir, test_limit=None):
    """Make every MNIST load (``train``, ``eval``, ``datasets.load("mnist")``) use a
    FakeLoader; returns it."""
    loader = FakeLoader(mnist_dir, test_limit)
    monkeypatch.setattr("numpycnn.datasets.mnist.load_mnist", loader)
    return loader


class ReusedEvaluation:
    """Stands in for ``training.evaluate``: the first call on given parameters and images
    computes the report, later identical calls return a copy of it (``reused`` counts them).

    The reference's float64 network takes seconds over the 10,000 test images; its text and
    JSON reports can share one evaluation without either command skipping any other step.
    """

    def __init__(self, evaluate):
        self.evaluate, self.reports, self.reused = evaluate, {}, 0

    def __call__(self, model, images, labels, **kwargs):
        digest = hashlib.sha256()
        for array in (*model.get_params(), images, labels):
            digest.update(str((array.dtype, array.shape)).encode())
            digest.update(np.ascontiguousarray(array).tobytes())
        key = (digest.hexdigest(), repr(sorted(kwargs.items())))
        if key in self.reports:
            self.reused += 1
        else:
            self.reports[key] = self.evaluate(model, images, labels, **kwargs)
        return copy.deepcopy(self.reports[key])


def params_of(path):
    """The parameter arrays stored in a model file."""
    return load_model(path).model.get_params()


def same_params(a, b):
    """Whether two model files hold identical parameters (bit for bit)."""
    pa, pb = params_of(a), params_of(b)
    return len(pa) == len(pb) and all(np.array_equal(x, y) for x, y in zip(pa, pb))


def last_json(result):
    """The JSON document a command printed on stdout (its only line)."""
    (line,) = result.stdout.splitlines()
    return json.loads(line)


class FakeTerminal(io.StringIO):
    """A stderr that claims to be a terminal, so that tqdm bars are drawn into it."""

    def isatty(self):
        return True


class Malicious:
    """Unpickling this would create ``marker`` (if the loader ran what the file names)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def malicious_pickle(path, marker):
    """Write a pickle that creates ``marker`` when loaded by a plain ``pickle.load``."""
    path.write_bytes(pickle.dumps(Malicious(marker)))
    return path


def variant(image, kind):
    """A 28x28 MNIST digit as a PIL image of another kind."""
    if kind == "plain":  # MNIST as it is: light on black, 8-bit grey
        return Image.fromarray(image)
    if kind == "inverted":  # dark ink on white paper
        return Image.fromarray(255 - image)
    if kind == "rgb":  # coloured ink on white
        ink = image[..., None] * np.array([0.2, 0.9, 0.5])
        return Image.fromarray((255 - ink).astype(np.uint8))
    if kind == "big":  # five times MNIST's size
        return Image.fromarray(image).resize((140, 140), Image.Resampling.BICUBIC)
    if kind == "rgba":  # a dark digit drawn on a transparent canvas
        rgba = np.zeros((28, 28, 4), np.uint8)
        rgba[..., :3], rgba[..., 3] = 20, image
        return Image.fromarray(rgba)
    raise ValueError(kind)


#: The kinds of image ``variant`` makes.
KINDS = ["plain", "inverted", "rgb", "big", "rgba"]


def digit_files(directory, mnist, count):
    """The first ``count`` MNIST test digits as PNG files, of each kind in turn:
    (paths, labels)."""
    paths = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        path = directory / f"test-{i}-{kind}.png"
        variant(mnist.test_images[i], kind).save(path)
        paths.append(path)
    return paths, mnist.test_labels[:count].tolist()
