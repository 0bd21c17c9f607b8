"""The MNIST download path, against a real HTTP server on 127.0.0.1 serving ../shared/mnist.

The first segment of a request's path picks how the server behaves, so one server provides
good and bad mirrors side by side: ``http://127.0.0.1:PORT/missing/`` answers 404, and so on.
"""

import gzip
import hashlib
import shutil
import socket
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from numpycnn import data
from numpycnn.data import DataError, DownloadError, fetch_mnist

# Tiny timeouts and backoff so that retry paths take milliseconds.
FAST = {"timeout": (2, 2), "retries": 2, "backoff": 0.01}
FLAKY_FAILURES = 2


class MirrorHandler(BaseHTTPRequestHandler):
    """Serves the MNIST folder under /<mode>/<file>, misbehaving as <mode> says."""

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        count = self.server.record(self.path, self.headers.get("Accept-Encoding"))
        source = self.server.root / name
        if mode == "missing" or not source.is_file():
            self.send_error(404)
        elif mode == "broken":
            self.send_error(500)
        elif mode == "flaky" and count <= FLAKY_FAILURES:
            self.send_error(503)
        elif mode == "wrong":  # a genuine MNIST file, but not the one asked for
            other = data.TEST_LABELS if name != data.TEST_LABELS else data.TRAIN_LABELS
            self.send_body((self.server.root / other).read_bytes())
        elif mode == "html":  # a 200 error page, as some proxies and hosts send
            self.send_body(b"<html><body>Service moved</body></html>")
        elif mode == "truncated":
            body = source.read_bytes()
            self.send_body(body[: len(body) // 2], length=len(body))
        elif mode == "stall":
            body = source.read_bytes()
            self.send_body(body[:1000], length=len(body))
            self.server.release.wait(10)
        else:
            self.send_body(source.read_bytes())

    def send_body(self, body, length=None):
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()

    def log_message(self, format, *args):
        """Keep the test output clean."""


class MirrorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root):
        super().__init__(("127.0.0.1", 0), MirrorHandler)
        self.root = root
        self.requests = []
        self.encodings = set()
        self.lock = threading.Lock()
        self.release = threading.Event()

    def record(self, path, encoding):
        """Log a request; how many times this path has been asked for so far."""
        with self.lock:
            self.requests.append(path)
            self.encodings.add(encoding)
            return self.requests.count(path)

    def url(self, mode):
        return f"http://127.0.0.1:{self.server_address[1]}/{mode}/"


@pytest.fixture(autouse=True)
def no_proxies_or_overrides(monkeypatch):
    """Talk to 127.0.0.1 directly whatever proxies the machine sets; ignore user overrides."""
    proxies = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
    for name in (*proxies, data.MIRROR_ENV, data.DATA_DIR_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def server(mnist_dir):
    httpd = MirrorServer(mnist_dir)
    # A short poll interval makes shutdown() return promptly.
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.fixture(scope="module")
def known_sums(mnist_dir):
    """SHA256SUMS of the shared folder: decoded-payload digests by .gz name."""
    lines = (mnist_dir / "SHA256SUMS").read_text().splitlines()
    pairs = (line.split() for line in lines if line and not line.startswith("#"))
    return {f"{name}.gz": digest for digest, name in pairs}


def closed_port_url():
    """A URL on 127.0.0.1 where nothing listens: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def payload_sha256(path):
    return hashlib.sha256(gzip.decompress(Path(path).read_bytes())).hexdigest()


def files_in(directory):
    return sorted(p.name for p in directory.iterdir())


def test_embedded_digests_are_the_shared_ones(known_sums):
    assert data.MNIST_FILES == known_sums


def test_downloads_and_verifies_the_four_files(server, tmp_path, known_sums):
    paths = fetch_mnist(tmp_path, [server.url("ok")], **FAST)

    assert list(paths) == list(data.MNIST_FILES)
    for name, path in paths.items():
        assert path == tmp_path / "mnist" / name
        assert payload_sha256(path) == known_sums[name]
        assert path.read_bytes() == (server.root / name).read_bytes()
    assert sorted(server.requests) == sorted(f"/ok/{name}" for name in data.MNIST_FILES)
    assert server.encodings == {"identity"}  # the .gz bytes as stored, not re-encoded
    assert files_in(tmp_path / "mnist") == sorted(data.MNIST_FILES)


def test_cached_files_are_not_fetched_again(server, tmp_path):
    first = fetch_mnist(tmp_path, [server.url("ok")], **FAST)
    stamps = {name: path.stat().st_mtime_ns for name, path in first.items()}
    server.requests.clear()

    second = fetch_mnist(tmp_path, [server.url("ok")], **FAST)

    assert server.requests == []
    assert second == first
    assert {name: path.stat().st_mtime_ns for name, path in second.items()} == stamps


def test_a_corrupt_cached_file_is_fetched_again(server, tmp_path, mnist_dir, known_sums):
    cache = tmp_path / "mnist"
    cache.mkdir()
    for name in data.MNIST_FILES:
        shutil.copy(mnist_dir / name, cache / name)
    (cache / data.TRAIN_LABELS).write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\0"))

    fetch_mnist(tmp_path, [server.url("ok")], **FAST)

    assert server.requests == [f"/ok/{data.TRAIN_LABELS}"]
    assert payload_sha256(cache / data.TRAIN_LABELS) == known_sums[data.TRAIN_LABELS]


def test_404_moves_on_to_the_next_mirror_at_once(server, tmp_path):
    fetch_mnist(tmp_path, [server.url("missing"), server.url("ok")], **FAST)

    first, *rest = data.MNIST_FILES
    # One request, no retries; the mirror that worked is then asked first for the rest.
    assert server.requests == [f"/missing/{first}", f"/ok/{first}"] + [f"/ok/{n}" for n in rest]


def test_500_on_every_request_is_retried_then_reported(server, tmp_path):
    mirror = server.url("broken")
    with pytest.raises(DownloadError) as caught:
        fetch_mnist(tmp_path, [mirror], **FAST)

    message = str(caught.value)
    assert data.TRAIN_IMAGES in message
    assert f"{mirror} (HTTP 500" in message
    assert server.requests == [f"/broken/{data.TRAIN_IMAGES}"] * (1 + FAST["retries"])
    assert files_in(tmp_path / "mnist") == []


def test_503_twice_then_success(server, tmp_path, known_sums):
    paths = fetch_mnist(tmp_path, [server.url("flaky")], **FAST)

    assert Counter(server.requests) == {f"/flaky/{n}": FLAKY_FAILURES + 1 for n in data.MNIST_FILES}
    assert {name: payload_sha256(path) for name, path in paths.items()} == known_sums


def test_a_body_shorter_than_announced_is_not_kept(server, tmp_path):
    mirror = server.url("truncated")
    with pytest.raises(DownloadError) as caught:
        fetch_mnist(tmp_path, [mirror], **FAST)

    size = (server.root / data.TRAIN_IMAGES).stat().st_size
    assert f"{mirror} (transfer broken after {size // 2} of {size} bytes" in str(caught.value)
    assert files_in(tmp_path / "mnist") == []


def test_a_truncated_body_falls_back_to_the_next_mirror(server, tmp_path, known_sums):
    paths = fetch_mnist(tmp_path, [server.url("truncated"), server.url("ok")], **FAST)

    assert server.requests[:2] == [f"/truncated/{data.TRAIN_IMAGES}", f"/ok/{data.TRAIN_IMAGES}"]
    assert payload_sha256(paths[data.TRAIN_IMAGES]) == known_sums[data.TRAIN_IMAGES]


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("wrong", "fails the SHA-256 check"), ("html", "not a valid gzip file")],
)
def test_content_failing_verification_is_discarded(server, tmp_path, mode, reason, known_sums):
    bad = server.url(mode)
    paths = fetch_mnist(tmp_path, [bad, server.url("ok")], **FAST)
    assert server.requests[0] == f"/{mode}/{data.TRAIN_IMAGES}"
    assert {name: payload_sha256(path) for name, path in paths.items()} == known_sums

    with pytest.raises(DownloadError, match=reason):
        fetch_mnist(tmp_path / "alone", [bad], **FAST)
    assert files_in(tmp_path / "alone" / "mnist") == []


def test_a_stalled_transfer_times_out_and_moves_on(server, tmp_path):
    start = time.perf_counter()
    options = {**FAST, "timeout": (2, 0.3)}
    paths = fetch_mnist(tmp_path, [server.url("stall"), server.url("ok")], **options)

    assert server.requests[0] == f"/stall/{data.TRAIN_IMAGES}"
    assert all(path.is_file() for path in paths.values())
    assert time.perf_counter() - start < 8


def test_every_mirror_bad_lists_each_and_leaves_nothing(server, tmp_path):
    mirrors = [server.url(mode) for mode in ("missing", "broken", "truncated", "wrong", "html")]
    mirrors.append(closed_port_url())
    with pytest.raises(DownloadError) as caught:
        fetch_mnist(tmp_path, mirrors, **FAST)

    message = str(caught.value)
    assert "\n" not in message
    expected = ["HTTP 404", "HTTP 500", "transfer broken", "decoded content fails", "not a valid"]
    for mirror, reason in zip(mirrors, expected):
        assert f"{mirror} ({reason}" in message
    assert f"{mirrors[-1]} (" in message and "Connection refused" in message
    assert files_in(tmp_path / "mnist") == []


def test_an_interrupted_download_leaves_nothing(server, tmp_path):
    class CtrlC:
        def __init__(self, **kwargs):
            pass

        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    with pytest.raises(KeyboardInterrupt):
        fetch_mnist(tmp_path, [server.url("ok")], progress=CtrlC, **FAST)
    assert files_in(tmp_path / "mnist") == []


def test_progress_sees_every_byte_of_each_transfer(server, tmp_path):
    bars = []

    class Recorder:
        def __init__(self, desc, total):
            self.desc, self.total, self.count, self.closed = desc, total, 0, False
            bars.append(self)

        def update(self, n):
            self.count += n

        def close(self):
            self.closed = True

    fetch_mnist(tmp_path, [server.url("ok")], progress=Recorder, **FAST)

    sizes = {name: (server.root / name).stat().st_size for name in data.MNIST_FILES}
    assert {bar.desc: bar.total for bar in bars} == sizes
    assert {bar.desc: bar.count for bar in bars} == sizes
    assert all(bar.closed for bar in bars)


@pytest.mark.parametrize("as_url", [False, True], ids=["directory", "file-url"])
def test_local_mirrors(tmp_path, mnist_dir, known_sums, as_url):
    mirror = mnist_dir.as_uri() if as_url else str(mnist_dir)
    paths = fetch_mnist(tmp_path, [str(tmp_path / "nowhere"), mirror], **FAST)
    assert {name: payload_sha256(path) for name, path in paths.items()} == known_sums


def test_unsupported_scheme_is_rejected_before_any_transfer(server, tmp_path):
    with pytest.raises(DataError, match="'ftp://example.org/mnist/'.*unsupported URL scheme"):
        fetch_mnist(tmp_path, [server.url("ok"), "ftp://example.org/mnist/"], **FAST)
    assert server.requests == []


def test_no_mirrors_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no MNIST mirrors"):
        fetch_mnist(tmp_path, [], **FAST)


def test_load_mnist_gives_arrays_of_the_documented_types(tmp_path, mnist_dir):
    mnist = data.load_mnist(tmp_path, [str(mnist_dir)])

    assert mnist.train_images.shape == (60000, 28, 28)
    assert mnist.test_images.shape == (10000, 28, 28)
    assert mnist.train_images.dtype == mnist.test_images.dtype == "uint8"
    assert mnist.train_labels.shape == (60000,)
    assert mnist.test_labels.shape == (10000,)
    assert mnist.train_labels.dtype == mnist.test_labels.dtype == "int64"
    assert set(mnist.train_labels.tolist()) == set(range(10))


def test_load_mnist_reads_an_intact_cache_without_any_mirror(tmp_path, mnist_dir):
    data.load_mnist(tmp_path, [str(mnist_dir)])  # fills the cache
    unreachable = [str(tmp_path / "no-such-mirror")]
    mnist = data.load_mnist(tmp_path, unreachable)
    assert mnist.test_images.shape == (10000, 28, 28)


def test_load_mnist_fetches_a_corrupt_cached_file_again(tmp_path, mnist_dir):
    cache = tmp_path / "mnist"
    cache.mkdir()
    for name in data.MNIST_FILES:
        shutil.copy(mnist_dir / name, cache / name)
    # Valid gzip of a valid IDX file, but not MNIST's test labels.
    (cache / data.TEST_LABELS).write_bytes(
        gzip.compress(b"\0\0\x08\x01" + (10000).to_bytes(4, "big") + bytes(10000))
    )
    with pytest.raises(DownloadError):
        data.load_mnist(tmp_path, [str(tmp_path / "no-such-mirror")])
    mnist = data.load_mnist(tmp_path, [str(mnist_dir)])
    assert set(mnist.test_labels.tolist()) == set(range(10))
    assert payload_sha256(cache / data.TEST_LABELS) == data.MNIST_FILES[data.TEST_LABELS]


def test_mirror_precedence():
    cli, config = ("http://cli/", "/cli/dir"), ["http://config/"]
    env = {data.MIRROR_ENV: "http://env/a/  file:///env/b"}

    assert data.resolve_mirrors(cli, config, env) == list(cli)
    assert data.resolve_mirrors((), config, env) == ["http://env/a/", "file:///env/b"]
    assert data.resolve_mirrors((), config, {}) == config
    assert data.resolve_mirrors((), "http://x/ http://y/", {}) == ["http://x/", "http://y/"]
    assert data.resolve_mirrors((), (), {data.MIRROR_ENV: " "}) == data.DEFAULT_MIRRORS
    assert data.resolve_mirrors(environ={}) is not data.DEFAULT_MIRRORS


def test_data_dir_precedence():
    env = {data.DATA_DIR_ENV: "/env/data"}

    assert data.resolve_data_dir("cli", "config", env) == Path("cli")
    assert data.resolve_data_dir(None, "config", env) == Path("/env/data")
    assert data.resolve_data_dir(None, "config", {}) == Path("config")
    assert data.resolve_data_dir(environ={}) == Path("data")
    assert data.resolve_data_dir("~/mnist", environ={}) == Path.home() / "mnist"
