"""The engine's other contracts: the reference network's parameters, dtypes, seeding,
initialisers, layer specs and their errors, shapes, memory layouts, and a short training run
on real MNIST."""

import math

import numpy as np
import pytest

from numpycnn.engine import (
    AvgPool2D,
    Conv2D,
    Flatten,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sequential,
    Sigmoid,
    Softmax,
    Tanh,
    build_layer,
    init,
    losses,
    optim,
    reference_network,
)

REFERENCE_SHAPES = {
    "f1": (8, 1, 5, 5),
    "f2": (8, 8, 5, 5),
    "w3": (128, 800),
    "w4": (10, 128),
    "b1": (8, 1),
    "b2": (8, 1),
    "b3": (128, 1),
    "b4": (10, 1),
}

# Every layer type, with stride and padding, and initialisers named per layer.
MIXED_SPECS = [
    {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": 1, "init": "he_normal"},
    {"type": "leaky_relu", "alpha": 0.1},
    {"type": "avgpool2d", "size": 2, "stride": 1},
    {"type": "conv2d", "filters": 3, "kernel": 2},
    {"type": "tanh"},
    {"type": "maxpool2d", "size": 3, "stride": 2},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 6, "init": "glorot_uniform"},
    {"type": "sigmoid"},
    {"type": "dense", "units": 5},
    {"type": "softmax"},
]
MIXED_INPUT = (2, 13, 11)


def mixed_network(dtype="float32", loss="mean_squared_error", seed=0):
    return Sequential(MIXED_SPECS, loss=loss, input_shape=MIXED_INPUT, dtype=dtype, seed=seed)


def random_batch(shape, n=3, seed=0):
    return np.random.default_rng(seed).standard_normal((n,) + tuple(shape))


# ----- the reference network -----


def test_reference_parameters():
    model = reference_network()
    assert model.num_params == 105_634
    assert sum(p.size for p in model.params) == 105_634
    assert model.param_names == list(REFERENCE_SHAPES)
    assert [p.shape for p in model.params] == list(REFERENCE_SHAPES.values())
    assert [g.shape for g in model.grads] == list(REFERENCE_SHAPES.values())
    assert model.shapes == [
        (8, 24, 24),
        (8, 24, 24),
        (8, 20, 20),
        (8, 20, 20),
        (8, 10, 10),
        (800,),
        (128,),
        (128,),
        (10,),
    ]


def test_flat_buffer_in_reference_order():
    """The flat parameter buffer holds [f1, f2, w3, w4, b1, b2, b3, b4] back to back."""
    model = reference_network()
    model.flat_params[...] = np.arange(model.num_params)
    start = 0
    for p in model.params:
        np.testing.assert_array_equal(p.ravel(), np.arange(start, start + p.size))
        start += p.size


# ----- dtypes -----


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_reference_dtype(dtype):
    model = reference_network() if dtype == "float32" else reference_network(dtype="float64")
    assert model.dtype == np.dtype(dtype)
    assert all(p.dtype == np.dtype(dtype) for p in model.params + model.grads)
    x = random_batch((1, 28, 28)).astype(np.float64)
    loss, out = model.loss_on(x, np.array([1, 2, 3]))
    assert out.dtype == np.dtype(dtype)
    assert np.isfinite(loss)
    model.backward()
    assert model.flat_grads.dtype == np.dtype(dtype)
    assert np.any(model.flat_grads != 0)
    assert model.predict_proba(x).dtype == np.dtype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss_name", sorted(losses.LOSSES))
def test_every_layer_and_loss_keeps_the_dtype(dtype, loss_name):
    """Each layer's output and each backward gradient stays in the model's dtype."""
    model = mixed_network(dtype, loss=loss_name)
    want = np.dtype(dtype)
    model.layers[0].needs_input_grad = True
    out = random_batch(MIXED_INPUT).astype(want)
    for layer in model.layers:
        out = layer.forward(out)
        assert out.dtype == want, layer
    model.loss.forward(out, np.array([0, 3, 4]))
    grad = model.loss.backward()
    assert grad.dtype == want
    for layer in reversed(model.layers):
        grad = layer.backward(grad)
        assert grad.dtype == want, layer
        for g in layer.grads.values():
            assert g.dtype == want


