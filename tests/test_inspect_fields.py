"""Receptive fields against brute force: perturb each input element, see which units
change. Checked for every unit of every layer on the reference network, a padded zoo
network and a strided, padded network with every layer type, and through the API."""

from pathlib import Path

import numpy as np
import pytest
from test_inspect_api import array, request, serving

from numpycnn.config import load_config
from numpycnn.data import Normalization
from numpycnn.engine import Sequential
from numpycnn.engine.layers import AvgPool2D
from numpycnn.inspector import Inspector
from numpycnn.modelfile import load_model, save_model

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
#: Strided and padded windows, overlapping pools, and every layer type the engine has.
STRIDED = [
    {"type": "conv2d", "filters": 3, "kernel": 3, "stride": 2, "padding": 1},
    {"type": "tanh"},
    {"type": "maxpool2d", "size": 3, "stride": 2},
    {"type": "conv2d", "filters": 4, "kernel": 2, "stride": 1, "padding": 1},
    {"type": "leaky_relu", "alpha": 0.1},
    {"type": "avgpool2d", "size": 2, "stride": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 12},
    {"type": "sigmoid"},
    {"type": "dense", "units": 10},
    {"type": "softmax"},
]


def linear_twins(model):
    """The model's layers with the same geometry, where a perturbation reaches every unit
    that depends on it: activations as the identity (a ReLU unit at 0 hides a change) and
    max pools as average pools of the same window (only the winner passes a change)."""
    twins = []
    for layer in model.layers:
        if layer.kind in ("relu", "leaky_relu", "sigmoid", "tanh"):
            twins.append(None)
        elif layer.kind == "maxpool2d":
            twins.append(AvgPool2D(layer.size, layer.stride))
        else:
            twins.append(layer)
    return twins


def run(twins, x, start=0):
    """Every layer's output from layer ``start`` on, for the batch ``x``."""
    outputs = []
    for layer in twins[start:]:
        x = x if layer is None else layer.forward(x)
        outputs.append(x)
    return outputs


def changed_by(twins, base, start=0, chunk=128):
    """For each element e of ``base`` (one layer input, per-sample shape), which units of
    every later layer change when e alone changes: a list, per layer, of boolean arrays
    (elements of ``base``, *units). The perturbed copies go through in chunks."""
    n = base.size
    reference = [out[0] for out in run(twins, base[None].copy(), start)]
    masks = [[] for _ in reference]
    for first in range(0, n, chunk):
        elements = np.arange(first, min(n, first + chunk))
        batch = np.repeat(base.reshape(1, -1), elements.size, axis=0)
        batch[np.arange(elements.size), elements] += 1.0
        for masked, out, ref in zip(
            masks, run(twins, batch.reshape(-1, *base.shape), start), reference
        ):
            # well above rounding, far below any real dependence
            masked.append(np.abs(out - ref) > 1e-12 * (1 + np.abs(ref)))
    return [np.concatenate(m) for m in masks]


