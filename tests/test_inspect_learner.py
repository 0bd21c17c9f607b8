"""What a learner meets around the inspector's numbers (issue #17), against a real server on
127.0.0.1 and the engine: answers without the network stack's delay, upload errors that
name the file, the softmax step by step, a test image's true label and the backward pass
it asks for, negligible gradients said so, and gradient x input."""

import json
import socket
import statistics
import time

import numpy as np
import pytest
from PIL import Image
from test_inspect_api import (
    array,
    central_difference,
    image_body,
    load_model_like,
    png_bytes,
    reference_inspector,
    request,
    serving,
)

from numpycnn.engine.activations import softmax
from numpycnn.inspector.compute import NEGLIGIBLE


@pytest.fixture(scope="module")
def reference(reference_params_path, mnist):
    inspector = reference_inspector(reference_params_path, mnist)
    with serving(inspector) as (url, log):
        yield inspector, url, log


@pytest.fixture(scope="module")
def scored(reference, mnist):
    """The reference network's probabilities for the test images the inspector holds."""
    inspector, _, _ = reference
    images, labels = inspector._test_arrays()
    return inspector.model.predict_proba(inspector.norm.norm(images)), labels


def engine_backward(inspector, digit, output_grad):
    """dQ/dx and each layer's output gradient by Sequential.backward, for the gradient
    ``output_grad`` at the network's output (on a fresh copy of the network)."""

    class Given:  # a "loss" whose gradient is the one given
        def backward(self):
            return np.array(output_grad, dtype=np.float64)[None]

    model = load_model_like(inspector)
    model.loss = Given()
    model.layers[0].needs_input_grad = True
    x = inspector.norm.norm(digit)
    model.forward(x)
    reaching, grad = [], output_grad[None]
    dx = model.backward()
    # the gradient reaching each layer's output, by the layers' backward in order
    for layer in reversed(model.layers):
        reaching.insert(0, grad)
        grad = layer.backward(grad)
    return dx[0], [g[0] for g in reaching], model


# ----- (2) no 40 ms wait in the network stack -----


def timed_answer(sock, request_bytes):
    """Send one request on a keep-alive socket; (seconds from the end of the answer's
    headers arriving to the end of its body arriving, the body)."""
    sock.sendall(request_bytes)
    data, headers_at = b"", None
    while True:
        chunk = sock.recv(1 << 16)
        assert chunk, "the server closed the connection"
        data += chunk
        if headers_at is None and b"\r\n\r\n" in data:
            headers_at = time.perf_counter()
        if headers_at is not None:
            head, _, body = data.partition(b"\r\n\r\n")
            length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
            if len(body) >= length:
                return time.perf_counter() - headers_at, body


def test_keep_alive_answers_do_not_wait_for_delayed_acks(reference, mnist):
    """The server writes an answer's headers and body separately; with Nagle's algorithm
    on, the body waits for the client's delayed ACK of the headers (~40 ms on Linux, for
    1-3 ms of work). Measured where that wait sits, between the headers' and the body's
    arrival, which the computation does not touch (it is done before the headers go)."""
    _, url, _ = reference
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"pixels": mnist.test_images[0].ravel().tolist()}).encode()
    req = (
        f"POST /api/predict HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    gaps = []
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        for _ in range(20):
            gap, answer = timed_answer(sock, req)
            assert json.loads(answer)["predicted"] == 7
            gaps.append(gap)
    assert statistics.median(gaps) < 0.015, [f"{1000 * t:.1f} ms" for t in gaps]


# ----- (3) a failed upload names the file -----


def blank_white_png():
    return png_bytes(Image.new("L", (60, 60), 255))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (blank_white_png(), "x.png: no ink found (blank image"),
        (b"just some text, not a picture\n", "x.png: not an image"),
    ],
    ids=["blank", "text"],
)
@pytest.mark.parametrize("path", ["/api/predict", "/api/inspect"])
def test_a_failed_upload_names_the_file(reference, data, message, path):
    _, url, log = reference
    status, r = request(url + path, {**image_body(data), "name": "x.png"})
    assert status == 400 and r["error"].startswith(message), r
    assert message in log[-1]