def test_float32_agrees_with_float64():
    """Same seed, same draws in either dtype; float32 results agree to single precision."""
    x = random_batch((1, 28, 28), n=4, seed=6)
    labels = np.array([3, 1, 4, 1])
    results = []
    for dtype in ("float32", "float64"):
        model = reference_network(dtype=dtype, seed=1, init="he_normal")
        loss, out = model.loss_on(x, labels)
        model.backward()
        grads = [g.copy() for g in model.grads]
        results.append((model.get_params(), loss, np.array(out), grads))
    (p32, loss32, out32, g32), (p64, loss64, out64, g64) = results
    for a, b in zip(p32, p64):
        np.testing.assert_array_equal(a, b.astype(np.float32))
    assert loss32 == pytest.approx(loss64, rel=1e-4)
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-4 * np.abs(out64).max())
    for name, a, b in zip(reference_network().param_names, g32, g64):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * np.abs(b).max(), err_msg=name)


def test_unsupported_dtype():
    with pytest.raises(ValueError, match="dtype"):
        reference_network(dtype="float16")


# ----- seeding -----


def test_same_seed_same_parameters():
    a, b = reference_network(seed=7), reference_network(seed=7)
    for p, q in zip(a.params, b.params):
        np.testing.assert_array_equal(p, q)
    x = random_batch((1, 28, 28))
    np.testing.assert_array_equal(a.forward(x), b.forward(x))


def test_different_seed_different_parameters():
    a, b = reference_network(seed=7), reference_network(seed=8)
    for name, p, q in zip(a.param_names, a.params, b.params):
        if name.startswith("b"):
            np.testing.assert_array_equal(p, q)  # zero biases either way
        else:
            assert not np.array_equal(p, q), name


def test_initialise_redraws_from_seed():
    model = reference_network(seed=3)
    first = model.get_params()
    model.initialise(4)
    assert not np.array_equal(model.params[0], first[0])
    model.initialise(3)
    for p, q in zip(model.params, first):
        np.testing.assert_array_equal(p, q)


# ----- initialisers -----


def test_reference_network_initial_statistics():
    params = dict(zip(REFERENCE_SHAPES, reference_network(dtype="float64", seed=1).params))
    assert params["f1"].std() == pytest.approx(1 / math.sqrt(200), rel=0.2)
    assert params["f2"].std() == pytest.approx(1 / math.sqrt(1600), rel=0.08)
    assert params["w3"].std() == pytest.approx(0.01, rel=0.02)
    assert params["w4"].std() == pytest.approx(0.01, rel=0.08)
    for name in ("b1", "b2", "b3", "b4"):
        assert not params[name].any(), name


def draws(initialiser, shape, count, seed=0):
    rng = np.random.default_rng(seed)
    return np.stack([initialiser(shape, rng) for _ in range(count)])


@pytest.mark.parametrize(
    "shape,count,std",
    [((8, 1, 5, 5), 500, 1 / math.sqrt(200)), ((8, 8, 5, 5), 60, 1 / math.sqrt(1600))],
)
def test_reference_filters(shape, count, std):
    w = draws(init.reference, shape, count)
    assert w.shape == (count,) + shape
    assert w.std() == pytest.approx(std, rel=0.02)
    assert abs(w.mean()) < 0.02 * std


def test_reference_dense():
    w = init.reference((128, 800), np.random.default_rng(0))
    assert w.shape == (128, 800)
    assert w.std() == pytest.approx(0.01, rel=0.02)
    assert abs(w.mean()) < 0.0002


# Uniform rules U[-a, a], a = sqrt(numerator / (fan_in + fan_out)).
UNIFORM_RULES = {"glorot_uniform": 6.0, "fan_sum_uniform": 1.0}


def test_every_initialiser_is_tested():
    assert set(init.INITIALISERS) == {"reference", "he_normal"} | set(UNIFORM_RULES)


@pytest.mark.parametrize("name", sorted(UNIFORM_RULES))
@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (300, 200)])
def test_uniform_initialisers(name, shape):
    fan_in = shape[1] * math.prod(shape[2:])
    fan_out = shape[0] * math.prod(shape[2:])
    bound = math.sqrt(UNIFORM_RULES[name] / (fan_in + fan_out))
    w = init.get(name)(shape, np.random.default_rng(0))
    assert w.shape == shape
    assert np.abs(w).max() <= bound
    assert np.abs(w).max() > 0.99 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert abs(w.mean()) < 0.02 * bound


