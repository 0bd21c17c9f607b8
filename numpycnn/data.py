"""MNIST: fetch the four IDX files from mirrors, verify, cache, parse and normalise.

Every file is checked against the SHA-256 of its decoded IDX payload, which holds whatever
compression a mirror uses. Downloads stream into a temporary file beside the cache entry and
are renamed into place only once verified, so an interrupted run never leaves a half-written
file under a cache name. The library never prints: progress goes through a caller-supplied
factory (the CLI passes tqdm).
"""

import gzip
import hashlib
import math
import os
import secrets
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit
from urllib.request import url2pathname

import numpy as np
import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.util import Retry

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

#: The mirrors' file names -> SHA-256 of the decoded (gunzipped) IDX payload.
MNIST_FILES = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}

#: torchvision's mirror, TensorFlow's (CVDF) mirror, then the original site.
DEFAULT_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

MIRROR_ENV = "NUMPYCNN_MIRROR"
DATA_DIR_ENV = "NUMPYCNN_DATA_DIR"
DEFAULT_DATA_DIR = "data"

#: Statuses worth retrying on the same mirror: overload, rate limiting, server errors.
RETRY_STATUSES = (429, *range(500, 600))
CHUNK = 1 << 20

# IDX data type codes -> big-endian NumPy dtypes.
IDX_DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

NORMALIZATIONS = ("reference", "standard", "unit")


class DataError(Exception):
    """A data file is missing, corrupt or malformed; the message names the file and reason."""


class DownloadError(DataError):
    """Every mirror failed for a file; the message lists each mirror and why it failed."""


def _split_mirrors(value):
    """A list of mirrors from a whitespace-separated string or from an iterable."""
    return value.split() if isinstance(value, str) else list(value)


def resolve_mirrors(cli_mirrors=(), config_mirrors=(), environ=None):
    """The mirrors to use: the CLI's, else NUMPYCNN_MIRROR's, else the config's, else defaults."""
    environ = os.environ if environ is None else environ
    for source in (cli_mirrors, environ.get(MIRROR_ENV, ""), config_mirrors):
        mirrors = _split_mirrors(source or ())
        if mirrors:
            return mirrors
    return list(DEFAULT_MIRRORS)


def resolve_data_dir(cli_value=None, config_value=None, environ=None):
    """The data directory: the CLI's, else NUMPYCNN_DATA_DIR's, else the config's, else data/."""
    environ = os.environ if environ is None else environ
    value = cli_value or environ.get(DATA_DIR_ENV) or config_value or DEFAULT_DATA_DIR
    return Path(value).expanduser()


def _local_dir(mirror):
    """The directory a file:// URL or plain path names, or None for an HTTP(S) mirror."""
    parts = urlsplit(mirror)
    if parts.scheme in ("http", "https"):
        return None
    if parts.scheme == "file":
        return Path(url2pathname(parts.path))
    if parts.scheme == "":
        return Path(mirror).expanduser()
    raise DataError(
        f"mirror {mirror!r}: unsupported URL scheme {parts.scheme!r}"
        " (use http, https, file or a directory path)"
    )


def _session(retries, backoff):
    """A requests session that retries connection errors and 5xx/429 answers with backoff.

    Retry-After headers are not obeyed: a mirror asking for a long wait is worth skipping
    in favour of the next one.
    """
    retry = Retry(
        total=retries,
        backoff_factor=backoff,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    session = requests.Session()
    # The files are gzip already: ask for them as stored, never re-encoded for the transfer.
    session.headers["Accept-Encoding"] = "identity"
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def _reason(exc):
    """A short one-line reason for a transfer error, unwrapping urllib3's nested causes."""
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in reversed(exc.args) if isinstance(a, BaseException)), None)
        if inner is None:
            break
        exc = inner
    # urllib3 prefixes messages with the connection, e.g. "HTTPConnection(host=..., port=...): ".
    return str(exc).split("): ", 1)[-1]


def _copy(chunks, out, bar):
    """Write byte chunks to out, advancing the progress bar; the number of bytes written."""
    written = 0
    for chunk in chunks:
        out.write(chunk)
        written += len(chunk)
        if bar is not None:
            bar.update(len(chunk))
    return written


def _open_bar(progress, name, total):
    return None if progress is None else progress(desc=name, total=total)