def test_an_uploads_name_is_made_safe_for_one_line(reference):
    _, url, _ = reference
    body = {**image_body(b"text"), "name": "C:\\Users\\me\\sev\nen\x1b.png"}
    status, r = request(url + "/api/predict", body)
    assert status == 400 and r["error"].startswith("seven.png: not an image"), r
    status, r = request(url + "/api/predict", {**image_body(b"text"), "name": 7})
    assert status == 400 and "'name' must be a string" in r["error"]
    status, r = request(url + "/api/predict", {"image": "data:image/png;base64,", "name": "e.png"})
    assert status == 400 and r["error"] == "e.png: 'image' is empty (the file has no bytes)"


# ----- the softmax made visible -----


def test_softmax_steps_are_the_engines_softmax(reference, mnist):
    inspector, url, _ = reference
    digit = mnist.test_images[3]
    for path in ("/api/predict", "/api/inspect"):
        _, r = request(url + path, {"pixels": digit.ravel().tolist()})
        s = r["softmax"]
        z = load_model_like(inspector).forward(inspector.norm.norm(digit))[0]
        assert s["logits"] == z.tolist()
        assert s["max"] == z.max() and s["shifted"] == (z - z.max()).tolist()
        assert s["exp"] == np.exp(z - z.max()).tolist()
        assert s["sum"] == float(np.exp(z - z.max()).sum())
        # exactly the engine's softmax, and the probabilities the response shows
        assert s["probabilities"] == softmax(z[None])[0].tolist() == r["probabilities"]


def test_no_softmax_steps_for_a_network_without_one(tmp_path, mnist):
    from numpycnn.data import Normalization
    from numpycnn.engine import Sequential
    from numpycnn.inspector import Inspector
    from numpycnn.modelfile import load_model, save_model

    layers = [{"type": "flatten"}, {"type": "dense", "units": 10}, {"type": "sigmoid"}]
    model = Sequential(layers, loss="binary_cross_entropy", dtype="float64")
    save_model(tmp_path / "m.pkl", model, Normalization.fit("standard", mnist.test_images[:50]))
    inspector = Inspector(load_model(tmp_path / "m.pkl"))
    assert inspector.softmax(inspector.trace(mnist.test_images[0])) is None


# ----- (14) a test image knows its label -----


def test_a_misclassified_test_image_says_so_and_its_backward_pass_is_its_loss(reference, scored):
    inspector, url, _ = reference
    probs, labels = scored
    wrong = int(np.flatnonzero(probs.argmax(axis=1) != labels)[0])
    right = int(np.flatnonzero(probs.argmax(axis=1) == labels)[0])
    true = int(labels[wrong])
    for path in ("/api/predict", "/api/inspect"):
        _, r = request(url + path, {"test_index": wrong})
        assert r["true_label"] == true and r["misclassified"] is True
        assert r["predicted"] == int(probs[wrong].argmax()) != true
        _, r = request(url + path, {"test_index": right})
        assert r["true_label"] == int(labels[right]) and r["misclassified"] is False
        _, r = request(url + path, {"pixels": [0] * 700 + [255] * 84})
        assert r["true_label"] is None and r["misclassified"] is None
    _, r = request(url + "/api/inspect", {"test_index": wrong})
    q = r["backward"]["quantity"]
    assert q["kind"] == "loss" and q["label"] == true
    assert q["reason"] == "the true label of a misclassified test image"
    assert q["value"] == pytest.approx(-np.log(probs[wrong, true]), rel=1e-9)
    digit = inspector.digit(test_index=wrong)
    g = probs[wrong].copy()
    g[true] -= 1  # dL/dz of the softmax cross-entropy
    dx, _, _ = engine_backward(inspector, digit, g)
    np.testing.assert_allclose(array(r["backward"]["input"]), dx.astype(np.float32), rtol=1e-6)
    # the request still chooses
    _, r = request(url + "/api/inspect", {"test_index": wrong, "class": true})
    assert r["backward"]["quantity"] == {
        "kind": "score",
        "class": true,
        "value": pytest.approx(r["logits"][true]),
        "reason": "requested",
    }
    # a correctly classified test image keeps the predicted class's score
    _, r = request(url + "/api/inspect", {"test_index": right})
    q = r["backward"]["quantity"]
    assert q["kind"] == "score" and q["class"] == int(labels[right])
    assert q["reason"] == "the predicted class"