@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (256, 400)])
def test_he_normal(shape):
    fan_in = shape[1] * math.prod(shape[2:])
    w = init.he_normal(shape, np.random.default_rng(0))
    assert w.shape == shape
    assert w.std() == pytest.approx(math.sqrt(2 / fan_in), rel=0.02)
    assert abs(w.mean()) < 0.02 * math.sqrt(2 / fan_in)


def test_fans():
    assert init.fans((8, 3, 5, 4)) == (60, 160)
    assert init.fans((128, 800)) == (800, 128)


def test_model_initialiser_choice():
    """The model's init applies to layers that name none; a layer's own init wins."""
    model = mixed_network("float64", seed=2)
    conv1, conv2, dense1, dense2 = (model.layers[i].params["weight"] for i in (0, 3, 8, 10))
    assert conv1.std() == pytest.approx(math.sqrt(2 / 18), rel=0.35)  # he_normal, fan_in 18
    fan_in, fan_out = dense1.shape[1], dense1.shape[0]
    assert np.abs(dense1).max() <= math.sqrt(6 / (fan_in + fan_out))  # glorot_uniform
    assert conv2.std() == pytest.approx(1 / math.sqrt(conv2.size), rel=0.35)  # reference
    assert dense2.std() == pytest.approx(0.01, rel=0.35)  # reference


def test_unknown_initialiser():
    with pytest.raises(ValueError, match="nonsense"):
        reference_network(init="nonsense")
    with pytest.raises(ValueError, match="nonsense"):
        Sequential([{"type": "dense", "units": 3, "init": "nonsense"}], input_shape=(4,))


# ----- layer specs -----


def test_spec_round_trip():
    model = mixed_network("float64", seed=5)
    again = Sequential(
        model.specs(), loss="mean_squared_error", input_shape=MIXED_INPUT, dtype="float64", seed=5
    )
    assert again.specs() == model.specs()
    assert [type(a) for a in again.layers] == [type(b) for b in model.layers]
    assert again.shapes == model.shapes
    assert again.param_names == model.param_names
    assert again.num_params == model.num_params
    for p, q in zip(again.params, model.params):
        np.testing.assert_array_equal(p, q)
    x = random_batch(MIXED_INPUT)
    np.testing.assert_array_equal(again.forward(x), model.forward(x))


def test_reference_spec_round_trip():
    model = reference_network()
    again = Sequential(model.specs())
    assert again.specs() == model.specs()
    assert again.shapes == model.shapes
    assert again.num_params == model.num_params


def test_aliases():
    assert isinstance(build_layer({"type": "conv", "filters": 2, "kernel": 3}), Conv2D)
    assert build_layer({"type": "maxpool", "size": 2}).spec()["type"] == "maxpool2d"
    assert build_layer({"type": "avgpool"}).spec() == {"type": "avgpool2d", "size": 2, "stride": 2}
    assert build_layer({"type": "fc", "units": 3}).spec() == {"type": "dense", "units": 3}


@pytest.mark.parametrize("spec", [{"type": "conv3d"}, {"type": "Dense", "units": 3}])
def test_unknown_layer_type(spec):
    with pytest.raises(ValueError, match=spec["type"]):
        build_layer(spec)


@pytest.mark.parametrize("spec", [{"filters": 3}, "relu", None])
def test_spec_without_type(spec):
    with pytest.raises(ValueError, match="type"):
        build_layer(spec)


@pytest.mark.parametrize(
    "spec,key",
    [
        ({"type": "conv2d", "filters": 2, "kernel": 3, "dilation": 2}, "dilation"),
        ({"type": "dense", "units": 3, "activation": "relu"}, "activation"),
        ({"type": "relu", "alpha": 0.1}, "alpha"),
        ({"type": "maxpool2d", "size": 2, "padding": 1}, "padding"),
        ({"type": "conv2d", "kernel": 3}, "filters"),  # missing
    ],
)
def test_unknown_or_missing_key(spec, key):
    with pytest.raises(ValueError, match=key) as info:
        build_layer(spec)
    assert spec["type"] in str(info.value)


