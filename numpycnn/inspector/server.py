"""The inspector's local web server: one page and a small JSON API over ``Inspector``.

The standard library's ``ThreadingHTTPServer`` is enough for one user on one machine, as
pydoc's server shows: one thread per request, no dependency. The page is a single
self-contained file shipped with the package (``page.html`` beside this module); the server serves
only that, by exact name, so there is no file path to traverse. Every other path is 404.

API (JSON in, JSON out; arrays as ``{"shape": [...], "float32"|"uint8": base64}``, little-
endian, which the page reads straight into typed arrays):

- ``GET /api/model``: the network, layer by layer, its input (``input``: channels, size,
  colour, whether it can be drawn, how a file is prepared), ``class_names``, and ``run``:
  whether a run folder is served.
- ``POST /api/predict``: ``{"image": base64 file | "pixels": [784] | "test_index": n}``
  (with an image, optionally ``"name"``: the file's name, which its errors then name) ->
  the 28x28 ``digit`` the network sees, its ``probabilities`` and ``predicted`` class;
  ``true_label`` and ``misclassified`` for a test image (else null); ``softmax``, the
  softmax step by step (``logits``, their ``max``, ``shifted`` = z - max, ``exp``, their
  ``sum``, ``probabilities`` = exp / sum; null when the network ends in no softmax);
  ``ood``, whether the input looks like a digit at all (``novelty.Novelty.judge``:
  ``flag``, a one-sentence ``text``, the feature distance ``score`` to the nearest
  training digit with its ``threshold``, ``percentile`` and ``measure``, the ``ink`` and
  its ``ink_range``; ``{"flag": null, "text": why}`` without the MNIST training images).
- ``POST /api/inspect``: the same input, optional ``"class"`` or ``"label"`` -> all of
  the above, the ``logits``, the normalised ``input`` (C, H, W), every layer's
  ``activations`` and the ``backward`` pass: its ``quantity`` (with ``reason``: a
  misclassified test image's default is the loss for its true label), the saliency
  ``input`` = dQ/dx, ``input_times_gradient`` (dQ/dx times the normalised input, its
  ``_range`` and ``_sum``), and for every map its largest |value| (``input_max_abs``,
  each layer's ``max_abs`` and ``weight_grad_max_abs``), its size ``relative`` to the
  same map for the class score of the same class (``reference`` says so in words) and
  ``negligible`` when that is below ``negligible_below`` (1e-6), or the map is all zeros.
- ``POST /api/unit``: the input, ``"layer"`` and ``"unit"`` -> that unit's arithmetic and
  its receptive ``field`` (as below).
- ``GET /api/field?layer=L&unit=a,b,c``: the receptive field of that unit, no image needed:
  ``input`` and ``previous`` (the layer before), and ``chain``, the region of every earlier
  layer's output, each ``{"layer", "of", "shape", "ranges": [[start, stop), ...]}`` (one
  half-open range per dimension, clipped to the map); a conv unit's ``filter`` and
  ``kernel``, a flatten unit's ``from`` (channel, row, column). ``/api/model``'s layers
  carry their ``geometry`` (window kernel, stride, padding; elementwise; flatten ``from``
  shape; dense) for the page to walk regions itself.
- ``GET /api/filters``, ``GET /api/history``; ``GET /api/layers``: each layer's weight
  norm, loss-gradient norm and ReLU dead fraction on 64 test images (as layers.csv).
- ``GET /api/run[?since=STEP]``, for a run folder (``run.RunView``): ``runlog.read_run``'s
  state with ``running``, ``finished`` and ``failed`` (failed or crashed) and ``epoch``
  (epochs done); ``since``: only the per-batch rows after that step. For a model file: 404,
  "not a run folder". A deleted folder answers its last state with state "gone".
- ``GET /api/snapshots`` -> ``{"snapshots": [{"step", "epoch", "time"}]}`` ([] for a model
  file). ``predict``, ``inspect`` and ``unit`` take an optional ``"snapshot": STEP`` (default
  the latest) and answer with that snapshot's parameters, saying which ``snapshot`` they
  used (null for a model file); an unknown step is a 400 naming it.
- ``POST /api/timeline``: the input -> ``{"steps": [...], "epochs": [...],
  "probabilities": [[...] per step]}``, its class probabilities under every snapshot.
- ``GET /api/confusion``: the test set's confusion matrix (computed once, cached).
- ``GET /api/confusion/cell?true=T&predicted=P``: that cell's images, most confident first.
- ``filters``, ``confusion`` and ``confusion/cell`` take ``?snapshot=STEP`` too (each
  snapshot's confusion matrix is computed on demand and kept while it stays loaded).

A bad request gets a 4xx status and ``{"error": "one line"}``; bodies above ``MAX_BODY``
get 413 unread. When bound to a loopback address, requests must name a loopback host,
so that a web page elsewhere cannot reach the server through DNS rebinding. The server
never prints: it reports each failed request to its ``log`` callable, in one line.
"""

