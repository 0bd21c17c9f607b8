"""The prediction pass (``engine.inference``) against the layers' own evaluation forward
pass: the same numbers up to float rounding for every layer kind, for the fused steps
(convolution by output lines with ReLU and max pooling in either order, dense with ReLU)
and for the layers it hands to their own forward; and the same predictions on real MNIST."""

import numpy as np
import pytest

from numpycnn.engine import Sequential
from numpycnn.engine.inference import Plan, _Conv, _Dense, conv2d_lines
from numpycnn.engine.kernels import conv2d_forward


@pytest.mark.parametrize("group", [1, 2, 3, 4])
@pytest.mark.parametrize(
    "shape,filters,kernel,padding",
    [((1, 28, 28, 5), 8, 5, 0), ((8, 24, 24, 3), 8, 5, 0), ((3, 13, 11, 4), 6, 3, 1),
     ((2, 9, 9, 2), 4, 4, 2), ((4, 7, 7, 1), 5, 7, 0)],
)  # fmt: skip
def test_conv2d_lines_is_the_convolution_in_line_order(shape, filters, kernel, padding, group):
    rng = np.random.default_rng(sum(shape) + group)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((filters, shape[0], kernel, kernel))
    expected, _ = conv2d_forward(x, w, np.zeros(filters), 1, padding)  # (F, OH, OW, N)
    got = conv2d_lines(x, w, padding, group)  # (OH, F, OW, N)
    assert got.shape == (expected.shape[1], filters, *expected.shape[2:])
    np.testing.assert_allclose(got.transpose(1, 0, 2, 3), expected, rtol=1e-12, atol=1e-12)


def test_conv2d_lines_reads_any_strides():
    """The plan hands it NCHW input transposed (a strided view), as the user gave it."""
    rng = np.random.default_rng(0)
    nchw = rng.standard_normal((6, 2, 10, 10))
    w = rng.standard_normal((3, 2, 3, 3))
    expected, _ = conv2d_forward(np.ascontiguousarray(nchw.transpose(1, 2, 3, 0)), w, np.zeros(3))
    got = conv2d_lines(nchw.transpose(1, 2, 3, 0), w, group=2)
    np.testing.assert_allclose(got.transpose(1, 0, 2, 3), expected, rtol=1e-12, atol=1e-12)