@pytest.mark.parametrize(
    "spec,key",
    [
        ({"type": "conv2d", "filters": 0, "kernel": 3}, "filters"),
        ({"type": "conv2d", "filters": 2, "kernel": -1}, "kernel"),
        ({"type": "conv2d", "filters": 2, "kernel": 2.5}, "kernel"),
        ({"type": "conv2d", "filters": True, "kernel": 3}, "filters"),
        ({"type": "conv2d", "filters": 2, "kernel": 3, "stride": 0}, "stride"),
        ({"type": "conv2d", "filters": 2, "kernel": 3, "padding": -1}, "padding"),
        ({"type": "dense", "units": "8"}, "units"),
        ({"type": "maxpool2d", "size": 0}, "size"),
        ({"type": "avgpool2d", "size": 2, "stride": 0}, "stride"),
        ({"type": "leaky_relu", "alpha": -0.1}, "alpha"),
        ({"type": "leaky_relu", "alpha": "big"}, "alpha"),
    ],
)
def test_bad_values(spec, key):
    with pytest.raises(ValueError, match=key):
        build_layer(spec)


# ----- shapes -----


def out_side(size, kernel, stride=1, padding=0):
    return (size + 2 * padding - kernel) // stride + 1


@pytest.mark.parametrize(
    "c,h,w,filters,kernel,stride,padding",
    [
        (1, 28, 28, 8, 5, 1, 0),
        (3, 13, 10, 4, 3, 2, 1),
        (2, 9, 16, 5, 4, 3, 2),
        (2, 7, 7, 3, 7, 1, 0),
        (4, 6, 11, 2, 1, 2, 0),
        (1, 5, 5, 2, 3, 1, 3),
    ],
)
def test_conv_shapes(c, h, w, filters, kernel, stride, padding):
    layer = Conv2D(filters, kernel, stride=stride, padding=padding)
    model = Sequential([layer], loss=None, input_shape=(c, h, w))
    expected = (filters, out_side(h, kernel, stride, padding), out_side(w, kernel, stride, padding))
    assert model.output_shape == expected
    out = model.forward(random_batch((c, h, w), n=2))
    assert out.shape == (2,) + expected
    assert layer.backward(np.ones(out.shape, dtype=out.dtype)) is None  # first layer: no dx
    assert layer.grads["weight"].shape == (filters, c, kernel, kernel)


@pytest.mark.parametrize("cls", [MaxPool2D, AvgPool2D])
@pytest.mark.parametrize(
    "c,h,w,size,stride", [(8, 20, 20, 2, 2), (3, 7, 9, 3, 2), (2, 5, 6, 2, 1), (1, 9, 4, 4, 4)]
)
def test_pool_shapes(cls, c, h, w, size, stride):
    model = Sequential([cls(size, stride)], loss=None, input_shape=(c, h, w))
    expected = (c, out_side(h, size, stride), out_side(w, size, stride))
    assert model.output_shape == expected
    assert model.forward(random_batch((c, h, w), n=2)).shape == (2,) + expected


def test_mixed_network_shapes():
    model = mixed_network()
    x = random_batch(MIXED_INPUT, n=4)
    out = x.astype(np.float32)
    for layer, shape in zip(model.layers, model.shapes):
        out = layer.forward(out)
        assert out.shape == (4,) + shape, layer


@pytest.mark.parametrize(
    "layer,input_shape",
    [(Conv2D(2, 5), (1, 4, 9)), (MaxPool2D(3), (1, 9, 2)), (AvgPool2D(4), (2, 3, 3))],
)
def test_window_too_large(layer, input_shape):
    with pytest.raises(ValueError, match="does not fit"):
        Sequential([layer], loss=None, input_shape=input_shape)


def test_dense_needs_flat_input():
    with pytest.raises(ValueError, match="flatten"):
        Sequential([{"type": "dense", "units": 3}], input_shape=(1, 4, 4))


@pytest.mark.parametrize("shape", [(2, 1, 27, 28), (2, 3, 28, 28), (2, 28, 27), (2, 784), (784,)])
def test_input_shape_mismatch(shape):
    model = reference_network()
    with pytest.raises(ValueError, match="does not match"):
        model.forward(np.zeros(shape))


def test_input_without_channel_axis():
    model = reference_network()
    x = random_batch((28, 28), n=2)
    np.testing.assert_array_equal(model.forward(x), model.forward(x[:, None]))


