"""``POST /api/unit_backward`` and ``POST /api/learn`` on a real server on 127.0.0.1: the
numbers equal the engine's (the backward pass /api/inspect shows, central differences, the
engine's own training step), the model file is never touched, and hostile requests get a
400 with a one-line error while the server keeps answering and its sessions stay bounded."""

import hashlib
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from test_inspect_api import array, load_model_like, reference_inspector, request

from numpycnn.engine import losses
from numpycnn.inspector import make_server
from numpycnn.inspector.learning import LIMIT


@pytest.fixture(scope="module")
def served(reference_params_path, mnist):
    """The reference network served on 127.0.0.1: (inspector, url, log, server)."""
    inspector = reference_inspector(reference_params_path, mnist)
    log = []
    server = make_server(inspector, log=log.append)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield inspector, server.url.rstrip("/"), log, server
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_a_units_backward_numbers_equal_the_backward_pass(served, mnist):
    inspector, url, _, _ = served
    body = {"test_index": 0, "label": 3}  # a 7, with the loss for label 3
    status, r = request(url + "/api/inspect", body)
    assert status == 200, r
    grads = [array(layer["values"]) for layer in r["backward"]["layers"]]
    units = {0: [3, 11, 9], 1: [3, 11, 9], 2: [5, 8, 7], 4: [5, 4, 3], 5: [437], 6: [17], 8: [7]}
    for layer, unit in units.items():
        status, u = request(url + "/api/unit_backward", {**body, "layer": layer, "unit": unit})
        assert status == 200, u
        assert u["quantity"]["kind"] == "loss" and u["quantity"]["label"] == 3
        assert u["equations"][u["steps"][0]["rule"]]["name"]
        for step in u["steps"]:
            engine = float(grads[step["layer"]][tuple(unit)])
            assert step["engine"] == pytest.approx(engine, rel=1e-6, abs=1e-30)
            assert abs(step["difference"]) <= 1e-9 * max(1e-30, abs(step["value"])) + 1e-300
    # the last layer: p - y
    status, u = request(url + "/api/unit_backward", {**body, "layer": 8, "unit": [3]})
    (step,) = u["steps"]
    assert step["rule"] == "softmax_cross_entropy" and step["y"] == 1
    assert step["value"] == pytest.approx(r["probabilities"][3] - 1, rel=1e-9)


def test_a_units_gradient_agrees_with_central_differences(served, mnist):
    inspector, url, _, _ = served
    model = load_model_like(inspector)
    x = inspector.norm.norm(mnist.test_images[0]).astype(np.float64)
    layer, unit = 6, [17]  # a dense-128 unit: dQ/da through the ReLU and the last dense
    outputs, out = [], x
    for lay in model.layers:
        out = lay.forward(out)
        outputs.append(out)

    def loss(delta):
        a = outputs[layer].copy()
        a[(0, *unit)] += delta
        for lay in model.layers[layer + 1 :]:
            a = lay.forward(a)
        return losses.get("softmax_cross_entropy").forward(a, np.array([3]))

    eps = 1e-6
    numeric = (loss(eps) - loss(-eps)) / (2 * eps)
    status, u = request(
        url + "/api/unit_backward", {"test_index": 0, "label": 3, "layer": layer, "unit": unit}
    )
    assert status == 200, u
    assert u["steps"][-1]["layer"] == layer
    assert u["steps"][-1]["value"] == pytest.approx(numeric, rel=1e-6)


def test_a_weights_gradient_equals_the_filters_gradient(served):
    _, url, _, _ = served
    body = {"test_index": 0, "class": 7}
    _, r = request(url + "/api/inspect", body)
    wg = array(r["backward"]["layers"][2]["weight_grad"])
    status, w = request(
        url + "/api/unit_backward", {**body, "weight": {"layer": 2, "index": [4, 6, 1, 3]}}
    )
    assert status == 200, w
    assert w["rule"] == "conv_weight" and w["count"] == 20 * 20
    assert w["value"] == pytest.approx(float(wg[4, 6, 1, 3]), rel=1e-6)
    assert len(w["terms"]) == 12 and all(len(t["position"]) == 2 for t in w["terms"])
    status, b = request(
        url + "/api/unit_backward", {**body, "weight": {"layer": 6, "param": "bias", "index": [5]}}
    )
    assert b["rule"] == "dense_bias" and b["value"] == pytest.approx(b["engine"], rel=1e-12)


