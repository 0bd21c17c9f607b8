"""Every config in configs/ (found by glob, so a new file is covered at once) loads, builds
its network, passes the gradient check on real MNIST images, and takes a training step.
A config for another data set's shape (cifar10.yaml: 3x32x32) gets the MNIST images in
that shape (``shape_helpers.mnist_as``): the other sets cannot be downloaded here."""

import math
from pathlib import Path

import numpy as np
import pytest
from shape_helpers import mnist_as

from numpycnn.config import EXTENSIONS, load_config
from numpycnn.data import Normalization, split_train
from numpycnn.engine import Sequential, optim
from numpycnn.engine.gradcheck import check_model

CONFIGS = sorted(
    p
    for p in (Path(__file__).resolve().parent.parent / "configs").iterdir()
    if p.suffix.lower() in EXTENSIONS
)
TOL = 1e-6
SAMPLES = 12  # entries checked per parameter tensor: enough to catch a wrong derivative
STEP_BATCH = 16


def test_configs_found():
    names = {p.name for p in CONFIGS}
    assert {"escontrela.yaml", "escontrela.ini", "lenet-average.yaml", "murugan.yaml"} <= names
    assert {"rasheed-sigmoid.yaml", "rasheed-softmax.yaml", "slides-cnn.yaml"} <= names


@pytest.fixture(scope="module")
def mnist_train(mnist):
    """The real MNIST training images (uint8) and labels."""
    return mnist.train_images, mnist.train_labels.astype(np.int64)


@pytest.fixture(scope="module")
def normalised(mnist_train):
    """normalised(config, count): the first ``count`` training images, normalised as
    training with ``config`` would (statistics fitted on the config's training images)."""
    images, labels = mnist_train
    fitted = {}

    def normalise(config, count):
        d = config.data
        key = (d.normalization, d.limit, d.validation, d.shape)
        if key not in fitted:
            train_x = split_train(images, labels, d.limit, d.validation)[0]
            fitted[key] = Normalization.fit(d.normalization, mnist_as(train_x[:5000], d.shape))
        return fitted[key].norm(mnist_as(images[:count], d.shape))

    return normalise


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_gradient_check(path, mnist_train, normalised):
    """Float64 gradients of the whole network and its loss on 2 real images."""
    images, labels = mnist_train
    config = load_config(path)
    t = config.training
    model = Sequential(
        config.network, loss=t.loss, init=t.init, dtype="float64", seed=t.seed,
        input_shape=config.data.shape,
    )  # fmt: skip
    x = normalised(config, 2).astype(np.float64)
    result = check_model(model, x, labels[:2], samples=SAMPLES)
    assert set(result.errors) == set(model.param_names)
    for name, param in zip(model.param_names, model.params):
        wanted = min(SAMPLES, param.size)
        assert result.checked[name] + result.skipped[name] == wanted, name
        # Entries straddling a ReLU or max-pool kink are skipped; most must be checked.
        assert result.checked[name] >= wanted // 2, (name, result.skipped[name])
    assert result.max_error < TOL, result.errors


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_training_step(path, mnist_train, normalised):
    """One step of the config's optimiser, in its dtype, on real images: a finite loss,
    every parameter finite, and the parameters moved."""
    images, labels = mnist_train
    config = load_config(path)
    t = config.training
    model = Sequential(
        config.network, loss=t.loss, init=t.init, dtype=t.dtype, seed=t.seed,
        input_shape=config.data.shape,
    )  # fmt: skip
    optimizer = optim.get(t.optimizer.name, **t.optimizer.hyperparameters)
    x, y = normalised(config, STEP_BATCH), labels[:STEP_BATCH]
    before = model.get_params()
    loss, correct = model.train_step(x, y, optimizer)
    assert math.isfinite(loss)
    assert 0 <= correct <= STEP_BATCH
    assert np.isfinite(model.flat_params).all()
    moved = [not np.array_equal(p, b) for p, b in zip(model.params, before)]
    assert all(moved), [n for n, m in zip(model.param_names, moved) if not m]
