"""The backward pass in numbers (``inspector.backward_numbers``): each unit's dQ/da and
each weight's dQ/dw, recomputed in float64 by the papers' rules, must equal float64 central
differences of Q, for a unit of every layer kind, for a class score and for the loss."""

from pathlib import Path

import numpy as np
import pytest

from numpycnn.config import load_config
from numpycnn.data import Normalization
from numpycnn.engine import Sequential, losses
from numpycnn.inspector.backward_numbers import unit_backward, weight_backward
from numpycnn.inspector.papers import EQUATIONS
from numpycnn.inspector.tracing import InspectionError, trace

#: conv (padded), relu, overlapping max pooling, strided conv, tanh, overlapping average
#: pooling, flatten, dense, sigmoid, dense, leaky relu, dense: every kind but softmax
DEEP = [
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 3, "stride": 2},
    {"type": "conv2d", "filters": 3, "kernel": 2, "stride": 1},
    {"type": "tanh"},
    {"type": "avgpool2d", "size": 2, "stride": 1},
    {"type": "flatten"},
    {"type": "dense", "units": 6},
    {"type": "sigmoid"},
    {"type": "dense", "units": 5},
    {"type": "leaky_relu", "alpha": 0.1},
    {"type": "dense", "units": 4},
]
#: a softmax layer with another loss on its probabilities
SOFTMAX = [{"type": "flatten"}, {"type": "dense", "units": 5}, {"type": "softmax"}]


def network(specs, loss, shape, seed):
    model = Sequential(
        specs, loss=loss, input_shape=shape, init="he_normal", dtype="float64", seed=seed
    )
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if "bias" in layer.params:
            layer.params["bias"][...] = rng.normal(0, 0.1, layer.params["bias"].shape)
    x = rng.normal(0, 1, (1, *shape))
    return model, x


def quantity(model, out, target, label):
    if label is None:
        return out[0, target]
    return losses.get(model.loss.kind).forward(out, np.array([label]))


def numeric_unit(model, x, index, unit, target, label, eps=1e-6):
    """dQ/d(output of layer index)[unit] by central differences: the rest of the network
    run from the perturbed output."""
    out = x
    for layer in model.layers[: index + 1]:
        out = layer.forward(out)
    base = np.array(out)

    def q(delta):
        a = base.copy()
        a[(0, *unit)] += delta
        for layer in model.layers[index + 1 :]:
            a = layer.forward(a)
        return quantity(model, a, target, label)

    return (q(eps) - q(-eps)) / (2 * eps)


def numeric_weight(model, x, index, param, weight, target, label, eps=1e-6):
    p = model.layers[index].params[param]
    where = tuple(weight) if param == "weight" else (weight[0], 0)
    keep = p[where]
    values = []
    for d in (eps, -eps):
        p[where] = keep + d
        values.append(quantity(model, model.forward(x), target, label))
    p[where] = keep
    return (values[0] - values[1]) / (2 * eps)


def units_of(out, rng):
    """The unit with the largest |value| and a random one."""
    shape = out.shape[1:]
    return [
        [int(v) for v in np.unravel_index(int(np.argmax(np.abs(out[0]))), shape)],
        [int(rng.integers(n)) for n in shape],
    ]


