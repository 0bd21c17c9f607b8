"""The inspector's arithmetic of batch-norm and dropout units, recomputed in float64 and
checked against the engine's evaluation forward pass, on a trained model whose running
statistics are far from their initial 0 and 1; and its saliency through them."""

import numpy as np
import pytest
from test_inspect_api import checked_pixels

from numpycnn.data import Normalization
from numpycnn.engine import Sequential, optim
from numpycnn.inspector import Inspector
from numpycnn.modelfile import load_model, save_model

NETWORK = [
    {"type": "conv2d", "filters": 4, "kernel": 5},
    {"type": "batchnorm2d", "eps": 1e-3},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 16},
    {"type": "batchnorm1d"},
    {"type": "dropout", "p": 0.5},
    {"type": "dense", "units": 10},
]


@pytest.fixture(scope="module")
def inspector(mnist, tmp_path_factory):
    norm = Normalization.fit("standard", mnist.train_images[:2000])
    model = Sequential(NETWORK, init="he_normal", dtype="float64", seed=3)
    adam = optim.Adam(0.01)
    x, y = norm.norm(mnist.train_images[:640]), mnist.train_labels[:640].astype(np.int64)
    for step, i in enumerate(range(0, 640, 64)):
        model.set_step(0, step)
        model.train_step(x[i : i + 64], y[i : i + 64], adam)
    path = tmp_path_factory.mktemp("bn") / "bn.pkl"
    save_model(path, model.eval(), norm)
    return Inspector(load_model(path))


@pytest.mark.parametrize("layer,unit", [(1, [2, 10, 11]), (6, [5]), (2, [1, 3, 4])])
def test_a_batchnorm_unit_is_its_formula_with_the_running_statistics(inspector, mnist, layer,
                                                                     unit):  # fmt: skip
    model = inspector.model
    digit = mnist.test_images[3]
    tr = inspector.trace(digit)
    u = inspector.unit(tr, layer, unit)
    bn = 1 if layer == 2 else layer  # a ReLU after batch norm shows the batch norm's unit
    assert u["layer"] == bn and u["kind"] == model.layers[bn].kind
    state, params = model.layers[bn].state, model.layers[bn].params
    c = unit[0]
    assert u["mean"] == state["running_mean"][c] and u["var"] == state["running_var"][c]
    assert state["num_batches_tracked"][0] == 10 and abs(u["mean"]) > 1e-3
    assert u["gamma"] == params["weight"][c, 0] and u["beta"] == params["bias"][c, 0]
    x = tr.input_of(bn)[(0, *unit)]
    expected = (x - u["mean"]) / np.sqrt(u["var"] + u["eps"]) * u["gamma"] + u["beta"]
    assert u["value"] == pytest.approx(expected, rel=1e-12)
    # the engine's own evaluation pass gives the same number
    model.forward(inspector.norm.norm(digit[None]).astype(np.float64))  # evaluation mode
    engine = model.layers[bn].forward(tr.input_of(bn))
    assert u["output"] == float(engine[(0, *unit)]) == float(tr.outputs[bn][(0, *unit)])
    assert abs(u["difference"]) < 1e-12
    if layer == 2:
        assert u["activation"]["output"] == pytest.approx(max(u["value"], 0), abs=1e-12)


def test_dropout_units_pass_through_and_saliency_agrees(inspector, mnist):
    digit = mnist.test_images[5]
    tr = inspector.trace(digit)
    u = inspector.unit(tr, 7, [9])
    assert u["value"] == u["input"] == u["output"] == float(tr.input_of(7)[0, 9])
    back = inspector.backward(tr)
    x = inspector.norm.norm(digit).astype(np.float64)
    c = back["quantity"]["class"]
    for pixel, numeric in checked_pixels(inspector, x, back["input"], lambda o: o[0, c], 2):
        assert back["input"][pixel] == pytest.approx(numeric, rel=1e-5, abs=1e-9), pixel


def test_layer_figures_of_a_batchnorm_model_use_its_running_statistics(inspector, mnist):
    from numpycnn.training import layer_telemetry

    ins = Inspector(inspector.saved, test_set=lambda: (mnist.test_images, mnist.test_labels))
    figures = ins.layer_figures()
    net = inspector.model  # evaluation mode: its running statistics, as the page's views
    x = inspector.norm.norm(mnist.test_images[:64])
    net.loss_on(x, mnist.test_labels[:64].astype(np.int64))
    net.backward()
    assert figures["images"] == 64
    assert figures["layers"] == layer_telemetry(net, x)
