"""The data sources other than folders: the registry, MNIST through it, Fashion-MNIST and
KMNIST from a real HTTP server on 127.0.0.1, CIFAR-10 from an archive in the published
binary layout; colour batches through the augmentation and the flip.

The IDX and CIFAR files are made here in the exact published formats, small; the sources'
checksum tables are patched to these files' own MD5s (the real ones cannot be downloaded
in the tests).
"""

import gzip
import hashlib
import io
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from numpycnn import data, datasets
from numpycnn.augment import warp
from numpycnn.data import DataError, DownloadError
from numpycnn.datasets import cifar10, fashion_mnist, kmnist
from numpycnn.datasets.transforms import draw_flips, flip

FAST = {"timeout": (2, 2), "retries": 1, "backoff": 0.01}


def md5(raw):
    return hashlib.md5(raw).hexdigest()


# ----- the registry -----


def test_registry_names_and_suggestions():
    assert datasets.names() == ["cifar10", "fashion-mnist", "folder", "kmnist", "mnist"]
    assert datasets.get("kmnist") is kmnist
    with pytest.raises(ValueError) as err:
        datasets.get("fashon-mnist")
    message = str(err.value)
    assert "'fashon-mnist'" in message and "did you mean 'fashion-mnist'?" in message
    assert "known: cifar10, fashion-mnist, folder, kmnist, mnist" in message
    assert "\n" not in message
    with pytest.raises(ValueError, match=r"unknown dataset 'imagenet'; known: cifar10"):
        datasets.get("imagenet")


