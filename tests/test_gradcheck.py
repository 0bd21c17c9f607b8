"""Numerical gradient checks (float64, central differences) of every layer, activation and
loss, and of the whole reference network on real MNIST images; the checker's own ability to
fail; and the max-pool tie rule (first maximum in row-major order)."""

import numpy as np
import pytest

from numpycnn.engine import (
    AvgPool2D,
    BatchNorm1D,
    BatchNorm2D,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    gradcheck,
    losses,
    reference_network,
)
from numpycnn.engine.losses import LOSSES

TOL = 1e-6


@pytest.fixture(scope="module")
def mnist_batch(mnist):
    """Four real training images, normalised as the reference does, and their labels."""
    x = (mnist.train_images[:4].reshape(4, 1, 28, 28).astype(np.float64) - 33) / 78
    return x, mnist.train_labels[:4].astype(np.int64)


def assert_exact_check(result, sizes):
    """Every tensor fully checked (nothing skipped at a kink) and below tolerance."""
    assert set(result.errors) == set(sizes)
    for name, size in sizes.items():
        assert result.skipped[name] == 0, name
        assert result.checked[name] == size, name
        assert result.errors[name] < TOL, (name, result.errors[name])
    assert result.passed(TOL)


def layer_sizes(layer, input_shape):
    sizes = {"input": int(np.prod(input_shape))}
    sizes.update({k: p.size for k, p in layer.params.items()})
    return sizes


# ----- layers -----

# The kernels compute stride-1 convolutions of several channels by row shifts and the rest
# (one channel, or a stride) by im2col: the cases cover both, with and without padding.
CONV_CASES = [
    # (N, C, H, W), filters, kernel, stride, padding
    ((2, 1, 6, 6), 2, 3, 1, 0),
    ((2, 3, 7, 9), 4, 3, 2, 1),  # non-square, stride > 1 with padding
    ((2, 2, 4, 5), 3, 1, 1, 0),  # 1x1 kernel
    ((1, 2, 5, 5), 2, 5, 1, 2),  # "same" padding, kernel as large as the input
    ((2, 3, 8, 6), 2, 4, 3, 2),  # stride 3: the last rows and columns are never read
    ((3, 2, 5, 7), 3, 2, 2, 0),  # odd sides with stride 2
    ((2, 1, 9, 7), 3, 3, 2, 1),  # one input channel, stride 2, padding
    ((2, 2, 8, 8), 2, 2, 3, 1),  # stride larger than the kernel: inputs skipped
    ((1, 2, 5, 5), 2, 3, 1, 3),  # padding beyond the kernel: outputs of bias alone
]


@pytest.mark.parametrize("shape,filters,kernel,stride,padding", CONV_CASES)
def test_conv2d(shape, filters, kernel, stride, padding):
    layer = Conv2D(filters, kernel, stride=stride, padding=padding)
    result = gradcheck.check_layer(layer, shape)
    assert_exact_check(result, layer_sizes(layer, shape))
    assert set(result.errors) == {"input", "weight", "bias"}


POOL_CASES = [
    # (N, C, H, W), size, stride
    ((2, 2, 6, 6), 2, 2),
    ((2, 3, 7, 9), 3, 3),  # non-square, leftover rows and columns
    ((1, 2, 7, 7), 3, 2),  # overlapping windows
    ((2, 1, 5, 6), 2, 1),  # overlapping, stride 1
    ((1, 3, 8, 5), 3, 1),
    ((2, 2, 8, 9), 2, 3),  # stride larger than the window: inputs skipped
]


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize("shape,size,stride", POOL_CASES)
def test_pooling(cls, shape, size, stride):
    layer = cls(size, stride)
    result = gradcheck.check_layer(layer, shape)
    assert_exact_check(result, {"input": int(np.prod(shape))})


def test_dense():
    layer = Dense(5)
    result = gradcheck.check_layer(layer, (3, 7))
    assert_exact_check(result, {"input": 21, "weight": 35, "bias": 5})


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 4)])
def test_flatten(shape):
    layer = Flatten()
    result = gradcheck.check_layer(layer, shape)
    assert_exact_check(result, {"input": int(np.prod(shape))})


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 4)])
def test_flatten_keeps_nchw_order_whatever_the_memory(shape):
    """The flat rows are each sample's values in C order, as the reference flattens, and
    backward gives the gradient back in the input's shape and order."""
    x = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    inputs = [x]
    if len(shape) == 4:
        inputs.append(np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2))
    for given in inputs:
        layer = Flatten()
        out = layer.forward(given)
        np.testing.assert_array_equal(out, x.reshape(shape[0], -1))
        np.testing.assert_array_equal(layer.backward(out), x)