def test_learning_steps_lower_the_loss_and_never_touch_the_file(served, reference_params_path):
    inspector, url, _, _ = served
    digest = hashlib.sha256(reference_params_path.read_bytes()).hexdigest()
    _, predicted = request(url + "/api/predict", {"test_index": 0})
    body = {"test_index": 0, "session": "page-1", "label": 3, "lr": 0.01}
    status, one = request(url + "/api/learn", {**body, "steps": 1})
    assert status == 200, one
    assert one["optimizer"]["name"] == "escontrela"  # the 2018 pickle: its own update
    assert one["after"]["loss"] < one["before"]["loss"] == one["file"]["loss"]
    assert one["losses"] == [pytest.approx(one["before"]["loss"])]
    u = one["weight"]
    assert u["w"] == pytest.approx(u["engine"], rel=1e-9) and u["t"] == 1
    _, ten = request(url + "/api/learn", {**body, "steps": 10})
    assert ten["total_steps"] == 11 and len(ten["losses"]) == 10
    assert ten["before"]["loss"] == pytest.approx(one["after"]["loss"])
    assert ten["after"]["probabilities"][3] > one["after"]["probabilities"][3]
    # a chosen weight: the last step's update of it
    w = {"layer": 0, "param": "weight", "index": [1, 0, 2, 2]}
    _, zero = request(url + "/api/learn", {**body, "steps": 0, "weight": w})
    assert zero["weight"]["index"] == [1, 0, 2, 2] and zero["weight"]["t"] == 11
    _, again = request(url + "/api/learn", {**body, "steps": 0, "reset": True})
    assert again["after"]["loss"] == pytest.approx(one["before"]["loss"], rel=1e-12)
    assert again["total_steps"] == 0 and again["weight"] is None
    # the file and the inspected model are untouched
    assert hashlib.sha256(reference_params_path.read_bytes()).hexdigest() == digest
    assert request(url + "/api/predict", {"test_index": 0})[1] == predicted


HOSTILE = [
    {"label": 3},  # no session
    {"session": "x y", "label": 3},
    {"session": ["a"], "label": 3},
    {"session": "s", "label": -1},
    {"session": "s", "label": "3"},
    {"session": "s", "label": 3, "steps": 10**12},
    {"session": "s", "label": 3, "steps": 2.5},
    {"session": "s", "label": 3, "lr": -0.1},
    {"session": "s", "label": 3, "lr": 1e300},
    {"session": "s", "label": 3, "lr": None},
    {"session": "s", "label": 3, "weight": {"layer": 99}},
    {"session": "s", "label": 3, "weight": {"layer": 0, "index": "all"}},
]


def test_hostile_requests_get_a_one_line_400(served):
    _, url, log, _ = served
    for bad in HOSTILE:
        status, r = request(url + "/api/learn", {"test_index": 0, **bad})
        assert status == 400, (bad, r)
        assert "\n" not in r["error"] and r["error"]
    raw = b'{"test_index": 0, "session": "s", "label": 3, "lr": NaN}'
    status, r = request(url + "/api/learn", raw=raw, method="POST")
    assert status == 400 and "lr" in r["error"]
    for bad in (
        {"layer": 0},
        {"layer": 0, "unit": [0, 99, 0]},
        {"layer": "0", "unit": [0, 0, 0]},
        {"layer": 0, "unit": [0, 0, 0], "class": 10},
        {"layer": 0, "unit": [0, 0, 0], "class": 1, "label": 2},
        {"weight": {"layer": 1, "index": [0]}},
        {"weight": 5},
    ):
        status, r = request(url + "/api/unit_backward", {"test_index": 0, **bad})
        assert status == 400, (bad, r)
        assert "\n" not in r["error"]
    assert request(url + "/api/learn")[0] == 405  # GET
    assert request(url + "/api/model")[0] == 200


def test_sessions_stay_bounded_under_many_ids_and_threads(served):
    _, url, _, server = served

    def learn(k):
        body = {"test_index": k % 3, "session": f"s{k}", "label": k % 10, "steps": 1}
        return request(url + "/api/learn", body)[0]

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(learn, range(40)))
    assert statuses == [200] * 40
    # the server's own sessions: never more than LIMIT copies of the model
    assert len(server.learning) == LIMIT
    with ThreadPoolExecutor(8) as pool:  # one session from many threads at once
        same = list(
            pool.map(
                lambda k: request(
                    url + "/api/learn",
                    {"test_index": 0, "session": "shared", "label": 1, "steps": 1},
                )[1]["total_steps"],
                range(8),
            )
        )
    assert sorted(same) == list(range(1, 9))  # each request took its step in turn


def test_json_errors_are_logged_once(served):
    _, url, log, _ = served
    before = len(log)
    request(url + "/api/learn", {"test_index": 0, "session": "s", "label": 11})
    assert len(log) == before + 1 and "label 11" in log[-1]
    assert json.loads(json.dumps(log[-1]))  # one line of text