@pytest.mark.parametrize(
    "source,match",
    [
        ({"path": "x"}, "needs a 'dataset' key"),
        ({"dataset": "cifar10", "path": "x"}, "'cifar10': unknown option 'path' .takes no"),
        ({"dataset": "folder"}, "'folder' needs a 'path'"),
        ({"dataset": "folder", "path": "x", "shape": [1, 2, 2]}, "unknown option 'shape'"),
        ("cifar-10", "did you mean 'cifar10'"),
    ],
)
def test_registry_rejects_bad_descriptions(source, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        datasets.load(source, data_dir=tmp_path)


def test_mnist_through_the_registry(mnist_dir, tmp_path, mnist):
    (tmp_path / "mnist").mkdir()
    for name in data.MNIST_FILES:
        (tmp_path / "mnist" / name).symlink_to(mnist_dir / name)
    ds = datasets.load("mnist", data_dir=tmp_path, mirrors=["http://127.0.0.1:9/"])
    assert ds.name == "mnist" and ds.source == {"dataset": "mnist"}
    assert ds.input_shape == (1, 28, 28) and ds.class_names == list("0123456789")
    assert ds.train_images.shape == (60000, 1, 28, 28) and ds.test_images.dtype == np.uint8
    np.testing.assert_array_equal(ds.train_images[:, 0], mnist.train_images)
    np.testing.assert_array_equal(ds.test_labels, mnist.test_labels)
    assert ds.train_labels.dtype == np.int64


def test_dataset_checks_its_arrays():
    x = np.zeros((2, 1, 4, 4), np.uint8)
    y = np.array([0, 1])
    ok = dict(name="t", train_images=x, train_labels=y, test_images=x, test_labels=y)
    datasets.Dataset(**ok, class_names=["a", "b"], source={})
    with pytest.raises(ValueError, match="labels outside 0..0"):
        datasets.Dataset(**ok, class_names=["a"], source={})
    with pytest.raises(ValueError, match="1 or 3 channels"):
        bad = dict(ok, train_images=np.zeros((2, 2, 4, 4), np.uint8))
        datasets.Dataset(**dict(bad, test_images=bad["train_images"]), class_names="ab", source={})
    with pytest.raises(ValueError, match="uint8"):
        datasets.Dataset(**dict(ok, test_images=x.astype(np.float32)), class_names="ab", source={})


# ----- IDX sources over HTTP -----


def idx(array):
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def idx_files(seed, n_train=30, n_test=12, labels=None):
    rng = np.random.default_rng(seed)
    arrays = {
        data.TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        data.TRAIN_LABELS: rng.integers(0, 10, n_train).astype(np.uint8),
        data.TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        data.TEST_LABELS: rng.integers(0, 10, n_test).astype(np.uint8)
        if labels is None
        else labels,
    }
    return arrays, {name: gzip.compress(idx(a), mtime=0) for name, a in arrays.items()}


class Handler(BaseHTTPRequestHandler):
    """/<mode>/<file>: "ok" serves the file, "missing" 404s, "other" serves another file."""

    def do_GET(self):
        mode, _, name = self.path.strip("/").partition("/")
        with self.server.lock:
            self.server.requests.append(self.path)
        body = self.server.files.get(name)
        if mode == "missing" or body is None:
            self.send_error(404)
            return
        if mode == "other":
            body = b"\x1f\x8b" + body[2:][::-1]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        """Quiet."""


@pytest.fixture
def server(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.files, httpd.requests, httpd.lock = {}, [], threading.Lock()
    httpd.url = lambda mode: f"http://127.0.0.1:{httpd.server_address[1]}/{mode}/"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


@pytest.mark.parametrize("source", [fashion_mnist, kmnist])
def test_idx_source_downloads_verifies_and_caches(source, server, tmp_path, monkeypatch):
    arrays, files = idx_files(seed=len(source.NAME))
    server.files = files
    monkeypatch.setattr(source, "FILES", {name: md5(raw) for name, raw in files.items()})
    mirrors = [server.url("missing"), server.url("ok")]
    ds = datasets.load(source.NAME, data_dir=tmp_path, mirrors=mirrors, **FAST)

    assert ds.name == source.NAME and ds.source == {"dataset": source.NAME}
    assert ds.input_shape == (1, 28, 28) and ds.class_names == source.CLASS_NAMES
    np.testing.assert_array_equal(ds.train_images[:, 0], arrays[data.TRAIN_IMAGES])
    np.testing.assert_array_equal(ds.test_images[:, 0], arrays[data.TEST_IMAGES])
    np.testing.assert_array_equal(ds.train_labels, arrays[data.TRAIN_LABELS])
    np.testing.assert_array_equal(ds.test_labels, arrays[data.TEST_LABELS])
    # Cached in a folder of its own: MNIST's files of the same names are not touched.
    assert sorted(p.name for p in (tmp_path / source.NAME).iterdir()) == sorted(files)
    assert not (tmp_path / "mnist").exists()
    for name, raw in files.items():
        assert (tmp_path / source.NAME / name).read_bytes() == raw
    # The mirror that served the first file is asked first for the next ones.
    assert server.requests.count(f"/missing/{data.TRAIN_IMAGES}") == 1
    assert sum(r.startswith("/missing/") for r in server.requests) == 1

    # A second load verifies the cache and asks no mirror at all.
    served = len(server.requests)
    again = source.load(tmp_path, mirrors=["http://127.0.0.1:9/"], **FAST)
    assert len(server.requests) == served
    np.testing.assert_array_equal(again.train_images, ds.train_images)


def test_idx_source_refetches_a_damaged_cache_file(server, tmp_path, monkeypatch):
    arrays, files = idx_files(seed=3)
    server.files = files
    monkeypatch.setattr(kmnist, "FILES", {name: md5(raw) for name, raw in files.items()})
    kmnist.load(tmp_path, [server.url("ok")], **FAST)
    damaged = tmp_path / "kmnist" / data.TEST_LABELS
    damaged.write_bytes(damaged.read_bytes()[:-3])
    served = len(server.requests)
    ds = kmnist.load(tmp_path, [server.url("ok")], **FAST)
    assert server.requests[served:] == [f"/ok/{data.TEST_LABELS}"]
    np.testing.assert_array_equal(ds.test_labels, arrays[data.TEST_LABELS])


def test_idx_source_refuses_content_failing_the_md5(server, tmp_path, monkeypatch):
    _, files = idx_files(seed=4)
    server.files = files
    monkeypatch.setattr(fashion_mnist, "FILES", {name: md5(raw) for name, raw in files.items()})
    with pytest.raises(DownloadError) as err:
        fashion_mnist.load(tmp_path, [server.url("other"), server.url("missing")], **FAST)
    message = str(err.value)
    assert message.startswith(f"could not fetch fashion-mnist file {data.TRAIN_IMAGES}")
    assert "content fails the MD5 check" in message and "HTTP 404" in message
    # Nothing half-written or unverified is left under a cache name.
    assert list((tmp_path / "fashion-mnist").iterdir()) == []


def test_idx_source_real_checksums_are_the_publishers():
    """The pinned MD5s are the ones torchvision pins: 32 hex digits, one per file, and
    the two sources' tables differ (the file names are the same)."""
    for source in (fashion_mnist, kmnist):
        assert list(source.FILES) == [
            data.TRAIN_IMAGES,
            data.TRAIN_LABELS,
            data.TEST_IMAGES,
            data.TEST_LABELS,
        ]
        assert all(len(v) == 32 and int(v, 16) >= 0 for v in source.FILES.values())
    assert not set(fashion_mnist.FILES.values()) & set(kmnist.FILES.values())
    assert fashion_mnist.FILES[data.TRAIN_IMAGES] == "8d4fb7e6c68d591d4c3dfef9ec88bf0d"


@pytest.mark.parametrize(
    "name,array,match",
    [
        (data.TEST_LABELS, np.zeros(11, np.uint8), "11 labels for 12 images"),
        (data.TEST_LABELS, np.full(12, 10, np.uint8), "label 10 of image 0 is not in 0..9"),
        (data.TRAIN_IMAGES, np.zeros((30, 28, 27), np.uint8), "28x28, got uint8 30x28x27"),
        (data.TRAIN_LABELS, np.zeros((30, 1), np.uint8), "vector of labels"),
    ],
)
def test_idx_source_malformed_files_are_named(name, array, match, server, tmp_path, monkeypatch):
    _, files = idx_files(seed=5)
    files[name] = gzip.compress(idx(array))
    server.files = files
    monkeypatch.setattr(kmnist, "FILES", {n: md5(raw) for n, raw in files.items()})
    with pytest.raises(DataError, match=match) as err:
        kmnist.load(tmp_path, [server.url("ok")], **FAST)
    assert str(err.value).startswith(str(tmp_path / "kmnist" / name))


# ----- CIFAR-10 -----

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]
CIFAR_NAMES += ["dog", "frog", "horse", "ship", "truck"]
RECORDS = 6


def cifar_records(seed, n=RECORDS):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    return np.column_stack([labels, pixels]).tobytes(), labels, pixels


def cifar_archive(path, batches=None, meta=None, extra=(), link=None):
    """A cifar-10-binary.tar.gz in the published layout; its bytes."""
    batches = batches or {name: cifar_records(k)[0] for k, name in enumerate(cifar10.MEMBERS[:6])}
    meta = "\n".join(CIFAR_NAMES) + "\n\n" if meta is None else meta
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:

        def add(name, raw):
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))

        folder = tarfile.TarInfo(cifar10.FOLDER)
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
        for name, raw in batches.items():
            if name == link:
                info = tarfile.TarInfo(f"{cifar10.FOLDER}/{name}")
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                add(f"{cifar10.FOLDER}/{name}", raw)
        add(f"{cifar10.FOLDER}/{cifar10.META}", meta.encode())
        for name, raw in extra:
            add(name, raw)
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