def check_unit(model, x, index, unit, target, label):
    tr = trace(model, x)
    r = unit_backward(tr, index, unit, target=target, label=label)
    assert r["clicked"]["layer"] == index and r["unit"] == unit
    step = next(s for s in r["steps"] if s["layer"] == index)
    expected = numeric_unit(model, x, index, unit, target, label)
    assert step["value"] == pytest.approx(expected, rel=1e-6, abs=1e-9), step["rule"]
    assert step["engine"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    assert abs(step["difference"]) <= 1e-12 * max(1.0, abs(step["value"]))
    for s in r["steps"]:
        assert s["rule"] in EQUATIONS
    return r


def check_every_layer(model, x, target, label, rng):
    """``check_unit`` for two units of every layer's output; the rules their steps used."""
    outputs = trace(model, x).outputs
    rules = set()
    for index in range(len(model.layers)):
        for unit in units_of(outputs[index], rng):
            r = check_unit(model, x, index, unit, target, label)
            rules.update(s["rule"] for s in r["steps"])
    return rules


@pytest.mark.parametrize(("target", "label"), [(2, None), (None, 1)])
def test_every_units_gradient_agrees_with_central_differences(target, label):
    model, x = network(DEEP, "softmax_cross_entropy", (2, 10, 10), seed=3)
    rng = np.random.default_rng(0)
    rules = check_every_layer(model, x, target, label, rng)
    expected = {"conv_input", "relu", "maxpool", "tanh", "avgpool", "flatten", "dense_input"}
    expected |= {"sigmoid", "leaky_relu", "score" if label is None else "softmax_cross_entropy"}
    assert rules == expected


def test_softmax_layer_and_another_loss():
    model, x = network(SOFTMAX, "mean_squared_error", (1, 4, 4), seed=5)
    rules = set()
    for index in range(3):
        for unit in units_of(trace(model, x).outputs[index], np.random.default_rng(1)):
            r = check_unit(model, x, index, unit, None, 3)
            rules.update(s["rule"] for s in r["steps"])
    assert rules == {"dense_input", "softmax", "loss"}  # flatten is first: it feeds dense


def test_conv_followed_by_relu_shows_the_sum_then_the_mask():
    model, x = network(DEEP, "softmax_cross_entropy", (2, 10, 10), seed=3)
    tr = trace(model, x)
    z = tr.outputs[0][0]
    inactive = [int(v) for v in np.argwhere(z < 0)[0]]
    for clicked in (0, 1):
        r = unit_backward(trace(model, x), clicked, inactive, label=0)
        assert [s["layer"] for s in r["steps"]] == [1, 0]
        relu_out, mask = r["steps"]
        assert relu_out["rule"] == "maxpool" and mask["rule"] == "relu"
        assert mask["active"] is False and mask["value"] == 0 and mask["engine"] == 0
        assert mask["grad"] == relu_out["value"]


def test_maxpool_routes_to_the_first_maximum_on_a_tie():
    model = Sequential(
        [
            {"type": "conv2d", "filters": 1, "kernel": 1},
            {"type": "maxpool2d", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 2},
        ],
        input_shape=(1, 2, 2),
        dtype="float64",
        init="he_normal",
    )
    model.layers[0].params["weight"][...] = 1.0
    x = np.ones((1, 1, 2, 2))  # four equal values: the first in row order wins
    for unit, won in (([0, 0, 0], True), ([0, 0, 1], False), ([0, 1, 1], False)):
        (step,) = unit_backward(trace(model, x), 0, unit, target=1)["steps"]
        assert step["rule"] == "maxpool"
        (window,) = step["windows"]
        assert window["won"] is won and window["winner"] == [0, 0, 0]
        assert (step["value"] != 0) is won and step["value"] == step["engine"]


@pytest.mark.parametrize(("target", "label"), [(0, None), (None, 2)])
def test_weight_gradients_agree_with_central_differences(target, label):
    model, x = network(DEEP, "softmax_cross_entropy", (2, 10, 10), seed=4)
    cases = [
        (0, "weight", [1, 1, 0, 2]),
        (0, "bias", [3]),
        (3, "weight", [2, 3, 1, 1]),
        (3, "bias", [0]),
        (7, "weight", [4, 5]),
        (7, "bias", [2]),
        (11, "weight", [1, 3]),
    ]
    for index, param, weight in cases:
        r = weight_backward(trace(model, x), index, param, weight, target=target, label=label)
        expected = numeric_weight(model, x, index, param, weight, target, label)
        assert r["value"] == pytest.approx(expected, rel=1e-6, abs=1e-9), (index, param)
        assert r["engine"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
        assert r["rule"] in EQUATIONS
        if r["rule"] == "conv_weight":
            # every output position contributes one term: input there times its gradient
            assert r["count"] == trace(model, x).outputs[index][0, 0].size
            t = r["terms"][0]
            assert t["product"] == pytest.approx(t["x"] * t["grad"], rel=1e-12)


def test_bad_requests_name_the_value():
    model, x = network(DEEP, "softmax_cross_entropy", (2, 10, 10), seed=3)
    tr = trace(model, x)
    with pytest.raises(InspectionError, match="layer 99"):
        unit_backward(tr, 99, [0])
    with pytest.raises(InspectionError, match="outside layer"):
        unit_backward(tr, 0, [9, 0, 0])
    with pytest.raises(InspectionError, match="no weights"):
        weight_backward(tr, 1, "weight", [0, 0, 0, 0])
    with pytest.raises(InspectionError, match="param"):
        weight_backward(tr, 0, "gamma", [0])
    with pytest.raises(InspectionError, match="class 7"):
        unit_backward(tr, 0, [0, 0, 0], target=7)


CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_zoo_network_and_loss(config, mnist):
    """A unit of every layer and a weight of every linear layer of each zoo network (its
    own loss: cross-entropy, binary cross-entropy, squared errors), for the loss of a real
    test digit: the recomputed gradient equals the engine's backward value."""
    cfg = load_config(config)
    model = Sequential(cfg.network, loss=cfg.training.loss, init=cfg.training.init, dtype="float64")
    x = Normalization.fit("standard", mnist.train_images[:500]).norm(mnist.test_images[7])
    tr = trace(model, x.astype(np.float64))
    rng = np.random.default_rng(0)
    for index, out in enumerate(tr.outputs):
        unit = [int(rng.integers(n)) for n in out.shape[1:]]
        for step in unit_backward(tr, index, unit, label=4)["steps"]:
            assert step["value"] == pytest.approx(step["engine"], rel=1e-9, abs=1e-15), step
        layer = model.layers[index]
        if "weight" in layer.params:
            weight = [int(rng.integers(n)) for n in layer.params["weight"].shape]
            w = weight_backward(tr, index, "weight", weight, label=4)
            assert w["value"] == pytest.approx(w["engine"], rel=1e-9, abs=1e-15), w


@pytest.mark.parametrize(("target", "label"), [(1, None), (None, 2)])
def test_batch_norm_and_dropout_at_inference_agree_with_central_differences(target, label):
    """Batch norm with moved running statistics is a scale per channel at inference, and
    dropout the identity: the units before them agree with central differences too."""
    specs = [
        {"type": "conv2d", "filters": 3, "kernel": 3},
        {"type": "batchnorm2d"},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "dropout", "p": 0.3},
        {"type": "dense", "units": 5},
        {"type": "batchnorm1d"},
        {"type": "tanh"},
        {"type": "dense", "units": 3},
    ]
    model, x = network(specs, "softmax_cross_entropy", (2, 6, 6), seed=7)
    rng = np.random.default_rng(2)
    for layer in model.layers:
        if layer.kind.startswith("batchnorm"):
            layer.state["running_mean"][...] = rng.normal(0, 0.5, layer.state["running_mean"].shape)
            layer.state["running_var"][...] = rng.uniform(0.3, 3, layer.state["running_var"].shape)
            layer.params["weight"][...] = rng.uniform(0.5, 2, layer.params["weight"].shape)
    assert not model.training  # central differences through the inference forward pass
    rules = check_every_layer(model, x, target, label, rng)
    assert {"batchnorm", "dropout"} <= rules
    tr = trace(model, x)
    for index in (1, 6):  # gamma and beta of one channel (1d: one feature)
        for param, where, rule in (("weight", [1, 0], "gamma"), ("bias", [1], "beta")):
            w = weight_backward(tr, index, param, where, target=target, label=label)
            expected = numeric_weight(model, x, index, param, where, target, label)
            assert w["rule"] == f"batchnorm_{rule}" and w["rule"] in EQUATIONS
            assert w["value"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
            assert w["engine"] == pytest.approx(expected, rel=1e-6, abs=1e-9)