C5 = {"type": "conv2d", "filters": 6, "kernel": 5}
POOL = {"type": "maxpool2d", "size": 2}
NETWORKS = {
    "reference": ([{"type": "conv2d", "filters": 8, "kernel": 5}, {"type": "relu"},
                   {"type": "conv2d", "filters": 8, "kernel": 5}, {"type": "relu"}, POOL,
                   {"type": "flatten"}, {"type": "dense", "units": 128}, {"type": "relu"},
                   {"type": "dense", "units": 10}], (1, 28, 28)),
    "pool before relu, odd lines": ([C5, POOL, {"type": "relu"}, {"type": "flatten"},
                                     {"type": "dense", "units": 10}], (1, 17, 15)),
    "overlapping pools, padding": ([{"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1},
                                    {"type": "relu"}, {"type": "maxpool2d", "size": 3, "stride": 2},
                                    {"type": "conv2d", "filters": 5, "kernel": 3},
                                    {"type": "maxpool2d", "size": 2, "stride": 1},
                                    {"type": "flatten"}, {"type": "dense", "units": 7}],
                                   (3, 12, 12)),
    "strided conv and others": ([{"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2},
                                 {"type": "leaky_relu"},
                                 {"type": "conv2d", "filters": 4, "kernel": 3},
                                 {"type": "tanh"}, {"type": "avgpool2d", "size": 2},
                                 {"type": "flatten"}, {"type": "dense", "units": 9},
                                 {"type": "sigmoid"}, {"type": "dense", "units": 4}], (2, 15, 15)),
    "batch norm and dropout": ([C5, POOL, {"type": "batchnorm2d"}, {"type": "relu"},
                                {"type": "conv2d", "filters": 8, "kernel": 3}, {"type": "relu"},
                                {"type": "relu"}, {"type": "flatten"},
                                {"type": "dense", "units": 16}, {"type": "batchnorm1d"},
                                {"type": "relu"}, {"type": "dropout", "p": 0.5},
                                {"type": "dense", "units": 10}], (1, 20, 20)),
    "three convolutions in a row, padded": ([
        {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1}, {"type": "relu"},
        {"type": "conv2d", "filters": 5, "kernel": 3, "padding": 2}, POOL, {"type": "relu"},
        {"type": "conv2d", "filters": 3, "kernel": 2}, {"type": "flatten"},
        {"type": "dense", "units": 6}], (2, 11, 9)),
    "dense only": ([{"type": "flatten"}, {"type": "dense", "units": 12}, {"type": "relu"},
                    {"type": "dense", "units": 3}, {"type": "softmax"}], (1, 6, 6)),
}  # fmt: skip


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_the_plan_computes_the_evaluation_forward_pass(name, dtype):
    layers, shape = NETWORKS[name]
    loss = "mean_squared_error" if layers[-1]["type"] == "softmax" else "softmax_cross_entropy"
    model = Sequential(layers, loss=loss, input_shape=shape, init="he_normal", dtype=dtype, seed=1)
    rng = np.random.default_rng(2)
    for layer in model.layers:  # batch norm's statistics away from their initial 0 and 1
        for key, value in layer.state.items():
            value[...] = (
                rng.uniform(0.5, 2.0, value.shape)
                if "var" in key
                else rng.normal(0, 1, value.shape)
            )
    model.eval()
    x = rng.standard_normal((7, *shape)).astype(dtype)
    expected = model.forward(x)
    plan = Plan(model.layers)
    got = plan(model._as_input(x))
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(got, expected, rtol=tol, atol=tol * np.abs(expected).max())
    assert got.dtype == expected.dtype
    probs = model.predict_proba(x, batch_size=3)
    np.testing.assert_allclose(probs, model.loss.probabilities(expected), rtol=tol, atol=tol)


def test_the_plan_fuses_what_it_says():
    layers, shape = NETWORKS["reference"]
    plan = Plan(Sequential(layers, input_shape=shape).layers)
    assert [type(s) for s in plan.steps[:2]] == [_Conv, _Conv]
    assert plan.steps[0].relu and plan.steps[0].pool is None and plan.steps[0].group == 1
    assert plan.steps[1].relu and plan.steps[1].pool is not None and plan.steps[1].group == 2
    assert plan.steps[0].lines_out and plan.steps[1].lines_in and not plan.steps[1].lines_out
    assert isinstance(plan.steps[3], _Dense) and plan.steps[3].relu
    assert isinstance(plan.steps[4], _Dense) and not plan.steps[4].relu
    assert len(plan.steps) == 5  # conv+relu, conv+relu+pool, flatten, dense+relu, dense


def test_a_new_plan_follows_parameter_updates_and_the_input_is_left_alone():
    layers, shape = NETWORKS["reference"]
    model = Sequential(layers, input_shape=shape, seed=0).eval()
    x = np.random.default_rng(0).standard_normal((4, *shape)).astype(np.float32)
    before = x.copy()
    plan = Plan(model.layers)
    first = plan(x)
    model.flat_params *= 1.5  # as an optimiser step does: in place
    later = Plan(model.layers)  # stacks the new weights
    np.testing.assert_allclose(later(x), model.forward(x), rtol=1e-5, atol=1e-7)
    assert not np.allclose(later(x), first)
    np.testing.assert_allclose(model.predict_proba(x), model.loss.probabilities(later(x)))
    np.testing.assert_array_equal(x, before)


def test_predictions_on_mnist_are_the_forward_pass_ones(mnist, reference_params_path):
    from numpycnn.modelfile import load_model

    saved = load_model(reference_params_path)
    model = saved.model.eval()
    from numpycnn.data import Normalization

    x = Normalization.from_dict(saved.normalization).norm(mnist.test_images[:2000])
    expected = np.concatenate([model.forward(x[i : i + 250]) for i in range(0, 2000, 250)])
    probs = model.predict_proba(x)
    np.testing.assert_allclose(probs, model.loss.probabilities(expected), rtol=1e-4, atol=1e-6)
    assert (probs.argmax(1) == expected.argmax(1)).all()
    assert (probs.argmax(1) == mnist.test_labels[:2000]).mean() > 0.97
    threaded = model.predict_proba(x, threads=2)
    np.testing.assert_array_equal(threaded, probs)