# ----- (9) negligible gradients -----


def test_the_loss_of_a_confident_correct_digit_is_flagged_negligible(reference, scored):
    inspector, url, _ = reference
    probs, labels = scored
    index = int(np.argmax(probs[np.arange(len(labels)), labels]))  # the most confident
    label = int(labels[index])
    assert probs[index, label] > 1 - 1e-9
    _, r = request(url + "/api/inspect", {"test_index": index, "label": label})
    back = r["backward"]
    assert back["quantity"]["value"] < 1e-9  # the loss is ~0
    assert back["negligible_below"] == NEGLIGIBLE and "score" in back["reference"]
    digit = inspector.digit(test_index=index)
    g = probs[index].copy()
    g[label] -= 1
    dx, reaching, _ = engine_backward(inspector, digit, g)
    ref_dx, ref_reaching, _ = engine_backward(inspector, digit, np.eye(10)[label])
    assert back["input_max_abs"] == pytest.approx(np.abs(dx).max(), rel=1e-12, abs=1e-300)
    assert back["input_relative"] == pytest.approx(np.abs(dx).max() / np.abs(ref_dx).max())
    assert back["input_negligible"] is True and back["input_relative"] < NEGLIGIBLE
    for entry, got, ref in zip(back["layers"], reaching, ref_reaching):
        assert entry["max_abs"] == pytest.approx(np.abs(got).max(), rel=1e-12, abs=1e-300)
        assert entry["negligible"] is True, entry["label"]
        if np.abs(ref).max() > 0:
            assert entry["relative"] == pytest.approx(np.abs(got).max() / np.abs(ref).max())
        if "weight_grad_max_abs" in entry:
            assert entry["weight_grad_negligible"] is True
    # the same image's loss for a wrong label is far from negligible
    _, r = request(url + "/api/inspect", {"test_index": index, "label": (label + 1) % 10})
    back = r["backward"]
    assert back["input_negligible"] is False and back["input_relative"] > 1e-2
    assert not any(e["negligible"] for e in back["layers"])
    # and a class score is its own reference
    _, r = request(url + "/api/inspect", {"test_index": index})
    back = r["backward"]
    assert back["input_relative"] == 1.0 and back["input_negligible"] is False
    assert {e["relative"] for e in back["layers"]} == {1.0}


# ----- (10) saliency and gradient x input -----


def test_gradient_times_input_and_the_saliency_in_float64(reference, mnist):
    inspector, url, _ = reference
    digit = mnist.test_images[11]
    _, r = request(url + "/api/inspect", {"pixels": digit.ravel().tolist(), "class": 6})
    back = r["backward"]
    x = inspector.norm.norm(digit).astype(np.float64)
    exact = inspector.backward(inspector.trace(digit), target=6)
    product = exact["input"] * x[0]
    np.testing.assert_array_equal(exact["input_times_gradient"], product)
    np.testing.assert_array_equal(array(back["input_times_gradient"]), product.astype(np.float32))
    assert back["input_times_gradient_range"] == [product.min(), product.max()]
    assert back["input_times_gradient_sum"] == pytest.approx(product.sum(), rel=1e-12)
    np.testing.assert_array_equal(array(r["input"]), x[0].astype(np.float32))
    # the saliency, checked by central differences at ink pixels and background pixels
    checked = 0
    for pixel in [(0, 14, 14), (0, 10, 16), (0, 18, 12), (0, 20, 20), (0, 2, 2), (0, 7, 13)]:
        numeric = central_difference(inspector, x, pixel, lambda out: out[0, 6])
        if numeric is None:  # the step crosses a ReLU or max-pool kink
            continue
        assert exact["input"][pixel] == pytest.approx(numeric, rel=1e-5, abs=1e-8), pixel
        checked += 1
    assert checked >= 4
