"""The inspector's server on 127.0.0.1 under bad and hostile requests: it serves only its
page, refuses every bad input with a 4xx and a one-line JSON error that it logs once,
and keeps answering correctly, also under many concurrent requests."""

import http.client
import io
import json
import socket
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from test_inspect_api import array, image_body, png_bytes, reference_inspector, request, serving

from numpycnn.imageprep import decode_digit
from numpycnn.inspector.server import MAX_BODY


@pytest.fixture(scope="module")
def server(reference_params_path, mnist):
    inspector = reference_inspector(reference_params_path, mnist)
    with serving(inspector) as (url, log):
        yield url, log


@pytest.fixture(scope="module")
def seven(mnist):
    """A real test digit (a 7) as PNG bytes."""
    return png_bytes(Image.fromarray(mnist.test_images[0]))


def raw_get(url, target, headers=None):
    """A GET of ``target`` exactly as written (no client-side normalisation of the path)."""
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.putrequest("GET", target, skip_host=bool(headers and "Host" in headers))
    for name, value in (headers or {}).items():
        conn.putheader(name, value)
    conn.endheaders()
    response = conn.getresponse()
    body = response.read()
    conn.close()
    return response.status, body


def bomb_png(width, height):
    """A valid PNG header declaring ``width`` x ``height`` pixels, in a few hundred bytes."""

    def chunk(kind, data):
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * (width + 1) * 8)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def test_serves_its_page_with_a_strict_content_policy(server):
    url, _ = server
    for path in ("/", "/inspect.html"):
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=30)
        conn.request("GET", path)
        r = conn.getresponse()
        body = r.read()
        assert r.status == 200 and body.startswith(b"<!doctype html>")
        assert "connect-src 'self'" in r.getheader("Content-Security-Policy")
        assert r.getheader("Content-Type") == "text/html; charset=utf-8"
        conn.close()
    # the page names no other host: no CDN, no fonts, nothing fetched from elsewhere
    assert b"http://" not in body.replace(b"http://www.w3.org/2000/svg", b"")
    assert b"https://" not in body


@pytest.mark.parametrize(
    "target",
    [
        "/../setup.cfg",
        "/..%2fsetup.cfg",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/static/..%2f..%2fmodelfile.py",
        "/static/inspect.html",
        "//etc/passwd",
        "/etc/passwd",
        "/inspect.html/../../setup.cfg",
        "/%2Fetc%2Fpasswd",
        "/api/../server.py",
        "/api/nothing",
        "/favicon.ico",
        "/page.html%00.py",
    ],
)
def test_no_path_reaches_another_file(server, target):
    url, log = server
    status, body = raw_get(url, target)
    assert status == 404
    error = json.loads(body)["error"]
    assert error.startswith("no such page") and "\n" not in error
    assert b"[metadata]" not in body and b"root:" not in body
    assert log[-1].startswith("GET ") and "404" in log[-1]


def test_absolute_url_targets_are_refused(server):
    url, _ = server
    status, _ = raw_get(url, "http://127.0.0.1/etc/passwd")
    assert status == 404


def test_a_foreign_host_name_is_refused(server):
    """DNS rebinding: a page on another site resolving its name to 127.0.0.1."""
    url, _ = server
    status, body = raw_get(url, "/api/model", {"Host": "evil.example:80"})
    assert status == 403 and "is not this machine" in json.loads(body)["error"]
    assert raw_get(url, "/api/model", {"Host": "localhost"})[0] == 200


def test_a_body_over_the_limit_gets_413_unread(server):
    url, log = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(
            b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {100 * MAX_BODY}\r\n\r\n".encode()
        )
        reply = b""
        while chunk := s.recv(65536):  # the server answers at once and closes
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 413")
    assert "over the limit" in reply.split("\r\n\r\n", 1)[1]
    assert "413" in log[-1]
    # a real upload just over the limit is read, dropped and answered the same way
    status, r = request(url + "/api/predict", raw=b"x" * (MAX_BODY + 10))
    assert status == 413 and "over the limit" in r["error"]