def _copy_local(directory, name, out, progress):
    """Copy a file from a local mirror directory into out."""
    source = directory / name
    if not source.is_file():
        raise DataError(f"{source} not found")
    bar = _open_bar(progress, name, source.stat().st_size)
    try:
        with open(source, "rb") as src:
            _copy(iter(lambda: src.read(CHUNK), b""), out, bar)
    except OSError as exc:
        raise DataError(f"copying {source} failed: {exc.strerror}") from None
    finally:
        if bar is not None:
            bar.close()


def _copy_http(mirror, name, out, session, timeout, retries, progress):
    """Stream name from an HTTP(S) mirror into out, byte for byte as sent (no decoding of a
    Content-Encoding, so the length check and the gzip check see the real body).

    Raises DataError for an HTTP error status, a broken or stalled transfer, or a body shorter
    than its Content-Length.
    """
    url = mirror.rstrip("/") + "/" + name
    try:
        response = session.get(url, stream=True, timeout=timeout)
    except requests.RequestException as exc:
        raise DataError(_reason(exc)) from None
    with response:
        if response.status_code != 200:
            after = f" after {retries} retries" if response.status_code in RETRY_STATUSES else ""
            raise DataError(f"HTTP {response.status_code} {response.reason}{after}")
        length = response.headers.get("Content-Length")
        total = int(length) if length and length.isdigit() else None
        bar = _open_bar(progress, name, total)
        try:
            written = _copy(response.raw.stream(CHUNK, decode_content=False), out, bar)
        except (urllib3.exceptions.HTTPError, requests.RequestException, OSError) as exc:
            raise DataError(
                f"transfer broken after {out.tell()} of {total} bytes: {_reason(exc)}"
            ) from None
        finally:
            if bar is not None:
                bar.close()
    # urllib3 2 already raises on a short body; urllib3 1.26 does not.
    if total is not None and written != total:
        raise DataError(f"body has {written} bytes, Content-Length announced {total}")


def _payload_sha256(path):
    """SHA-256 of a gzip file's decoded payload; DataError if it is not valid gzip."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as stream:
            for chunk in iter(lambda: stream.read(CHUNK), b""):
                digest.update(chunk)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"not a valid gzip file: {exc}") from None
    return digest.hexdigest()


def _verify(path, name):
    """Raise DataError unless path's decoded payload is the genuine MNIST file name."""
    if _payload_sha256(path) != MNIST_FILES[name]:
        raise DataError("decoded content fails the SHA-256 check")