import ipaddress
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import numpy as np

from ..data import DataError
from ..imageprep import ImageError
from .backward_numbers import answer as backward_answer
from .compute import InspectionError
from .learning import Sessions
from .wire import RequestError, body_input, dumps, optional_int, to_json

__all__ = ["MAX_BODY", "InspectServer", "dumps", "make_server", "to_json"]

#: Largest request body accepted: a phone photo, base64-encoded, fits.
MAX_BODY = 12 * 1024 * 1024
#: Bodies up to this size over the limit are read and dropped before the 413, so that the
#: client sees it; larger ones are refused unread and the connection closed.
DRAIN_LIMIT = 4 * MAX_BODY
PAGE = "page.html"
#: The page may talk to this server only, and run only its own inline code.
CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
    "img-src data: blob:; connect-src 'self'; base-uri 'none'; form-action 'none'"
)
LOOPBACK_NAMES = ("localhost",)


class InspectServer(ThreadingHTTPServer):
    """A threading HTTP server that answers for one ``Inspector``, or for a run folder
    (``run``, a ``run.RunView``). ``opener``, instead of both: a callable returning
    (inspector, run), called on the first request that needs them and again until it
    succeeds (a run whose first snapshot is not written yet: those requests get 503)."""

    daemon_threads = True  # a stuck client never keeps the process alive
    allow_reuse_address = True

    def __init__(self, address, inspector, log=None, run=None, opener=None, sock=None):
        self._inspector, self._run, self._opener = inspector, run, opener
        self._opening = threading.Lock()
        self._learning = None  # /api/learn's model copies, bounded; made on first use
        self.log = log or (lambda line: None)
        self.page = resources.files(__package__).joinpath(PAGE).read_bytes()
        if sock is None:
            super().__init__(address, Handler)
        else:  # a socket bound and listening already (train --inspect's, passed to us)
            super().__init__(sock.getsockname()[:2], Handler, bind_and_activate=False)
            self.socket.close()
            self.socket, self.server_address = sock, sock.getsockname()
        host = self.server_address[0] or "0.0.0.0"
        self.loopback_only = _is_loopback(host)

    def _open(self):
        if self._inspector is None:
            with self._opening:
                if self._inspector is None:
                    try:
                        self._inspector, self._run = self._opener()
                    except ValueError as exc:  # RunFolderError, ModelFileError
                        raise RequestError(503, f"not ready yet: {exc}") from None

    @property
    def inspector(self):
        self._open()
        return self._inspector

    @property
    def run(self):
        """The ``run.RunView`` of a run folder, else None."""
        self._open()
        return self._run

    @property
    def learning(self):
        """/api/learn's ``learning.Sessions`` over the served model (for a run folder, the
        model the server opened), made on first use."""
        inspector = self.inspector  # opens a run folder first (503 until it can)
        with self._opening:
            if self._learning is None:
                self._learning = Sessions(inspector.saved)
        return self._learning

    @property
    def url(self):
        host, port = self.server_address[:2]
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{port}/"

    def handle_error(self, request, client_address):
        # The handler answers every error itself; what reaches here is a client that went
        # away mid-request. One line, never the default traceback on stderr.
        self.log(f"{client_address[0]}: connection error")


def _is_loopback(host):
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def make_server(inspector, host="127.0.0.1", port=0, log=None, run=None, opener=None, sock=None):
    """An ``InspectServer`` bound to ``host``:``port`` (0: a free port), not yet serving;
    ``run``: the ``run.RunView`` of a run folder (``inspector`` is then its ``base``);
    ``opener``: see ``InspectServer``; ``sock``: a listening socket to serve on instead."""
    return InspectServer((host, port), inspector, log, run, opener, sock)