def bad_requests(seven):
    return [
        ("not JSON", "/api/predict", b"{this is not json", "malformed JSON"),
        ("not an object", "/api/predict", b"[1, 2, 3]", "must be a JSON object"),
        ("no input", "/api/predict", {"layer": 1}, "give exactly one of"),
        ("two inputs", "/api/predict", {"test_index": 1, "pixels": [0] * 784}, "exactly one"),
        ("bad base64", "/api/predict", {"image": "data:image/png;base64,@@@"}, "not valid base64"),
        ("not an image", "/api/predict", image_body(b"hello, this is text"), "not an image"),
        ("blank image", "/api/predict", image_body(png_bytes(Image.new("L", (50, 50)))), "no ink"),
        ("gif", "/api/predict", image_body(gif_bytes()), "unsupported image format GIF"),
        ("bomb", "/api/predict", image_body(bomb_png(9000, 9000)), "image too large (9000x9000"),
        ("huge bomb", "/api/predict", image_body(bomb_png(30000, 30000)), "image too large"),
        ("truncated", "/api/predict", image_body(seven[:60]), "corrupted or truncated"),
        ("short pixels", "/api/predict", {"pixels": [0] * 100}, "784 numbers"),
        ("pixel range", "/api/predict", {"pixels": [300] * 784}, "from 0 to 255"),
        ("pixel type", "/api/predict", {"pixels": ["a"] * 784}, "list of 784 numbers"),
        ("test index", "/api/predict", {"test_index": 10**6}, "test index 1000000 is out of range"),
        ("class", "/api/inspect", {**image_body(seven), "class": 10}, "class 10 is out of range"),
        ("label", "/api/inspect", {**image_body(seven), "label": -1}, "label -1 is out of range"),
        ("class type", "/api/inspect", {**image_body(seven), "class": "3"}, "must be an integer"),
        ("layer", "/api/unit", {**image_body(seven), "layer": 9, "unit": [0]}, "layer 9 is out"),
        (
            "unit",
            "/api/unit",
            {**image_body(seven), "layer": 0, "unit": [8, 0, 0]},
            "unit [8, 0, 0] is outside layer 1-conv2d (shape 8x24x24)",
        ),
        (
            "unit rank",
            "/api/unit",
            {**image_body(seven), "layer": 6, "unit": [1, 2]},
            "outside layer 7-dense",
        ),
        ("no unit", "/api/unit", image_body(seven), "give 'layer'"),
        ("cell", "/api/confusion/cell?true=3&predicted=11", None, "predicted class 11 is out"),
        ("cell query", "/api/confusion/cell?true=x&predicted=1", None, "'true' must be an integer"),
        ("cell missing", "/api/confusion/cell?true=1", None, "missing query parameter"),
        ("method", "/api/model", {}, "POST is not allowed on /api/model"),
        ("method 2", "/api/predict", None, "GET is not allowed on /api/predict"),
    ]


def gif_bytes():
    buf = io.BytesIO()
    Image.fromarray(np.eye(28, dtype=np.uint8) * 255).save(buf, format="GIF")
    return buf.getvalue()


def test_every_bad_request_gets_a_4xx_and_one_logged_line(server, seven):
    url, log = server
    for name, path, body, message in bad_requests(seven):
        before = len(log)
        raw = body if isinstance(body, bytes) else None
        status, r = request(url + path, None if raw else body, raw=raw)
        assert 400 <= status < 500, (name, status, r)
        assert set(r) == {"error"} and "\n" not in r["error"], name
        assert message in r["error"], (name, r["error"])
        assert len(log) == before + 1 and str(status) in log[-1], (name, log[before:])
    # and it still answers
    status, r = request(url + "/api/predict", image_body(seven))
    assert status == 200 and r["predicted"] == 7