# ----- activations -----


@pytest.mark.parametrize(
    "layer,shape",
    [
        (ReLU(), (2, 3, 4, 5)),
        (LeakyReLU(), (2, 3, 4, 5)),
        (LeakyReLU(alpha=0.3), (4, 6)),
        (Sigmoid(), (2, 3, 4, 5)),
        (Tanh(), (2, 3, 4, 5)),
        (Softmax(), (4, 6)),
    ],
    ids=["relu", "leaky_relu", "leaky_relu_0.3", "sigmoid", "tanh", "softmax"],
)
def test_activation(layer, shape):
    result = gradcheck.check_layer(layer, shape)
    assert_exact_check(result, {"input": int(np.prod(shape))})


# ----- losses -----


def _loss_inputs(rng):
    """Per loss: outputs in the loss's domain, away from its kinks."""
    return {
        "softmax_cross_entropy": rng.standard_normal((5, 10)) * 3,
        "binary_cross_entropy": rng.uniform(0.05, 0.95, (5, 10)),
        "mean_squared_error": rng.standard_normal((5, 10)),
        "half_sum_squared_error": rng.standard_normal((5, 10)),
        "mean_absolute_error": rng.standard_normal((5, 10)),
    }


def test_every_loss_has_a_case():
    assert set(_loss_inputs(np.random.default_rng(0))) == set(LOSSES)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss(name):
    rng = np.random.default_rng(1)
    z = _loss_inputs(rng)[name]
    labels = rng.integers(0, 10, 5)
    assert gradcheck.check_loss(losses.get(name), z, labels) < TOL


def test_softmax_cross_entropy_large_logits():
    """Logits far beyond exp's range: the fused loss stays finite and its gradient exact."""
    rng = np.random.default_rng(2)
    z = rng.standard_normal((4, 10)) * 300
    labels = rng.integers(0, 10, 4)
    loss = losses.get("softmax_cross_entropy")
    assert np.isfinite(loss.forward(z, labels))
    assert gradcheck.check_loss(loss, z, labels) < TOL


# ----- the whole reference network -----


def test_reference_network(mnist_batch):
    x, labels = mnist_batch
    model = reference_network(dtype="float64")
    samples = 40
    result = gradcheck.check_model(model, x, labels, samples=samples)
    assert model.param_names == ["f1", "f2", "w3", "w4", "b1", "b2", "b3", "b4"]
    assert set(result.errors) == set(model.param_names)
    for name, param in zip(model.param_names, model.params):
        wanted = min(samples, param.size)
        # A few entries may straddle a ReLU or max-pool kink; most must be checked.
        assert result.checked[name] >= 0.9 * wanted, name
        assert result.checked[name] + result.skipped[name] == wanted
        assert result.errors[name] < TOL, (name, result.errors[name])


def test_reference_network_input_gradient(mnist_batch):
    """dL/dinput of the whole network (not part of check_model) by central differences."""
    x, labels = mnist_batch
    x = x.copy()
    model = reference_network(dtype="float64", seed=3)
    model.layers[0].needs_input_grad = True
    model.loss_on(x, labels)
    dx = model.backward()
    assert dx.shape == x.shape

    def switches():
        return [s.copy() for layer in model.layers for s in layer.switches()]

    base = switches()
    rng = np.random.default_rng(0)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, 40, replace=False)
    h, analytic, numeric = 1e-5, [], []
    for i in idx:
        old = flat[i]
        flat[i] = old + h
        plus = model.loss_on(x, labels)[0]
        same = all(np.array_equal(a, b) for a, b in zip(switches(), base))
        flat[i] = old - h
        minus = model.loss_on(x, labels)[0]
        same = same and all(np.array_equal(a, b) for a, b in zip(switches(), base))
        flat[i] = old
        if same:
            analytic.append(dx.reshape(-1)[i])
            numeric.append((plus - minus) / (2 * h))
    # Perturbing a pixel may break a tie between equal maxima over the uniform background:
    # a true kink, which the switches reveal; most pixels must still be checked.
    assert len(analytic) >= 20
    assert np.linalg.norm(analytic) > 0
    assert gradcheck.relative_error(analytic, numeric) < TOL