@pytest.fixture
def cifar(tmp_path, monkeypatch):
    """A mirror folder with a small archive (6 records a batch), the MD5 patched to it."""
    monkeypatch.setattr(cifar10, "RECORDS", RECORDS)
    mirror = tmp_path / "mirror"
    mirror.mkdir()

    def make(**kwargs):
        raw = cifar_archive(mirror / cifar10.ARCHIVE, **kwargs)
        monkeypatch.setattr(cifar10, "FILES", {cifar10.ARCHIVE: md5(raw)})
        return mirror

    return make


def test_cifar10_binary_layout(cifar, tmp_path):
    mirror = cifar()
    ds = datasets.load("cifar10", data_dir=tmp_path / "data", mirrors=[str(mirror)])
    assert ds.input_shape == (3, 32, 32) and ds.class_names == CIFAR_NAMES
    assert ds.train_images.shape == (5 * RECORDS, 3, 32, 32) and len(ds.test_images) == RECORDS
    assert ds.source == {"dataset": "cifar10"}
    for k in range(5):
        _, labels, pixels = cifar_records(k)
        part = slice(k * RECORDS, (k + 1) * RECORDS)
        np.testing.assert_array_equal(ds.train_labels[part], labels)
        # byte 1 + c*1024 + y*32 + x of a record is channel c, line y, column x
        for n, c, y, x in [(0, 0, 0, 0), (1, 1, 5, 7), (RECORDS - 1, 2, 31, 30)]:
            assert ds.train_images[part][n, c, y, x] == pixels[n, c * 1024 + y * 32 + x]
        np.testing.assert_array_equal(ds.train_images[part].reshape(RECORDS, -1), pixels)
    _, labels, pixels = cifar_records(5)
    np.testing.assert_array_equal(ds.test_images.reshape(RECORDS, -1), pixels)
    np.testing.assert_array_equal(ds.test_labels, labels)
    extracted = tmp_path / "data" / "cifar10" / cifar10.FOLDER
    assert sorted(p.name for p in extracted.iterdir()) == sorted(cifar10.MEMBERS)
    assert [
        p.name for p in (tmp_path / "data" / "cifar10").iterdir() if p.name.startswith(".")
    ] == []

    # Later loads read the extracted files: neither archive nor mirror is needed.
    (tmp_path / "data" / "cifar10" / cifar10.ARCHIVE).unlink()
    (mirror / cifar10.ARCHIVE).unlink()
    again = cifar10.load(tmp_path / "data", mirrors=[str(mirror)])
    np.testing.assert_array_equal(again.train_images, ds.train_images)