def _fetch_from(mirror, name, target, verify, session, timeout, retries, progress):
    """Download name from one mirror into a temporary file, check it with ``verify``, rename
    it to target."""
    # Not tempfile.mkstemp: its files are private (0600); this one honours the umask.
    tmp = target.with_name(f".{name}.{secrets.token_hex(6)}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            directory = _local_dir(mirror)
            if directory is None:
                _copy_http(mirror, name, out, session, timeout, retries, progress)
            else:
                _copy_local(directory, name, out, progress)
            out.flush()
            os.fsync(out.fileno())
        verify(tmp, name)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _is_verified(path, name, verify):
    """Whether a cached file exists and passes verification."""
    if not path.is_file():
        return False
    try:
        verify(path, name)
    except (DataError, OSError):
        return False
    return True


def fetch_files(
    cache,
    names,
    mirrors,
    verify,
    label=None,
    progress=None,
    timeout=(10, 60),
    retries=3,
    backoff=0.5,
):
    """Ensure the files ``names`` are in folder ``cache``, each checked by ``verify``; their
    paths by name. The one downloader of MNIST and of the other sources (``datasets``).

    ``verify(path, name)`` raises DataError (the reason, without the path) unless the file
    at ``path`` is the genuine ``name``. A cached file that verifies is used as is, without
    any network request; one that does not is fetched again. Each file streams into a
    temporary name beside its cache entry, is verified, and only then renamed into place.
    Mirrors (URL prefixes, file:// URLs or directories) are tried in order, and the one
    that served a file is tried first for the next. ``label`` (e.g. "fashion-mnist") names
    the data set in errors, for file names several sets share. ``progress(desc=...,
    total=...)`` makes a tqdm-like bar per transfer. ``timeout`` is (connect, read)
    seconds; ``retries`` and ``backoff`` (seconds, doubling) apply to connection errors and
    5xx/429 answers. Raises DownloadError when every mirror fails for a file.
    """
    mirrors = list(mirrors)
    if not mirrors:
        raise DataError(f"{label}: no mirrors configured" if label else "no mirrors configured")
    for mirror in mirrors:
        _local_dir(mirror)  # reject unsupported schemes before any transfer
    cache = Path(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{cache}: cannot create the data folder ({exc.strerror})") from None
    what = "" if label is None else f"{label} file "
    paths = {name: cache / name for name in names}
    with _session(retries, backoff) as session:
        for name, target in paths.items():
            if _is_verified(target, name, verify):
                continue
            failures = []
            for mirror in mirrors:
                try:
                    _fetch_from(mirror, name, target, verify, session, timeout, retries, progress)
                except DataError as exc:
                    failures.append(f"{mirror} ({exc})")
                else:
                    mirrors = [mirror] + [m for m in mirrors if m != mirror]
                    break
            else:
                raise DownloadError(
                    f"could not fetch {what}{name} from any mirror: " + "; ".join(failures)
                )
    return paths


def fetch_mnist(
    data_dir,
    mirrors=None,
    progress=None,
    timeout=(10, 60),
    retries=3,
    backoff=0.5,
    files=tuple(MNIST_FILES),
):
    """Ensure the verified MNIST ``files`` (default: all four) are in <data_dir>/mnist/;
    their paths by name.

    Each file is checked against the SHA-256 of its decoded payload (``fetch_files`` does
    the rest). Mirrors: DEFAULT_MIRRORS if None. ``progress``, ``timeout``, ``retries`` and
    ``backoff`` are as in ``fetch_files``. Raises DownloadError when every mirror fails
    for a file.
    """
    mirrors = list(DEFAULT_MIRRORS if mirrors is None else mirrors)
    if not mirrors:
        raise DataError("no MNIST mirrors configured")
    unknown = [name for name in files if name not in MNIST_FILES]
    if unknown:
        raise ValueError(f"not an MNIST file: {unknown[0]!r} (known: {', '.join(MNIST_FILES)})")
    return fetch_files(
        Path(data_dir) / "mnist",
        files,
        mirrors,
        _verify,
        progress=progress,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
    )


def idx_bytes(path):
    """The raw IDX bytes of path, gunzipped if its name ends in .gz."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: not a valid gzip file: {exc}") from None


def read_idx(path):
    """The array stored in an IDX file (gzipped if named .gz), with its header validated.

    The result is a read-only view of the file's bytes (native byte order for multi-byte
    types); DataError names the file and what is wrong with it.
    """
    path = Path(path)
    return parse_idx(idx_bytes(path), path)


def parse_idx(data, path):
    """The array in raw IDX bytes ``data``, with the header validated; errors name ``path``."""
    if len(data) < 4:
        raise DataError(f"{path}: {len(data)} bytes, too short for an IDX header")
    if data[:2] != b"\0\0":
        raise DataError(f"{path}: not an IDX file (magic number 0x{data[:4].hex()})")
    code, ndim = data[2], data[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX data type code 0x{code:02x}")
    if ndim == 0:
        raise DataError(f"{path}: IDX header declares no dimensions")
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DataError(f"{path}: IDX header truncated ({len(data)} of {offset} bytes)")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    dtype = IDX_DTYPES[code]
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - offset != expected:
        raise DataError(
            f"{path}: payload has {len(data) - offset} bytes, "
            f"but dimensions {'x'.join(map(str, shape))} need {expected}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)
    return array if dtype.isnative else array.astype(dtype.newbyteorder("="))


@dataclass(frozen=True, eq=False)
class MNIST:
    """The MNIST training and test sets: uint8 images (N, 28, 28), int64 labels (N,). A set
    not asked of ``load_mnist`` is None."""

    train_images: np.ndarray | None
    train_labels: np.ndarray | None
    test_images: np.ndarray | None
    test_labels: np.ndarray | None


#: The files of each set, for ``load_mnist(sets=...)``.
SETS = {"train": (TRAIN_IMAGES, TRAIN_LABELS), "test": (TEST_IMAGES, TEST_LABELS)}


def _intact_payload(path, name):
    """The decoded bytes of a cached file if it is there and genuine, else None."""
    if not path.is_file():
        return None
    try:
        data = idx_bytes(path)
    except DataError:
        return None
    return data if hashlib.sha256(data).hexdigest() == MNIST_FILES[name] else None


def load_mnist(data_dir, mirrors=None, progress=None, sets=("train", "test")):
    """MNIST from <data_dir>/mnist/, fetched and verified first if needed (see fetch_mnist).

    Only the files of ``sets`` ("train", "test") are read and, when missing, fetched: an
    evaluation needs only the test set's 1.6 MB, not the 9.9 MB of training images. Each
    cached file is decoded once, and the same bytes are both checked and parsed; the
    mirrors are used only for files that are missing or fail the check.
    """
    unknown = [s for s in sets if s not in SETS]
    if unknown:
        raise ValueError(f"unknown MNIST set {unknown[0]!r} (known: {', '.join(SETS)})")
    cache = Path(data_dir) / "mnist"
    files = [name for s in SETS if s in sets for name in SETS[s]]
    payloads = {name: _intact_payload(cache / name, name) for name in files}
    missing = [name for name, data in payloads.items() if data is None]
    if missing:
        paths = fetch_mnist(data_dir, mirrors, progress, files=missing)
        payloads.update({name: idx_bytes(paths[name]) for name in missing})
    arrays = {name: parse_idx(data, cache / name) for name, data in payloads.items()}

    def array(name, labels=False):
        if name not in arrays:
            return None
        return arrays[name].astype(np.int64) if labels else arrays[name]

    return MNIST(
        train_images=array(TRAIN_IMAGES),
        train_labels=array(TRAIN_LABELS, labels=True),
        test_images=array(TEST_IMAGES),
        test_labels=array(TEST_LABELS, labels=True),
    )


def split_train(images, labels, limit=None, validation=0):
    """(train_x, train_y, val_x, val_y): the first ``limit`` images train, the next
    ``validation`` ones validate.

    Validation images never overlap the training ones. ``limit=None`` trains on every image
    not held out for validation. The results are views, not copies.
    """
    n = len(images)
    if len(labels) != n:
        raise ValueError(f"{n} images but {len(labels)} labels")
    if validation < 0:
        raise ValueError(f"validation must be >= 0, got {validation!r}")
    if limit is None:
        limit = n - validation
        if limit < 1:
            raise ValueError(f"validation {validation} leaves none of the {n} images to train on")
    if limit < 1:
        raise ValueError(f"limit must be >= 1, got {limit!r}")
    if limit + validation > n:
        raise ValueError(
            f"limit {limit} plus validation {validation} exceeds the {n} training images"
        )
    held_out = slice(limit, limit + validation)
    return images[:limit], labels[:limit], images[held_out], labels[held_out]


def _pixel_histogram(images):
    """How many pixels take each value 0-255, counted in chunks: np.bincount copies its
    input to intp, which for the whole training set would be a 300 MB temporary."""
    counts = np.zeros(256, dtype=np.int64)
    flat = images.reshape(-1)
    for start in range(0, flat.size, CHUNK):
        counts += np.bincount(flat[start : start + CHUNK], minlength=256)
    return counts


@dataclass(frozen=True)
class Normalization:
    """A named pixel normalisation, ``(x - mean) / std``, fitted on training images only.

    ``reference`` truncates the training mean and standard deviation to integers, as the
    reference network does; ``standard`` keeps them as floats; ``unit`` scales to [0, 1].
    For colour images ``standard`` has one mean and one deviation per channel (tuples of
    C floats, as torchvision's ``Normalize(mean=[...], std=[...])``); grey images and the
    other strategies keep one float each, so MNIST models and their files are unchanged.
    It is stored with a trained model so that eval and predict normalise the same way.
    """

    strategy: str
    mean: float | tuple
    std: float | tuple

    def __post_init__(self):
        if self.strategy not in NORMALIZATIONS:
            known = ", ".join(NORMALIZATIONS)
            raise ValueError(f"unknown normalization {self.strategy!r} (known: {known})")
        mean, std = np.asarray(self.mean, dtype=np.float64), np.asarray(self.std, np.float64)
        if mean.ndim > 1 or mean.shape != std.shape or mean.size == 0:
            raise ValueError(
                f"normalization mean and std must be two numbers or two lists of one number "
                f"per channel, got {self.mean!r} and {self.std!r}"
            )
        if not np.isfinite(mean).all():
            raise ValueError(f"normalization mean must be finite, got {self.mean!r}")
        if not (np.isfinite(std).all() and (std > 0).all()):
            raise ValueError(f"normalization std must be finite and > 0, got {self.std!r}")
        if mean.ndim:  # lists (from a file) become tuples: hashable, comparable
            object.__setattr__(self, "mean", tuple(float(v) for v in mean))
            object.__setattr__(self, "std", tuple(float(v) for v in std))

    @property
    def per_channel(self):
        return isinstance(self.mean, tuple)

    @classmethod
    def fit(cls, strategy, images):
        """The normalisation ``strategy`` with statistics of uint8 training images, (N, H,
        W) or (N, C, H, W); per channel for ``standard`` on C > 1.

        Statistics come from the pixel histogram: exact, and with no full-size temporary.
        """
        if strategy == "unit":
            return cls(strategy, 0.0, 255.0)
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.size == 0:
            raise ValueError(
                f"fitting a normalization needs uint8 images, got {images.dtype} {images.shape}"
            )
        if strategy == "standard" and images.ndim == 4 and images.shape[1] > 1:
            stats = [_moments(images[:, c]) for c in range(images.shape[1])]
            return cls(strategy, tuple(m for m, _ in stats), tuple(s for _, s in stats))
        mean, std = _moments(images)
        if strategy == "reference":
            mean, std = int(mean), int(std)
        return cls(strategy, float(mean), float(std))

    def _shaped(self, value, channels):
        """``value`` as float32 broadcasting over (N, C, H, W)."""
        if not isinstance(value, tuple):
            return np.float32(value)
        if len(value) != channels:
            raise ValueError(
                f"this normalization is for {len(value)} channels, the images have {channels}"
            )
        return np.asarray(value, dtype=np.float32).reshape(1, -1, 1, 1)

    def norm(self, images):
        """Images (N, C, H, W), (N, H, W) or one (H, W) (one channel), pixel values 0-255,
        as float32 (N, C, H, W)."""
        x = np.asarray(images)
        if x.ndim == 2:
            x = x[None]
        if x.ndim == 3:
            x = x[:, None]
        if x.ndim != 4:
            raise ValueError(
                f"expected images (N, C, H, W), (N, H, W) or (H, W), got shape {x.shape}"
            )
        out = x.astype(np.float32)
        out -= self._shaped(self.mean, x.shape[1])
        out /= self._shaped(self.std, x.shape[1])
        return out

    def blank(self, channels=1):
        """The normalised value of a black pixel: a float, or a tuple of one per channel."""
        value = self.norm(np.zeros((1, channels, 1, 1), dtype=np.uint8)).reshape(channels)
        return tuple(float(v) for v in value) if self.per_channel else float(value[0])

    def to_dict(self):
        """A plain dict to store inside a model file."""
        if self.per_channel:
            return {"strategy": self.strategy, "mean": list(self.mean), "std": list(self.std)}
        return {"strategy": self.strategy, "mean": float(self.mean), "std": float(self.std)}

    @classmethod
    def from_dict(cls, d):
        """The normalisation a to_dict() result describes; ValueError naming a bad key."""
        if not isinstance(d, dict):
            raise ValueError(f"normalization must be a mapping, got {d!r}")
        missing = [key for key in ("strategy", "mean", "std") if key not in d]
        if missing:
            raise ValueError(f"normalization is missing key(s): {', '.join(missing)}")

        def number(v):
            if isinstance(v, (list, tuple)):
                return tuple(float(x) for x in v)
            return float(v)

        try:
            mean, std = number(d["mean"]), number(d["std"])
        except (TypeError, ValueError):
            raise ValueError(f"normalization mean/std must be numbers, got {d!r}") from None
        return cls(str(d["strategy"]), mean, std)


def _moments(images):
    """(mean, standard deviation) of uint8 pixels, from their histogram."""
    counts = _pixel_histogram(images)
    values = np.arange(256, dtype=np.float64)
    mean = counts @ values / images.size
    return float(mean), float(np.sqrt(counts @ (values - mean) ** 2 / images.size))