# ----- the checker can fail -----


class WrongWeightGradConv(Conv2D):
    """Conv2D whose weight gradient is off in a single entry."""

    def backward(self, grad):
        dx = super().backward(grad)
        self.grads["weight"][0, 0, 0, 0] += 1e-3
        return dx


class NoBiasGradConv(Conv2D):
    """Conv2D that forgets its bias gradient."""

    def backward(self, grad):
        dx = super().backward(grad)
        self.grads["bias"][...] = 0
        return dx


class WrongInputGradDense(Dense):
    """Dense whose input gradient is scaled by a tiny amount."""

    def backward(self, grad):
        return super().backward(grad) * (1 + 1e-4)


class ShiftedMaxPool(MaxPool2D):
    """Max pool whose input gradient lands one column too far to the right."""

    def backward(self, grad):
        return np.roll(super().backward(grad), 1, axis=3)


def test_checker_reports_wrong_weight_gradient():
    result = gradcheck.check_layer(WrongWeightGradConv(3, 3, stride=2, padding=1), (2, 2, 6, 6))
    assert result.errors["weight"] > TOL
    assert result.errors["bias"] < TOL
    assert result.errors["input"] < TOL
    assert not result.passed(TOL)


def test_checker_reports_missing_bias_gradient():
    result = gradcheck.check_layer(NoBiasGradConv(3, 3), (2, 2, 6, 6))
    assert result.errors["bias"] == pytest.approx(1.0)
    assert result.errors["weight"] < TOL
    assert not result.passed(TOL)


def test_checker_reports_wrong_input_gradient():
    result = gradcheck.check_layer(WrongInputGradDense(4), (3, 6))
    assert result.errors["input"] > TOL
    assert result.errors["weight"] < TOL
    assert not result.passed(TOL)


def test_checker_reports_misrouted_max_pool_gradient():
    result = gradcheck.check_layer(ShiftedMaxPool(2, 2), (2, 2, 4, 4))
    assert result.errors["input"] > 0.5
    assert not result.passed(TOL)


class HalfMSE(losses.MeanSquaredError):
    """MSE whose gradient misses its factor 2."""

    def backward(self):
        return super().backward() / 2


def test_checker_reports_wrong_loss_gradient():
    rng = np.random.default_rng(0)
    z, labels = rng.standard_normal((3, 4)), rng.integers(0, 4, 3)
    assert gradcheck.check_loss(HalfMSE(), z, labels) == pytest.approx(0.5, rel=1e-6)


def test_checker_reports_broken_layer_inside_a_model(mnist_batch):
    x, labels = mnist_batch
    model = reference_network(dtype="float64")
    dense = model.layers[6]
    original = dense.backward

    def backward(grad):
        dx = original(grad)
        dense.grads["bias"][...] *= 1.01
        return dx

    dense.backward = backward
    result = gradcheck.check_model(model, x, labels, samples=10)
    assert result.errors["b3"] > 1e-3
    assert result.errors["w3"] < TOL
    assert not result.passed(TOL)


def test_model_check_needs_float64(mnist_batch):
    x, labels = mnist_batch
    with pytest.raises(ValueError, match="float64"):
        gradcheck.check_model(reference_network(), x, labels)


# ----- the max-pool tie rule -----


def naive_maxpool_grad(x, grad, size, stride):
    """dL/dx by loops: each window's gradient to its first maximum in row-major order."""
    n, c, h, w = x.shape
    dx = np.zeros_like(x)
    for b in range(n):
        for ch in range(c):
            for i in range(grad.shape[2]):
                for j in range(grad.shape[3]):
                    best = None
                    for u in range(size):
                        for v in range(size):
                            value = x[b, ch, i * stride + u, j * stride + v]
                            if best is None or value > best[0]:
                                best = (value, u, v)
                    _, u, v = best
                    dx[b, ch, i * stride + u, j * stride + v] += grad[b, ch, i, j]
    return dx