def test_cifar10_reextracts_an_incomplete_folder(cifar, tmp_path):
    mirror = cifar()
    cifar10.load(tmp_path, mirrors=[str(mirror)])
    batch = tmp_path / "cifar10" / cifar10.FOLDER / "data_batch_3.bin"
    batch.write_bytes(batch.read_bytes()[:100])
    ds = cifar10.load(tmp_path, mirrors=[str(mirror)])
    assert batch.stat().st_size == RECORDS * cifar10.RECORD
    np.testing.assert_array_equal(ds.train_labels[2 * RECORDS : 3 * RECORDS], cifar_records(2)[1])


def test_cifar10_archive_failing_the_md5_is_refused(cifar, tmp_path, monkeypatch):
    mirror = cifar()
    monkeypatch.setattr(cifar10, "FILES", {cifar10.ARCHIVE: "0" * 32})
    with pytest.raises(DownloadError, match="cifar10 file cifar-10-binary.tar.gz.*MD5"):
        cifar10.load(tmp_path / "data", mirrors=[str(mirror)])
    assert not (tmp_path / "data" / "cifar10" / cifar10.FOLDER).exists()


def test_cifar10_extracts_nothing_but_its_members(cifar, tmp_path):
    evil = [("../escaped.bin", b"x"), (str(tmp_path / "absolute-escape.bin"), b"y")]
    evil += [(f"{cifar10.FOLDER}/../../outside.bin", b"z"), ("other/readme.txt", b"w")]
    mirror = cifar(extra=evil)
    data_dir = tmp_path / "deep" / "data"
    cifar10.load(data_dir, mirrors=[str(mirror)])
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert written == sorted(
        [f"mirror/{cifar10.ARCHIVE}", f"deep/data/cifar10/{cifar10.ARCHIVE}"]
        + [f"deep/data/cifar10/{cifar10.FOLDER}/{m}" for m in cifar10.MEMBERS]
    )


def test_cifar10_refuses_a_link_in_place_of_a_batch(cifar, tmp_path):
    mirror = cifar(link="data_batch_2.bin")
    archive = tmp_path / "data" / "cifar10" / cifar10.ARCHIVE
    with pytest.raises(DataError, match=f"^{archive}: .*data_batch_2.bin is not a regular file"):
        cifar10.load(tmp_path / "data", mirrors=[str(mirror)])
    assert not (tmp_path / "data" / "cifar10" / cifar10.FOLDER).exists()
    assert [p.name for p in archive.parent.iterdir()] == [cifar10.ARCHIVE]