def units_of(shape, most=400):
    """Every unit of a layer of this shape, or an even sample with the first and last."""
    units = list(np.ndindex(*shape))
    step = max(1, len(units) // most)
    return units[::step] + ([units[-1]] if (len(units) - 1) % step else [])


def box(ranges):
    return tuple(slice(a, b) for a, b in ranges)


def assert_fields(inspector, twins, start, masks, which):
    """Each unit's region of layer ``start``'s input (``which``: 'input' for the image,
    'previous' for the layer before) is exactly the set of elements that change it."""
    model = inspector.model
    in_shape = model.input_shape if start == 0 else model.shapes[start - 1]
    layers = range(start, len(model.layers)) if which == "input" else [start]
    for index in layers:
        mask = masks[index - start].reshape(*in_shape, *model.shapes[index])
        for unit in units_of(model.shapes[index]):
            field = inspector.field(index, list(unit))
            region = field[which]
            assert region["shape"] == list(in_shape)
            expected = np.zeros(in_shape, dtype=bool)
            expected[box(region["ranges"])] = True
            got = mask[(..., *unit)]
            assert np.array_equal(got, expected), (inspector.labels[index], unit, region)


def inspector_for(network, tmp_path, mnist, loss="softmax_cross_entropy"):
    model = Sequential(network, loss=loss, init="he_normal", dtype="float64", seed=3)
    for layer in model.layers:  # biases too, so nothing is special about zero
        if "bias" in layer.params:
            layer.params["bias"][...] = np.random.default_rng(4).normal(
                size=layer.params["bias"].shape
            )
    path = tmp_path / "m.pkl"
    save_model(path, model, Normalization.fit("standard", mnist.train_images[:100]))
    return Inspector(load_model(path))


def make_network(name, reference_params_path, tmp_path, mnist):
    if name == "reference":
        return Inspector(load_model(reference_params_path))
    if name == "slides-cnn":  # 5x5 convs with padding 2, then without
        return inspector_for(load_config(CONFIGS / "slides-cnn.yaml").network, tmp_path, mnist)
    return inspector_for(STRIDED, tmp_path, mnist, loss="mean_squared_error")


@pytest.mark.parametrize("name", ["reference", "slides-cnn", "strided"])
def test_fields_on_the_input_equal_brute_force(name, reference_params_path, tmp_path, mnist):
    network = make_network(name, reference_params_path, tmp_path, mnist)
    twins = linear_twins(network.model)
    x = network.norm.norm(mnist.test_images[5])[0].astype(np.float64)
    masks = changed_by(twins, x)
    assert_fields(network, twins, 0, masks, "input")


# slides-cnn has the reference's layer types; its padding is checked on the input above
@pytest.mark.parametrize("name", ["reference", "strided"])
def test_fields_on_the_layer_before_equal_brute_force(name, reference_params_path, tmp_path, mnist):
    network = make_network(name, reference_params_path, tmp_path, mnist)
    twins = linear_twins(network.model)
    x = network.norm.norm(mnist.test_images[5]).astype(np.float64)
    outputs = run(twins, x)
    for start in range(1, len(twins)):
        masks = changed_by(twins[: start + 1], outputs[start - 1][0], start)
        assert_fields(network, twins, start, masks, "previous")


def test_a_real_relu_networks_dependence_stays_inside_the_field(reference_params_path, mnist):
    """On the reference network itself (ReLUs and max pools as they are), whatever changes
    a unit lies inside its field; and a flatten unit's ``from`` is where Flatten took it."""
    inspector = Inspector(load_model(reference_params_path))
    model = inspector.model
    x = inspector.norm.norm(mnist.test_images[0])[0].astype(np.float64)
    masks = changed_by(list(model.layers), x)
    for index in range(len(model.layers)):
        mask = masks[index].reshape(*model.input_shape, *model.shapes[index])
        for unit in list(np.ndindex(*model.shapes[index]))[::37]:
            inside = np.zeros(model.input_shape, dtype=bool)
            inside[box(inspector.field(index, list(unit))["input"]["ranges"])] = True
            assert not (mask[(..., *unit)] & ~inside).any(), (index, unit)
    pooled = model.layers[4].forward(run(list(model.layers), x[None])[3])
    flat = model.layers[5].forward(pooled)
    for k in (0, 437, 799):
        c, r, col = inspector.field(5, [k])["from"]
        assert flat[0, k] == pooled[0, c, r, col]


def test_the_api_gives_fields_and_geometry(reference_params_path):
    inspector = Inspector(load_model(reference_params_path))
    with serving(inspector) as (url, _):
        _, m = request(url + "/api/model")
        kinds = [layer["geometry"]["kind"] for layer in m["layers"]]
        assert kinds == ["window", "elementwise", "window", "elementwise", "window",
                         "flatten", "dense", "elementwise", "dense"]  # fmt: skip
        assert m["layers"][2]["geometry"] == {
            "kind": "window", "kernel": 5, "stride": 1, "padding": 0, "channels": "all"
        }  # fmt: skip
        assert m["layers"][5]["geometry"] == {"kind": "flatten", "from": [8, 10, 10]}
        status, f = request(url + "/api/field?layer=4&unit=5,4,3")
        assert status == 200
        assert f["input"]["ranges"] == [[0, 1], [8, 18], [6, 16]]
        assert f["previous"] == {
            "layer": 3, "of": "4-relu", "shape": [8, 20, 20], "ranges": [[5, 6], [8, 10], [6, 8]]
        }  # fmt: skip
        assert [c["of"] for c in f["chain"]] == [
            "4-relu",
            "3-conv2d",
            "2-relu",
            "1-conv2d",
            "input",
        ]
        for clicked in (2, 3):  # the conv unit, and the ReLU after it: the conv's field
            body = {"pixels": [0] * 784, "layer": clicked, "unit": [5, 8, 7]}
            status, u = request(url + "/api/unit", body)
            assert status == 200 and u["field"]["filter"] == 5 and u["field"]["layer"] == 2
            (c0, c1), (r0, r1), (q0, q1) = u["field"]["previous"]["ranges"]
            assert [r0, r1] == u["rows"] and [q0, q1] == u["cols"] and [c0, c1] == [0, 8]
            np.testing.assert_array_equal(array(u["field"]["kernel"]), array(u["kernel"]))
        for target, message in [
            ("/api/field?layer=9&unit=0", "layer 9 is out of range"),
            ("/api/field?layer=0&unit=8,0,0", "unit [8, 0, 0] is outside layer 1-conv2d"),
            ("/api/field?layer=0&unit=a", "must be integers"),
            ("/api/field?layer=0", "give 'layer'"),
        ]:
            status, r = request(url + target)
            assert status == 400 and message in r["error"], r