def pool_grad(x, size, stride, grad=None):
    layer = MaxPool2D(size, stride)
    out = layer.forward(x)
    if grad is None:
        grad = np.arange(1, out.size + 1, dtype=x.dtype).reshape(out.shape)
    return layer.backward(grad), out, grad


def test_max_pool_ties_by_hand():
    x = np.array(
        [
            [1.0, 3.0, 5.0, 1.0, 0.0, 0.0],
            [3.0, 2.0, 2.0, 5.0, 0.0, 7.0],
            [-1.0, -1.0, 4.0, 4.0, 2.0, 9.0],
            [-1.0, -1.0, 4.0, 4.0, 9.0, 9.0],
        ]
    )[None, None]
    dx, out, grad = pool_grad(x, 2, 2)
    np.testing.assert_array_equal(out[0, 0], [[3.0, 5.0, 7.0], [-1.0, 4.0, 9.0]])
    expected = np.zeros((4, 6))
    expected[0, 1] = grad[0, 0, 0, 0]  # 3 at (0, 1) and (1, 0): the first is (0, 1)
    expected[0, 2] = grad[0, 0, 0, 1]  # 5 at (0, 0) and (1, 1) of the window
    expected[1, 5] = grad[0, 0, 0, 2]  # a single maximum
    expected[2, 0] = grad[0, 0, 1, 0]  # all four tie (negative)
    expected[2, 2] = grad[0, 0, 1, 1]  # all four tie
    expected[2, 5] = grad[0, 0, 1, 2]  # three tie: (0, 1), (1, 0), (1, 1)
    np.testing.assert_array_equal(dx[0, 0], expected)


def test_max_pool_all_zero_windows_after_relu():
    """All-zero windows (as after ReLU): one input per window, the window's top-left."""
    relu = ReLU()
    x = relu.forward(-np.ones((2, 3, 4, 6)))
    dx, _, grad = pool_grad(x, 2, 2)
    expected = np.zeros_like(x)
    expected[:, :, ::2, ::2] = grad
    np.testing.assert_array_equal(dx, expected)
    assert np.count_nonzero(dx) == grad.size


def test_max_pool_all_zero_overlapping_windows():
    """Overlapping windows of zeros: each window's gradient to its own top-left input."""
    x = np.zeros((1, 1, 5, 5))
    dx, _, grad = pool_grad(x, 3, 2)
    expected = np.zeros((5, 5))
    expected[::2, ::2][:2, :2] = grad[0, 0]
    np.testing.assert_array_equal(dx[0, 0], expected)


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 3), (3, 2), (2, 1), (3, 1)])
def test_max_pool_ties_match_loops(size, stride):
    """Inputs of a few integer values (ties everywhere), several channels, batch > 1."""
    rng = np.random.default_rng(size * 10 + stride)
    x = rng.integers(0, 3, (2, 3, 7, 8)).astype(np.float64)
    dx, _, grad = pool_grad(x, size, stride)
    np.testing.assert_array_equal(dx, naive_maxpool_grad(x, grad, size, stride))


# ----- a colour network: three input channels, padding, stride 2, both poolings -----

COLOUR_LAYERS = [
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1},  # 3 channels: line products
    {"type": "relu"},
    {"type": "conv2d", "filters": 6, "kernel": 3, "stride": 2, "padding": 1},  # im2col
    {"type": "tanh"},
    {"type": "maxpool2d", "size": 2, "stride": 2},
    {"type": "avgpool2d", "size": 2, "stride": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 10},
]
COLOUR_SHAPE = (3, 16, 16)


