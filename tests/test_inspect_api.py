"""``numpycnn inspect``'s JSON API, against a real server on 127.0.0.1: every number it
sends is checked against the engine (forward pass, preprocessing, predict, central
differences, training.evaluate)."""

import base64
import contextlib
import io
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import invoke, last_json
from PIL import Image

from numpycnn.config import load_config
from numpycnn.data import Normalization
from numpycnn.engine import Sequential
from numpycnn.imageprep import load_digit
from numpycnn.inspector import Inspector, make_server
from numpycnn.modelfile import load_model, save_model
from numpycnn.training import evaluate

CONFIGS = sorted((Path(__file__).resolve().parent.parent / "configs").glob("*.yaml"))
#: The test images the server's confusion matrix covers here (all 10,000 in the CLI).
TEST_IMAGES = 1000


# ----- helpers shared with the other inspector tests -----


@contextlib.contextmanager
def serving(inspector):
    """A real InspectServer on a free 127.0.0.1 port, serving in a thread: (url, log)."""
    log = []
    server = make_server(inspector, log=log.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url.rstrip("/"), log
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def request(url, body=None, method=None, headers=None, raw=None):
    """(status, parsed JSON or bytes) of one request; HTTP errors are returned, not raised."""
    data = raw if raw is not None else None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            status, payload, ctype = r.status, r.read(), r.headers.get("Content-Type", "")
    except urllib.error.HTTPError as e:
        status, payload, ctype = e.code, e.read(), e.headers.get("Content-Type", "")
    return status, json.loads(payload) if ctype.startswith("application/json") else payload


def array(obj):
    """An array the API sent: {shape, float32 | uint8: base64}."""
    kind = "float32" if "float32" in obj else "uint8"
    data = np.frombuffer(base64.b64decode(obj[kind]), dtype="<f4" if kind == "float32" else "u1")
    return data.reshape(obj["shape"])


def png_bytes(image):
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def image_body(data):
    return {"image": "data:image/png;base64," + base64.b64encode(data).decode()}


def reference_inspector(reference_params_path, mnist):
    saved = load_model(reference_params_path)
    test = (mnist.test_images[:TEST_IMAGES], mnist.test_labels[:TEST_IMAGES])
    return Inspector(saved, test_set=lambda: test, threads=2, name=reference_params_path.name)


# ----- fixtures -----


@pytest.fixture(scope="module")
def reference(reference_params_path, mnist):
    """The reference network's inspector served on 127.0.0.1: (inspector, url, log)."""
    inspector = reference_inspector(reference_params_path, mnist)
    with serving(inspector) as (url, log):
        yield inspector, url, log


@pytest.fixture(scope="module")
def drawn(tmp_path_factory, mnist):
    """Three real test digits as large dark-on-white PNG files (as a user would draw)."""
    folder = tmp_path_factory.mktemp("drawn")
    paths = []
    for i in (0, 1, 2):
        path = folder / f"digit-{i}.png"
        Image.fromarray(255 - mnist.test_images[i]).resize((112, 112)).save(path)
        paths.append(path)
    return paths


def engine_forward(model, x):
    """Every layer's output, by the model's own layers in order."""
    outputs, out = [], x
    for layer in model.layers:
        out = layer.forward(out)
        outputs.append(out)
    return outputs


# ----- one image -----


def test_probabilities_equal_predicts(reference, drawn, reference_params_path):
    inspector, url, _ = reference
    for path in drawn:
        status, r = request(url + "/api/predict", image_body(path.read_bytes()))
        assert status == 200, r
        (cli,) = last_json(
            invoke("predict", "--params", reference_params_path, "--json", "--top-k", 10, path)
        )
        expected = np.zeros(10)
        for t in cli["top_k"]:
            expected[t["digit"]] = t["probability"]
        np.testing.assert_allclose(r["probabilities"], expected, rtol=1e-12, atol=1e-15)
        assert r["predicted"] == cli["digit"]


def test_the_28x28_is_predicts_preprocessing(reference, drawn):
    _, url, _ = reference
    for path in drawn:
        _, r = request(url + "/api/predict", image_body(path.read_bytes()))
        np.testing.assert_array_equal(array(r["digit"]), load_digit(path))


def test_activations_equal_the_engines_forward_pass(reference, drawn):
    inspector, url, _ = reference
    _, r = request(url + "/api/inspect", image_body(drawn[0].read_bytes()))
    digit = load_digit(drawn[0])
    norm = Normalization.from_dict(inspector.saved.normalization)
    x = norm.norm(digit).astype(np.float64)
    np.testing.assert_array_equal(array(r["input"]), x[0].astype(np.float32))
    outputs = engine_forward(load_model_like(inspector), x)
    assert len(r["activations"]) == len(outputs) == 9
    for got, out, label in zip(r["activations"], outputs, inspector.labels):
        assert got["label"] == label
        assert got["shape"] == list(out.shape[1:])
        np.testing.assert_array_equal(array(got["values"]), out[0].astype(np.float32))
        assert got["min"] == float(out.min()) and got["max"] == float(out.max())
    assert r["predicted"] == int(np.argmax(outputs[-1]))


def load_model_like(inspector):
    """A fresh copy of the inspector's network, so that its own layers stay untouched."""
    model = Sequential(
        inspector.model.specs(), loss=inspector.model.loss.kind, dtype=inspector.model.dtype
    )
    model.set_params(inspector.model.get_params())
    model.set_state(inspector.model.state())  # batch norm's running statistics
    return model


@pytest.mark.parametrize(
    ("layer", "unit"),
    [
        (0, [3, 11, 9]),  # conv1: 1 channel x 5x5
        (1, [3, 11, 9]),  # its ReLU: the conv unit, then the activation
        (2, [5, 8, 7]),  # conv2: 8 channels x 5x5
        (4, [5, 4, 3]),  # max pooling
        (5, [437]),  # flatten
        (6, [17]),  # dense 128
        (8, [7]),  # the class scores
    ],
)
def test_a_units_arithmetic_reproduces_its_activation(reference, drawn, layer, unit):
    inspector, url, _ = reference
    digit = load_digit(drawn[0])
    pixels = digit.ravel().tolist()
    status, u = request(url + "/api/unit", {"pixels": pixels, "layer": layer, "unit": unit})
    assert status == 200, u
    outputs = engine_forward(load_model_like(inspector), inspector.norm.norm(digit))
    model = inspector.model
    linear = layer - 1 if model.layers[layer].kind == "relu" else layer
    assert u["layer"] == linear and u["clicked"]["layer"] == layer
    engine = outputs[linear][(0, *unit)]
    assert u["output"] == float(engine)
    x = (outputs[linear - 1] if linear else inspector.norm.norm(digit))[0]
    kind = model.layers[linear].kind
    if kind == "conv2d":
        f, i, j = unit
        k = model.layers[linear].kernel
        patch = x[:, i : i + k, j : j + k]
        np.testing.assert_array_equal(array(u["patch"]), patch.astype(np.float32))
        weight = model.layers[linear].params["weight"][f]
        np.testing.assert_array_equal(array(u["kernel"]), weight.astype(np.float32))
        assert u["sum"] == pytest.approx(float((patch * weight).sum()), rel=1e-12, abs=1e-12)
        assert u["bias"] == float(model.layers[linear].params["bias"][f, 0])
    if kind in ("conv2d", "dense"):
        # the arithmetic shown reproduces the forward pass to well beyond the 6 digits printed
        assert u["preactivation"] == pytest.approx(u["sum"] + u["bias"], abs=1e-12)
        assert u["preactivation"] == pytest.approx(float(engine), rel=1e-9, abs=1e-9)
        assert f"{u['preactivation']:.6g}" == f"{float(engine):.6g}"
    if kind == "dense":
        w = model.layers[linear].params["weight"][unit[0]]
        terms = x * w
        assert u["count"] == x.size
        biggest = np.sort(np.abs(terms))[::-1][: len(u["terms"])]
        np.testing.assert_allclose([abs(t["product"]) for t in u["terms"]], biggest, rtol=1e-12)
        assert u["rest"] + sum(t["product"] for t in u["terms"]) == pytest.approx(u["sum"])
    if kind == "maxpool2d":
        c, i, j = unit
        window = x[c, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
        assert u["value"] == float(window.max()) == float(engine)
        cc, r, col = u["winner_position"]
        assert x[cc, r, col] == window.max()
    if kind == "flatten":
        assert u["value"] == float(x[tuple(u["from"])]) == float(engine)
    if model.layers[layer].kind == "relu" or (
        layer + 1 < len(model.layers) and model.layers[layer + 1].kind == "relu"
    ):
        act = u["activation"]
        assert act["output"] == float(outputs[act["layer"]][(0, *unit)])
        assert act["output"] == max(0.0, u["preactivation"]) or act["output"] == pytest.approx(
            max(0.0, u["preactivation"]), abs=1e-12
        )


def switches(model, x):
    """The discrete choices (ReLU masks, max-pool winners) of a forward pass of ``x``."""
    model.forward(x)
    return [np.array(s) for layer in model.layers for s in layer.switches()]


def central_difference(inspector, x, pixel, f, eps=1e-6):
    """d f(forward(x)) / d x[pixel] by central differences, in float64; None when the step
    crosses a ReLU or max-pool kink (a tie), where no derivative exists to compare with."""
    model = load_model_like(inspector)
    plus, minus = x.copy(), x.copy()
    plus[(0, *pixel)] += eps
    minus[(0, *pixel)] -= eps
    base, up, down = switches(model, x), switches(model, plus), switches(model, minus)
    if not all(np.array_equal(a, b) and np.array_equal(a, c) for a, b, c in zip(base, up, down)):
        return None
    return (f(model.forward(plus)) - f(model.forward(minus))) / (2 * eps)


def checked_pixels(inspector, x, gradient, f, count):
    """``count`` pixels, strongest gradient first, whose central differences are defined:
    [(pixel, numeric)]."""
    found = []
    for flat in np.argsort(-np.abs(gradient), axis=None):
        pixel = tuple(int(v) for v in np.unravel_index(flat, gradient.shape))
        numeric = central_difference(inspector, x, pixel, f)
        if numeric is not None:
            found.append((pixel, numeric))
        if len(found) == count:
            return found
    raise AssertionError("no pixel away from a kink")


def test_saliency_agrees_with_central_differences(reference, drawn):
    inspector, url, _ = reference
    digit = load_digit(drawn[1])
    _, r = request(url + "/api/inspect", {"pixels": digit.ravel().tolist(), "class": 4})
    q = r["backward"]["quantity"]
    assert q == {
        "kind": "score",
        "class": 4,
        "value": pytest.approx(r["logits"][4]),
        "reason": "requested",
    }
    saliency = array(r["backward"]["input"])  # float32 on the wire
    exact = inspector.backward(inspector.trace(digit), target=4)["input"]  # float64
    np.testing.assert_allclose(saliency, exact.astype(np.float32))
    x = inspector.norm.norm(digit).astype(np.float64)
    for pixel, numeric in checked_pixels(inspector, x, exact, lambda out: out[0, 4], 6):
        assert exact[pixel] == pytest.approx(numeric, rel=1e-5, abs=1e-7), pixel
    # a pixel of the background too, where the gradient is small
    numeric = central_difference(inspector, x, (0, 3, 3), lambda out: out[0, 4])
    assert numeric is not None and exact[0, 3, 3] == pytest.approx(numeric, rel=1e-4, abs=1e-8)


def test_loss_gradient_for_a_label_agrees_with_central_differences(reference, drawn):
    inspector, url, _ = reference
    digit = load_digit(drawn[2])
    label = 3
    _, r = request(url + "/api/inspect", {"pixels": digit.ravel().tolist(), "label": label})
    q = r["backward"]["quantity"]
    assert q["kind"] == "loss" and q["label"] == label
    exact = inspector.backward(inspector.trace(digit), label=label)["input"]
    x = inspector.norm.norm(digit).astype(np.float64)
    model = load_model_like(inspector)

    def loss(out):
        return model.loss.forward(out, np.array([label]))

    assert q["value"] == pytest.approx(loss(model.forward(x)))
    for pixel, numeric in checked_pixels(inspector, x, exact, loss, 2):
        assert exact[pixel] == pytest.approx(numeric, rel=1e-5, abs=1e-9), pixel


def test_the_gradient_reaching_each_layer_and_the_weight_gradients(reference, drawn):
    """Each layer's output gradient and the conv weight gradients are the engine's own
    backward pass, as Sequential.backward computes them for the score as a loss."""
    inspector, url, _ = reference
    digit = load_digit(drawn[0])
    _, r = request(url + "/api/inspect", {"pixels": digit.ravel().tolist()})
    layers = r["backward"]["layers"]
    top = r["predicted"]
    assert r["backward"]["quantity"]["class"] == top  # the default: the predicted class
    np.testing.assert_array_equal(array(layers[-1]["values"]), np.eye(10)[top])

    class Score:  # a "loss" whose gradient is d z_top, to drive Sequential.backward
        def backward(self):
            g = np.zeros((1, 10))
            g[0, top] = 1
            return g

    model = load_model_like(inspector)
    model.loss = Score()
    model.forward(inspector.norm.norm(digit))
    model.layers[0].needs_input_grad = True
    dx = model.backward()
    np.testing.assert_allclose(array(r["backward"]["input"]), dx[0].astype(np.float32))
    for i in (0, 2):  # the conv layers
        np.testing.assert_allclose(
            array(layers[i]["weight_grad"]),
            model.layers[i].grads["weight"].astype(np.float32),
            rtol=1e-6,
        )


def test_inspection_leaves_the_models_parameters_and_gradients_alone(reference, drawn):
    inspector, url, _ = reference
    params = inspector.model.flat_params.copy()
    grads = inspector.model.flat_grads.copy()
    for k in range(3):
        body = {**image_body(drawn[k].read_bytes()), "label": k}
        assert request(url + "/api/inspect", body)[0] == 200
    np.testing.assert_array_equal(inspector.model.flat_params, params)
    np.testing.assert_array_equal(inspector.model.flat_grads, grads)


# ----- the whole model -----


def test_model_summary_and_filters(reference):
    inspector, url, _ = reference
    _, m = request(url + "/api/model")
    assert [layer["label"] for layer in m["layers"]] == [
        "1-conv2d", "2-relu", "3-conv2d", "4-relu", "5-maxpool2d", "6-flatten",
        "7-dense", "8-relu", "9-dense",
    ]  # fmt: skip
    assert m["num_params"] == 105_634 and m["dtype"] == "float64"
    assert m["layers"][2]["output_shape"] == [8, 20, 20] and m["layers"][6]["params"] == 102_528
    _, f = request(url + "/api/filters")
    assert [x["label"] for x in f["filters"]] == ["1-conv2d", "3-conv2d"]
    for entry, index in zip(f["filters"], (0, 2)):
        weight = inspector.model.layers[index].params["weight"]
        np.testing.assert_array_equal(array(entry["weight"]), weight.astype(np.float32))
        assert entry["min"] == float(weight.min()) and entry["max"] == float(weight.max())


def test_confusion_matrix_equals_evaluate_and_cells_list_their_images(reference, mnist):
    inspector, url, _ = reference
    status, c = request(url + "/api/confusion")
    assert status == 200, c
    images, labels = mnist.test_images[:TEST_IMAGES], mnist.test_labels[:TEST_IMAGES]
    report = evaluate(inspector.model, inspector.norm.norm(images), labels)
    np.testing.assert_array_equal(array_int(c["matrix"]), report["confusion"])
    assert c["accuracy"] == report["accuracy"] and c["total"] == TEST_IMAGES
    matrix = np.array(report["confusion"])
    t, p = np.unravel_index(np.argmax(matrix - np.diag(np.diag(matrix))), matrix.shape)
    _, cell = request(url + f"/api/confusion/cell?true={t}&predicted={p}")
    assert cell["count"] == matrix[t, p] == len(cell["indices"])
    probs = inspector.model.predict_proba(inspector.norm.norm(images[cell["indices"]]))
    assert (probs.argmax(axis=1) == p).all() and (labels[cell["indices"]] == t).all()
    np.testing.assert_allclose(cell["probabilities"], probs[:, p])
    assert cell["probabilities"] == sorted(cell["probabilities"], reverse=True)
    np.testing.assert_array_equal(array(cell["images"]), images[cell["indices"]])
    # a diagonal cell is limited, most confident first
    _, big = request(url + "/api/confusion/cell?true=1&predicted=1&limit=5")
    assert big["count"] == matrix[1, 1] and len(big["indices"]) == 5
    # clicking an image inspects that test image, as if drawn
    index = cell["indices"][0]
    _, r = request(url + "/api/inspect", {"test_index": index})
    np.testing.assert_array_equal(array(r["digit"]), images[index])
    assert r["predicted"] == p


def array_int(obj):
    return array(obj) if "uint8" in obj else np.rint(array(obj)).astype(np.int64)


def test_history_of_the_reference_pickle(reference):
    inspector, url, _ = reference
    _, h = request(url + "/api/history")
    cost = inspector.saved.cost
    assert h["batches"] == len(cost) and h["epochs"] == []
    every = h["cost_every"]
    assert len(h["cost"]) == -(-len(cost) // every)
    assert h["cost"][0] == pytest.approx(np.mean(cost[:every]))


def test_history_shows_what_each_epoch_holds(tmp_path, reference_params_path):
    """Per-epoch dicts pass through with whatever keys they have (older files lack some)."""
    saved = load_model(reference_params_path)
    history = [
        {"epoch": 1, "train_loss": 0.3, "train_accuracy": 0.9, "val_accuracy": None},
        {
            "epoch": 2,
            "train_loss": 0.1,
            "train_accuracy": 0.97,
            "val_accuracy": 0.98,
            "val_loss": 0.07,
            "lr": 0.001,
            "seconds": 12.5,
            "images_per_second": 4000.0,
            "layers": {
                "1-conv2d": {"weight_norm": 2.0, "grad_norm": 0.1},
                "2-relu": {"dead_fraction": 0.25},
            },
        },
    ]  # fmt: skip
    path = tmp_path / "with-history.pkl"
    save_model(path, saved.model, saved.normalization, cost=[1.0, 0.5, 0.25], history=history)
    h = Inspector(load_model(path)).history()
    assert h["epochs"] == history
    assert h["cost"] == [1.0, 0.5, 0.25] and h["cost_every"] == 1


# ----- any network a config builds -----


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.stem)
def test_every_zoo_network_can_be_inspected(config, mnist, tmp_path):
    """Activations, each layer's arithmetic and the saliency map, for every zoo network
    (freshly initialised in float64, saved and loaded as a model file)."""
    cfg = load_config(config)
    model = Sequential(cfg.network, loss=cfg.training.loss, init=cfg.training.init, dtype="float64")
    norm = Normalization.fit("standard", mnist.train_images[:500])
    save_model(tmp_path / "m.pkl", model, norm)
    inspector = Inspector(load_model(tmp_path / "m.pkl"))
    digit = mnist.test_images[7]
    tr = inspector.trace(digit)
    acts = inspector.activations(tr)
    assert [a["shape"] for a in acts] == [list(s) for s in model.shapes]
    rng = np.random.default_rng(0)
    for index, act in enumerate(acts):
        unit = [int(rng.integers(n)) for n in act["shape"]]
        u = inspector.unit(tr, index, unit)
        assert abs(u["difference"]) <= 1e-9 * max(1.0, abs(u["output"])), (act["label"], u)
    back = inspector.backward(tr)
    x = inspector.norm.norm(digit).astype(np.float64)
    c = back["quantity"]["class"]
    for pixel, numeric in checked_pixels(inspector, x, back["input"], lambda out: out[0, c], 2):
        assert back["input"][pixel] == pytest.approx(numeric, rel=1e-5, abs=1e-9), pixel