def test_a_bomb_is_refused_without_pillows_warning(server, capfd):
    url, _ = server
    status, r = request(url + "/api/predict", image_body(bomb_png(12000, 12000)))
    assert status == 400 and "the limit is 40,000,000" in r["error"]
    assert "DecompressionBomb" not in capfd.readouterr().err


def test_other_methods_are_refused(server):
    url, _ = server
    for method in ("PUT", "DELETE", "PATCH", "OPTIONS"):
        status, r = request(url + "/api/model", method=method)
        assert status == 405 and "not allowed" in r["error"]


def test_many_concurrent_requests_are_all_answered_correctly(server, mnist):
    """200 requests from 8 threads, mixing digits, units, bad inputs and the page."""
    url, _ = server
    digits = [mnist.test_images[i] for i in range(10)]
    expected = [request(url + "/api/predict", {"pixels": d.ravel().tolist()})[1] for d in digits]

    def one(k):
        d = k % 10
        if k % 5 == 0:
            status, r = request(url + "/api/predict", {"pixels": [999] * 784})
            return status == 400 and "0 to 255" in r["error"]
        if k % 5 == 1:
            status, r = request(
                url + "/api/unit", {"pixels": digits[d].ravel().tolist(), "layer": 8, "unit": [d]}
            )
            return status == 200 and r["output"] == expected[d]["logits"][d]
        if k % 5 == 2:
            return raw_get(url, "/")[0] == 200
        status, r = request(url + "/api/inspect", {"pixels": digits[d].ravel().tolist()})
        return (
            status == 200
            and r["probabilities"] == expected[d]["probabilities"]
            and np.array_equal(array(r["digit"]), digits[d])
        )

    for r in expected:  # logits for the unit checks
        r["logits"] = None
    for d in range(10):
        _, r = request(url + "/api/inspect", {"pixels": digits[d].ravel().tolist()})
        expected[d]["logits"] = r["logits"]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(200)))
    assert all(results), results.index(False)
    assert request(url + "/api/predict", {"pixels": digits[0].ravel().tolist()})[0] == 200


def test_a_client_that_hangs_up_does_not_stop_the_server(server, seven):
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    for partial in (b"POST /api/predict HTTP/1.1\r\nContent-Length: 5000\r\n\r\n{", b"GET /ap"):
        with socket.create_connection((host, int(port)), timeout=5) as s:
            s.sendall(partial)
    status, r = request(url + "/api/predict", image_body(seven))
    assert status == 200
    np.testing.assert_array_equal(array(r["digit"]), decode_digit(seven))


@pytest.mark.parametrize(
    "value",
    [
        {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": (np.int64(3), np.bool_(True))},
        {"p": [0.5, np.float32(0.25), np.float16(1.5)], "n": np.uint8(7), "s": "text"},
        {"bad": [1.0, float("nan")], "inf": np.float32("inf"), "ok": np.float64(2.0)},
        {"nan64": np.float64("nan"), 3: "an int key"},
        {"image": np.zeros((2, 2), np.uint8), "nested": [{"x": np.float32("-inf")}]},
    ],
)
def test_dumps_is_the_recursive_conversion_whatever_the_payload(value):
    from numpycnn.inspector.server import dumps, to_json

    expected = json.dumps(to_json(value), separators=(",", ":"), allow_nan=False)
    assert dumps(value) == expected.encode()


def test_dumps_of_a_real_inspection_is_the_recursive_conversion(reference_params_path, mnist):
    from numpycnn.inspector.server import dumps, to_json

    inspector = reference_inspector(reference_params_path, mnist)
    digit = mnist.test_images[0]
    tr = inspector.trace(digit)
    payload = {
        "digit": digit,
        "softmax": inspector.softmax(tr),
        "activations": inspector.activations(tr),
        "backward": inspector.backward(tr, true_label=int(mnist.test_labels[0])),
        "unit": inspector.unit(tr, 1, [0, 3, 4]),
    }
    expected = json.dumps(to_json(payload), separators=(",", ":"), allow_nan=False)
    assert dumps(payload) == expected.encode()