# ----- parameters -----


def test_set_params_round_trip():
    model = reference_network(dtype="float64")
    new = [np.random.default_rng(i).standard_normal(p.shape) for i, p in enumerate(model.params)]
    model.set_params(new)
    got = model.get_params()
    for p, q in zip(got, new):
        np.testing.assert_array_equal(p, q)
    got[0][...] = 0  # copies: the model is untouched
    np.testing.assert_array_equal(model.params[0], new[0])


@pytest.mark.parametrize("index,name", [(0, "f1"), (3, "w4"), (6, "b3")])
def test_set_params_rejects_wrong_shape(index, name):
    model = reference_network()
    params = model.get_params()
    params[index] = params[index].T if params[index].ndim == 2 else params[index][:, :, :4]
    with pytest.raises(ValueError, match=name):
        model.set_params(params)


def test_set_params_rejects_wrong_count():
    model = reference_network()
    with pytest.raises(ValueError, match="8"):
        model.set_params(model.get_params()[:7])


# ----- memory layouts -----


def layouts(x):
    """The same NCHW values as: a C-contiguous array, an NCHW view of channels-last memory,
    a Fortran-ordered array and a strided slice."""
    channels_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    padded = np.zeros(x.shape[:3] + (2 * x.shape[3],))
    padded[..., ::2] = x
    return {
        "nchw": np.ascontiguousarray(x),
        "channels_last": channels_last,
        "fortran": np.asfortranarray(x),
        "strided": padded[..., ::2],
    }


LAYOUT_LAYERS = [
    lambda: Conv2D(3, 3, stride=2, padding=1),
    lambda: Conv2D(4, 2),
    lambda: MaxPool2D(2),
    lambda: MaxPool2D(3, 2),
    lambda: AvgPool2D(2, 1),
    lambda: ReLU(),
    lambda: LeakyReLU(0.2),
    lambda: Sigmoid(),
    lambda: Tanh(),
    lambda: Softmax(),
    lambda: Flatten(),
]


@pytest.mark.parametrize("make", LAYOUT_LAYERS)
def test_layer_layouts(make):
    """Forward and backward give the same numbers whatever the memory order of the input
    and of the upstream gradient."""
    x = random_batch((2, 7, 6), n=2, seed=1)
    results = []
    for x_in in layouts(x).values():
        layer = make()
        Sequential([layer], loss=None, input_shape=x.shape[1:], dtype="float64", seed=0)
        layer.needs_input_grad = True
        out = layer.forward(x_in)
        up = np.random.default_rng(2).standard_normal(out.shape)
        up_views = layouts(up).values() if up.ndim == 4 else [up]
        for up_in in up_views:
            dx = layer.backward(up_in)
            results.append((np.array(out), np.array(dx), [g.copy() for g in layer.grads.values()]))
    first = results[0]
    for out, dx, grads in results[1:]:
        np.testing.assert_allclose(out, first[0], rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(dx, first[1], rtol=1e-13, atol=1e-14)
        for g, g0 in zip(grads, first[2]):
            np.testing.assert_allclose(g, g0, rtol=1e-13, atol=1e-14)


def test_conv_output_feeds_next_layer_either_way():
    """A conv output handed on as it is, or as a C-contiguous copy, gives the same results."""
    x = random_batch((3, 9, 8), n=2, seed=3)
    results = []
    for contiguous in (False, True):
        model = Sequential(
            [Conv2D(4, 3), MaxPool2D(2), Conv2D(2, 2, padding=1), AvgPool2D(2)],
            loss=None,
            input_shape=(3, 9, 8),
            dtype="float64",
            seed=1,
        )
        out = x
        for layer in model.layers:
            out = layer.forward(out)
            if contiguous:
                out = np.ascontiguousarray(out)
        up = np.random.default_rng(4).standard_normal(out.shape)
        g = up
        for layer in reversed(model.layers):
            g = layer.backward(g)
            if contiguous and g is not None:
                g = np.ascontiguousarray(g)
        results.append((np.array(out), model.flat_grads.copy()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-13, atol=1e-14)


def test_reference_network_input_layouts():
    x = random_batch((1, 28, 28), n=3, seed=5)
    labels = np.array([0, 1, 2])
    results = []
    for x_in in layouts(x).values():
        model = reference_network(dtype="float64")
        loss, out = model.loss_on(x_in, labels)
        model.backward()
        results.append((loss, np.array(out), model.flat_grads.copy()))
    for loss, out, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], rel=1e-13)
        np.testing.assert_allclose(out, results[0][1], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads, results[0][2], rtol=1e-10, atol=1e-14)