def test_cifar10_extracts_without_the_data_filter(cifar, tmp_path, monkeypatch):
    """On a Python without tarfile's data filter the members' bytes are copied out."""
    mirror = cifar(extra=[("../escaped.bin", b"x")])
    monkeypatch.delattr(tarfile, "data_filter")
    ds = cifar10.load(tmp_path / "data", mirrors=[str(mirror)])
    np.testing.assert_array_equal(ds.test_labels, cifar_records(5)[1])
    assert (
        not (tmp_path / "escaped.bin").exists() and not (tmp_path / "data" / "escaped.bin").exists()
    )


@pytest.mark.parametrize(
    "change,match",
    [
        ({"batches": "short"}, r"data_batch_4.bin: 18,437 bytes, expected 6 records of 3,073"),
        ({"batches": "label"}, r"test_batch.bin: record 2 has label 10, not in 0..9"),
        ({"meta": "airplane\nbird\n"}, r"batches.meta.txt: 2 class names, expected 10"),
        (
            {"batches": "missing"},
            r"cifar-10-binary.tar.gz: missing cifar-10-batches-bin/data_batch_5",
        ),
    ],
)
def test_cifar10_malformed_archives_are_named(change, match, cifar, tmp_path):
    batches = {name: cifar_records(k)[0] for k, name in enumerate(cifar10.MEMBERS[:6])}
    if change.get("batches") == "short":
        batches["data_batch_4.bin"] = batches["data_batch_4.bin"][:-1]
    elif change.get("batches") == "label":
        raw = bytearray(batches["test_batch.bin"])
        raw[2 * cifar10.RECORD] = 10
        batches["test_batch.bin"] = bytes(raw)
    elif change.get("batches") == "missing":
        del batches["data_batch_5.bin"]
    mirror = cifar(batches=batches, meta=change.get("meta"))
    with pytest.raises(DataError, match=match) as err:
        cifar10.load(tmp_path, mirrors=[str(mirror)])
    assert str(err.value).startswith(str(tmp_path / "cifar10"))
    assert "\n" not in str(err.value)


# ----- colour batches: augmentation and flips -----


def test_augment_warp_moves_every_channel_alike():
    """The warp of a colour batch is the warp of each channel on its own: augment.py
    handles (N, 3, H, W) as it is."""
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 32, 32)).astype(np.float32)
    params = np.column_stack(
        [rng.uniform(-3, 3, 4), rng.uniform(-3, 3, 4), rng.uniform(-0.3, 0.3, 4), [0.9, 1, 1.1, 1]]
    )
    out = warp(x, params, fill=0.5)
    assert out.shape == x.shape and out.dtype == np.float32
    for c in range(3):
        np.testing.assert_allclose(out[:, c : c + 1], warp(x[:, c : c + 1], params, fill=0.5))
    quarter = warp(x[:1], [[0, 0, np.pi / 2, 1]])
    np.testing.assert_allclose(quarter[0], np.rot90(x[0], axes=(1, 2)), atol=1e-6)


def test_flip_mirrors_the_chosen_images_only():
    x = np.arange(3 * 2 * 2 * 3, dtype=np.uint8).reshape(3, 2, 2, 3)
    out = flip(x, [True, False, True])
    np.testing.assert_array_equal(out[0], x[0, :, :, ::-1])
    np.testing.assert_array_equal(out[1], x[1])
    np.testing.assert_array_equal(out[2], x[2, :, :, ::-1])
    assert out.dtype == np.uint8 and out.flags.c_contiguous
    np.testing.assert_array_equal(flip(out, [True, False, True]), x)  # its own inverse
    with pytest.raises(ValueError, match="N flags"):
        flip(x, [True])


def test_draw_flips_is_seeded_and_fair():
    a = draw_flips(np.random.default_rng(3), 10_000)
    b = draw_flips(np.random.default_rng(3), 10_000)
    np.testing.assert_array_equal(a, b)
    assert 0.47 < a.mean() < 0.53
    assert not draw_flips(np.random.default_rng(3), 100, p=0).any()