class Handler(BaseHTTPRequestHandler):
    server_version = "numpycnn-inspect"
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle's algorithm the body of a
    # small answer waits for the client's delayed ACK of the headers (~40 ms on Linux).
    disable_nagle_algorithm = True
    timeout = 60  # seconds a silent connection may hold its thread

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # successes are not logged; errors are, one line each, in _error

    # ----- plumbing -----

    def _send(self, status, payload, content_type, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in extra:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def _json(self, value, status=200):
        self._send(status, dumps(value), "application/json")

    def _error(self, status, message):
        message = " ".join(str(message).split())
        path = urlsplit(self.path).path if self.path else ""
        self.server.log(f"{self.command} {path[:200]}: {status} {message}")
        self._json({"error": message}, status)

    def _check_host(self):
        if not self.server.loopback_only:
            return
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        name = name.strip("[]")
        if not _is_loopback(name):
            raise RequestError(403, f"host {host!r:.60} is not this machine")

    def _read_json(self):
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise RequestError(411, "a Content-Length is required (no chunked bodies)")
        length = self.headers.get("Content-Length")
        try:
            length = int(length)
        except (TypeError, ValueError):
            self.close_connection = True
            raise RequestError(411, "a Content-Length is required") from None
        if length < 0:
            self.close_connection = True
            raise RequestError(400, "negative Content-Length")
        if length > MAX_BODY:
            self.close_connection = True
            if length <= DRAIN_LIMIT:
                # read and drop it, so that the client (a browser) gets to see the answer
                left = length
                while left > 0 and (chunk := self.rfile.read(min(1 << 20, left))):
                    left -= len(chunk)
            raise RequestError(
                413, f"request body of {length:,} bytes is over the limit of {MAX_BODY:,}"
            )
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RequestError(400, f"malformed JSON ({exc})") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object")
        return body

    def _dispatch(self, routes):
        try:
            self._check_host()
            url = urlsplit(self.path)
            route = routes.get(url.path)
            if route is None:
                other = self.POST if routes is self.GET else self.GET
                if url.path in other:
                    raise RequestError(405, f"{self.command} is not allowed on {url.path}")
                raise RequestError(404, f"no such page: {url.path[:200]}")
            route(self, url)
        except RequestError as exc:
            self._error(exc.status, exc)
        except (InspectionError, ImageError) as exc:
            self._error(400, exc)
        except DataError as exc:  # the test set could not be downloaded or read
            self._error(503, f"the test set is unavailable: {exc}")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # the server must survive anything; say what went wrong
            self._error(500, f"internal error: {type(exc).__name__}: {exc}")

    def do_GET(self):
        self._dispatch(self.GET)

    def do_HEAD(self):
        self._dispatch(self.GET)

    def do_POST(self):
        self._dispatch(self.POST)

    def _refuse(self):
        try:
            raise RequestError(405, f"{self.command} is not allowed")
        except RequestError as exc:
            self._error(exc.status, exc)

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse

    # ----- routes -----

    def page(self, url):
        self._send(
            200,
            self.server.page,
            "text/html; charset=utf-8",
            [("Content-Security-Policy", CSP), ("Referrer-Policy", "no-referrer")],
        )

    def model(self, url):
        self._json({**self.server.inspector.summary(), "run": self.server.run is not None})

    def _query_snapshot(self, url):
        """(Inspector, step) of a GET's ``?snapshot=STEP`` (default: the latest)."""
        values = parse_qs(url.query).get("snapshot")
        step = None
        if values:
            try:
                step = int(values[0])
            except ValueError:
                message = f"'snapshot' must be a step (an integer), got {values[0]!r:.40}"
                raise RequestError(400, message) from None
        return self._snapshot({"snapshot": step})

    def filters(self, url):
        ins, step = self._query_snapshot(url)
        self._json({"filters": ins.filters(), "snapshot": step})

    def history(self, url):
        self._json(self.server.inspector.history())

    def layers(self, url):
        ins, step = self._query_snapshot(url)
        self._json({**ins.layer_figures(), "snapshot": step})

    def confusion(self, url):
        ins, step = self._query_snapshot(url)
        self._json({**ins.confusion(), "snapshot": step})

    def confusion_cell(self, url):
        query = parse_qs(url.query)
        args = {}
        for key in ("true", "predicted", "limit"):
            values = query.get(key)
            if values is None:
                if key == "limit":
                    continue
                raise RequestError(400, f"missing query parameter '{key}'")
            try:
                args[key] = int(values[0])
            except ValueError:
                message = f"'{key}' must be an integer, got {values[0]!r:.40}"
                raise RequestError(400, message) from None
        ins, step = self._query_snapshot(url)
        self._json({**ins.confusion_cell(**args), "snapshot": step})

    def field(self, url):
        query = parse_qs(url.query)
        if "layer" not in query or "unit" not in query:
            raise RequestError(400, "give 'layer' (an index from 0) and 'unit' (e.g. 3,11,9)")
        try:
            layer = int(query["layer"][0])
            unit = [int(v) for v in query["unit"][0].split(",")]
        except ValueError:
            raise RequestError(400, "'layer' and 'unit' must be integers (unit: a,b,c)") from None
        self._json(self.server.inspector.field(layer, unit))

    def _view(self):
        """The run folder served (a ``run.RunView``); 404 for a model file."""
        view = self.server.run
        if view is None:
            raise RequestError(
                404, f"not a run folder: {self.server.inspector.name} is a model file"
            )
        return view

    def run(self, url):
        view = self._view()
        query = parse_qs(url.query)
        since = None
        if "since" in query:
            try:
                since = int(query["since"][0])
            except ValueError:
                message = f"'since' must be a step (an integer), got {query['since'][0]!r:.40}"
                raise RequestError(400, message) from None
        self._json(view.state(since))

    def snapshots(self, url):
        view = self.server.run
        self._json({"snapshots": [] if view is None else view.snapshots()})

    def timeline(self, url):
        body = self._read_json()
        view = self._view()
        digit = self._digit(body, view.base)
        self._json(view.timeline(digit))

    def _snapshot(self, body):
        """(Inspector, step) the body asks for: its ``"snapshot"`` step, default the run's
        latest; the model's own inspector and None for a model file."""
        step = body.get("snapshot")
        view = self.server.run
        if view is None:
            if step is not None:
                raise RequestError(400, f"no snapshot at step {step!r:.40}: not a run folder")
            return self.server.inspector, None
        return view.inspector(step)

    def _digit(self, body, ins=None):
        ins = ins or self.server.inspector
        return ins.digit(**body_input(body, ins.form.size))

    def _about(self, body, digit, tr, ins, step):
        """What predict and inspect both say of the input: prediction, softmax steps, the
        true label of a test image, the out-of-distribution cue and the snapshot used."""
        predicted = int(np.argmax(tr.logits))
        true_label = ins.test_label(body["test_index"]) if "test_index" in body else None
        return {
            "probabilities": tr.probabilities.tolist(),
            "predicted": predicted,
            "true_label": true_label,
            "misclassified": None if true_label is None else predicted != true_label,
            "softmax": ins.softmax(tr),
            "ood": ins.ood(digit),
            "snapshot": step,
        }

    def predict(self, url):
        body = self._read_json()
        ins, step = self._snapshot(body)
        digit = self._digit(body, ins)
        self._json({"digit": digit, **self._about(body, digit, ins.trace(digit), ins, step)})

    def inspect(self, url):
        body = self._read_json()
        ins, step = self._snapshot(body)
        digit = self._digit(body, ins)
        target, label = optional_int(body, "class"), optional_int(body, "label")
        tr = ins.trace(digit)
        about = self._about(body, digit, tr, ins, step)
        self._json(
            {
                "digit": digit,
                **about,
                "logits": tr.logits.tolist(),
                "input": tr.x[0],
                "activations": ins.activations(tr),
                "backward": ins.backward(
                    tr, target=target, label=label, true_label=about["true_label"]
                ),
            }
        )

    def unit(self, url):
        body = self._read_json()
        ins, step = self._snapshot(body)
        digit = self._digit(body, ins)
        if "layer" not in body or "unit" not in body:
            raise RequestError(400, "give 'layer' (an index from 0) and 'unit' (a list)")
        self._json({**ins.unit(ins.trace(digit), body["layer"], body["unit"]), "snapshot": step})

    # ----- the backward pass in numbers and learning from one example (#18) -----

    def unit_backward(self, url):
        body = self._read_json()
        ins, step = self._snapshot(body)
        answer = backward_answer(ins.trace(self._digit(body, ins)), body)
        self._json({**answer, "snapshot": step})

    def learn(self, url):
        body = self._read_json()
        ins = self.server.inspector
        learning = self.server.learning
        self._json(learning.answer(body, lambda: ins.form.normalise(ins.norm, self._digit(body))))

    GET = {
        "/": page,
        "/inspect.html": page,
        "/api/model": model,
        "/api/filters": filters,
        "/api/history": history,
        "/api/confusion": confusion,
        "/api/layers": layers,
        "/api/confusion/cell": confusion_cell,
        "/api/field": field,
        "/api/run": run,
        "/api/snapshots": snapshots,
    }
    POST = {
        "/api/predict": predict,
        "/api/inspect": inspect,
        "/api/unit": unit,
        "/api/timeline": timeline,
    }
    POST.update({"/api/unit_backward": unit_backward, "/api/learn": learn})