# ----- a short training run on real MNIST -----


@pytest.fixture(scope="module")
def mnist_subset(mnist):
    """The first 10,000 training and 1,000 test images, normalised by the training subset's
    integer mean and standard deviation."""
    train, test = mnist.train_images[:10_000], mnist.test_images[:1_000]
    train_labels, test_labels = mnist.train_labels[:10_000], mnist.test_labels[:1_000]
    mean, std = int(train.mean()), int(train.std())
    assert (mean, std) == (33, 78)

    def prep(images):
        return ((images.astype(np.float32) - mean) / std).reshape(-1, 1, 28, 28)

    return prep(train), train_labels.astype(np.int64), prep(test), test_labels.astype(np.int64)


def test_short_training_run(mnist_subset):
    x, y, x_test, y_test = mnist_subset
    model = reference_network(seed=0)
    optimizer = optim.Adam(1e-3)
    rng = np.random.default_rng(0)
    initial = model.loss_on(x_test, y_test)[0]
    assert initial == pytest.approx(math.log(10), abs=0.05)  # near-uniform outputs at start
    step_losses = []
    for _ in range(300):
        idx = rng.integers(0, x.shape[0], 32)
        loss, correct = model.train_step(x[idx], y[idx], optimizer)
        assert 0 <= correct <= 32
        step_losses.append(loss)
    assert optimizer.t == 300
    assert np.mean(step_losses[-30:]) < 0.5 * np.mean(step_losses[:30])
    final = model.loss_on(x_test, y_test)[0]
    accuracy = np.mean(model.predict(x_test) == y_test)
    # Measured: test loss 2.30 -> 0.26, accuracy 92.2% (seeds 1 and 2: 92.1%, 93.1%).
    assert final < 0.45
    assert accuracy > 0.90


@pytest.mark.parametrize("threads,batch_size", [(2, 64), (3, 128), (8, 256)])
def test_threaded_prediction_matches_serial(
    mnist_subset, reference_params_path, threads, batch_size
):
    """Blocks shared among threads (uneven shares, more threads than blocks) give the
    serial scores, in order, and leave the model able to train."""
    from numpycnn.modelfile import load_model

    model = load_model(reference_params_path).model
    x, y = mnist_subset[2], mnist_subset[3]
    serial = model.predict_proba(x, batch_size=batch_size)
    threaded = model.predict_proba(x, batch_size=batch_size, threads=threads)
    np.testing.assert_allclose(threaded, serial, rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(threaded.argmax(axis=1), serial.argmax(axis=1))
    assert np.mean(model.predict(x, threads=threads) == y) > 0.97
    # The model's own layers still hold a consistent forward/backward pair.
    loss, _ = model.loss_on(x[:16], y[:16])
    model.backward()
    assert np.isfinite(loss) and np.any(model.flat_grads != 0)


def test_prediction_of_no_images():
    model = reference_network()
    for threads in (1, 2):
        out = model.predict_proba(np.zeros((0, 1, 28, 28), np.float32), threads=threads)
        assert out.shape == (0, 10) and out.dtype == model.dtype


def test_draw_false_leaves_the_weights_to_be_set_and_seed_none_still_draws():
    from numpycnn.engine import Sequential

    spec = [{"type": "conv2d", "filters": 2, "kernel": 3}, {"type": "batchnorm2d"},
            {"type": "flatten"}, {"type": "dense", "units": 3}]  # fmt: skip
    blank = Sequential(spec, input_shape=(1, 6, 6), draw=False)
    assert not blank.layers[0].params["weight"].any() and not blank.layers[3].params["weight"].any()
    assert (blank.layers[1].params["weight"] == 1).all()  # batch norm's gamma, as always
    drawn = [Sequential(spec, input_shape=(1, 6, 6), seed=None).flat_params for _ in range(2)]
    assert drawn[0].any() and not np.array_equal(drawn[0], drawn[1])  # fresh randomness
