"""Shared by the export tests: every config's network with small random weights, a network
of every layer type, the 2018 reference; and the format choice and output functions that
every format relies on."""

from pathlib import Path

import numpy as np
import pytest
from shape_helpers import mnist_as

from numpycnn.api import Model
from numpycnn.config import EXTENSIONS, load_config
from numpycnn.data import Normalization
from numpycnn.engine import Layer, Sequential, losses, optim
from numpycnn.export import ExportError, export, format_for
from numpycnn.export.common import OUTPUT_FUNCTIONS

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted(p for p in (ROOT / "configs").iterdir() if p.suffix.lower() in EXTENSIONS)
NORM = Normalization("standard", 33.318421449829934, 78.56748998339798)
#: Every layer type the engine has, with strides, padding and overlapping pools.
EVERY_LAYER = [
    {"type": "conv2d", "filters": 3, "kernel": 3, "stride": 2, "padding": 1},
    {"type": "leaky_relu", "alpha": 0.1},
    {"type": "avgpool2d", "size": 3, "stride": 2},
    {"type": "tanh"},
    {"type": "conv2d", "filters": 4, "kernel": 2, "padding": 2},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2, "stride": 1},
    {"type": "sigmoid"},
    {"type": "flatten"},
    {"type": "dense", "units": 12},
    {"type": "relu"},
    {"type": "dense", "units": 10},
    {"type": "softmax"},
]
#: Images per config round trip (the reference is checked on all 10,000).
COUNT = 300


_TRAINED = {}


def config_model(path, mnist):
    """The config's network, initialised by its own initialiser and trained briefly (8
    Adam steps on 256 real training images, so that its classes are not near ties), as a
    Model. Cached: every format's tests export the same models."""
    if path not in _TRAINED:
        cfg = load_config(path)
        t = cfg.training
        net = Sequential(
            cfg.network, loss=t.loss, init=t.init, dtype=t.dtype, seed=1,
            input_shape=cfg.data.shape,
        )  # fmt: skip
        adam = optim.Adam(lr=0.003)
        images = mnist_as(mnist.train_images[:256], cfg.data.shape)
        labels = mnist.train_labels.astype(np.int64)
        for i in range(0, 256, 32):
            net.train_step(NORM.norm(images[i : i + 32]), labels[i : i + 32], adam)
        _TRAINED[path] = Model(net, NORM)
    return _TRAINED[path]


def every_layer_model(dtype="float32", loss="mean_squared_error"):
    net = Sequential(EVERY_LAYER, loss=loss, init="glorot_uniform", dtype=dtype, seed=2)
    return Model(net, NORM)


def assert_agrees(actual, expected, atol=1e-5):
    """Probabilities within ``atol``; the same class wherever numpycnn's top two classes are
    further apart than ``atol`` (closer ones may swap by rounding alone). Returns the max
    difference."""
    diff = float(np.abs(actual - expected).max())
    assert diff <= atol, diff
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > atol
    assert clear.mean() > 0.9  # the comparison of classes covers nearly every image
    np.testing.assert_array_equal(actual.argmax(1)[clear], expected.argmax(1)[clear])
    return diff


class Doubler(Layer):
    """A layer no export format knows."""

    kind = "doubler"

    def forward(self, x):
        return 2 * x


def odd_model():
    net = Sequential(
        [{"type": "flatten"}, Doubler(), {"type": "dense", "units": 10}], loss="mean_squared_error"
    )
    return Model(net, NORM)


@pytest.mark.parametrize(
    "name, fmt",
    [("m.onnx", "onnx"), ("m.ONNX", "onnx"), ("w.pt", "torch"), ("w.pth", "torch"),
     ("m.safetensors", "safetensors")],
)  # fmt: skip
def test_format_from_extension(name, fmt):
    assert format_for(name) == fmt
    assert format_for("anything.bin", fmt) == fmt


def test_unknown_extension_or_format():
    with pytest.raises(ExportError, match=r"^model\.h5: unknown extension '\.h5' \(use \.onnx"):
        format_for("model.h5")
    with pytest.raises(ExportError, match="unknown extension '\\(none\\)'"):
        format_for("model")
    with pytest.raises(ExportError, match="unknown format 'keras'"):
        format_for("m.onnx", "keras")


@pytest.mark.parametrize("kind", sorted(losses.LOSSES))
def test_output_function_of_every_loss(kind):
    """What the exports append to the network is each loss's own ``probabilities``."""
    z = np.random.default_rng(0).standard_normal((5, 10))
    assert kind in OUTPUT_FUNCTIONS
    expected = losses.get(kind).probabilities(z)
    if OUTPUT_FUNCTIONS[kind] == "softmax":
        e = np.exp(z - z.max(1, keepdims=True))
        np.testing.assert_allclose(expected, e / e.sum(1, keepdims=True), rtol=1e-12)
    else:
        np.testing.assert_array_equal(expected, z)


@pytest.mark.parametrize("fmt", ["onnx", "torch", "safetensors"])
def test_a_layer_no_format_knows(tmp_path, fmt):
    if fmt != "safetensors":
        pytest.importorskip(fmt, reason=f"{fmt} not installed")
    out = tmp_path / "odd.out"
    with pytest.raises(ExportError, match=r"layer 1 \(doubler\): .* has no equivalent"):
        export(odd_model(), out, fmt)
    assert list(tmp_path.iterdir()) == []