@pytest.fixture(scope="module")
def colour_batch():
    """Five random colour images (CIFAR-like: channels of different means) and labels."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((5, *COLOUR_SHAPE)) + np.array([0.5, -0.2, 0.1])[:, None, None]
    return x, rng.integers(0, 10, 5)


def test_colour_network(colour_batch):
    x, labels = colour_batch
    model = Sequential(
        COLOUR_LAYERS, input_shape=COLOUR_SHAPE, init="he_normal", dtype="float64", seed=5
    )
    assert model.shapes[0] == (4, 16, 16) and model.shapes[2] == (6, 8, 8)
    assert model.params[0].shape == (4, 3, 3, 3)
    samples = 40
    result = gradcheck.check_model(model, x, labels, samples=samples)
    assert set(result.errors) == {"f1", "f2", "w3", "b1", "b2", "b3"}
    for name, param in zip(model.param_names, model.params):
        wanted = min(samples, param.size)
        assert result.checked[name] >= 0.9 * wanted, name
        assert result.errors[name] < TOL, (name, result.errors[name])


def test_colour_network_input_gradient(colour_batch):
    """dL/dinput of every channel of the colour network, by central differences."""
    x, labels = colour_batch
    x = x.copy()
    model = Sequential(
        COLOUR_LAYERS, input_shape=COLOUR_SHAPE, init="he_normal", dtype="float64", seed=6
    )
    model.layers[0].needs_input_grad = True
    model.loss_on(x, labels)
    dx = model.backward()
    assert dx.shape == x.shape
    result = gradcheck.Result()
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(x.size, 60, replace=False))
    gradcheck._check_tensor(
        result, "input", lambda: model.loss_on(x, labels)[0], model.layers, dx, x, idx, 1e-5
    )
    assert result.checked["input"] >= 54
    # the sampled pixels cover all three channels
    assert set(np.unravel_index(idx, x.shape)[1]) == {0, 1, 2}
    assert result.errors["input"] < TOL


# ----- batch norm and dropout -----

BN_CASES = [(BatchNorm2D, (3, 2, 4, 5)), (BatchNorm2D, (2, 3, 1, 1)), (BatchNorm1D, (5, 4))]


@pytest.mark.parametrize("cls,shape", BN_CASES)
@pytest.mark.parametrize("training", [True, False])
def test_batchnorm(cls, shape, training):
    """Training: the whole derivation through the batch statistics; evaluation: the
    running statistics are constants."""
    layer = cls()
    layer.training = training
    result = gradcheck.check_layer(layer, shape)
    assert_exact_check(result, layer_sizes(layer, shape))


@pytest.mark.parametrize("shape", [(3, 2, 4, 4), (6, 5)])
def test_dropout_with_a_fixed_mask(shape):
    layer = Dropout(0.4)
    layer.training = True
    layer.key = (7, 3)
    result = gradcheck.check_layer(layer, shape)
    assert_exact_check(result, {"input": int(np.prod(shape))})
    assert (layer._mask == 0).any() and (layer._mask > 0).any()  # a real mask was checked


BN_NETWORK = [
    {"type": "conv2d", "filters": 4, "kernel": 5},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 16},
    {"type": "batchnorm1d"},
    {"type": "relu"},
    {"type": "dropout", "p": 0.3},
    {"type": "dense", "units": 10},
]


def test_batchnorm_network(mnist_batch):
    """A network with both batch norms and dropout, in training mode on real images: the
    biases before batch norm have a zero gradient (batch norm removes any shift), which
    the check sees as zero, not as noise."""
    x, labels = mnist_batch
    model = Sequential(BN_NETWORK, dtype="float64", init="he_normal", seed=1)
    result = gradcheck.check_model(model, x, labels, samples=30)
    assert model.param_names == ["f1", "g2", "w3", "g4", "w5", "b1", "b2", "b3", "b4", "b5"]
    for name, param in zip(model.param_names, model.params):
        assert result.checked[name] >= 0.8 * min(30, param.size), name
        assert result.errors[name] < TOL, (name, result.errors[name])
    assert np.abs(model.grads[model.param_names.index("b1")]).max() < 1e-12


def test_checker_reports_batchnorm_without_the_mean_term(mnist_batch, monkeypatch):
    """Leaving out the -sum(dy)/m term (the gradient through the batch mean) is caught."""
    x, labels = mnist_batch
    model = Sequential(BN_NETWORK, dtype="float64", init="he_normal", seed=1)
    bn = model.layers[1]
    real = bn.sync

    def no_mean(parts, forward):
        if forward:
            return parts if real is None else real(parts, forward)
        return np.stack([np.zeros_like(parts[0]), parts[1]])

    monkeypatch.setattr(bn, "sync", no_mean)
    result = gradcheck.check_model(model, x, labels, samples=20)
    assert result.errors["f1"] > 1e-3
    assert result.errors["g4"] < TOL  # the layers after it are still right
