"""Downloads for the sources other than MNIST, verified by the publishers' MD5 sums.

The transfer machinery is ``numpycnn.data``'s: the same requests session (retries with
backoff on connection errors, 429 and 5xx), the same streaming of the body as stored (no
Content-Encoding decoding, Content-Length checked), the same mirrors (URL prefixes,
``file://`` URLs or folders) tried in order, the one that served a file tried first for
the next, and the same atomic cache: each file streams into a temporary name beside its
cache entry, is verified, and only then renamed into place.

Only the check differs. ``numpycnn.data`` checks MNIST against the SHA-256 of each file's
decoded payload. For Fashion-MNIST, KMNIST and CIFAR-10 the publishers (and torchvision,
which pins the same numbers) give the MD5 of the compressed file as published, and no
payload digest: that MD5 is what is verified here, on the whole file as downloaded. MD5
is no defence against a forger, but it is what the publishers sign their files with, and
it catches what a mirror gets wrong: truncation, an error page, another file.
"""

import hashlib
import os
import secrets
from pathlib import Path

# numpycnn.data's own transfer helpers, private there for now: reused, not copied.
from ..data import (
    CHUNK,
    DataError,
    DownloadError,
    _copy_http,
    _copy_local,
    _local_dir,
    _session,
)

__all__ = ["fetch", "md5_of"]


def md5_of(path):
    """The hex MD5 of a file's bytes, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _is_verified(path, md5):
    if not path.is_file():
        return False
    try:
        return md5_of(path) == md5
    except OSError:
        return False


def _fetch_from(mirror, name, md5, target, session, timeout, retries, progress):
    """Download name from one mirror into a temporary file, verify it, rename it to target."""
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
        if md5_of(tmp) != md5:
            raise DataError("content fails the MD5 check")
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def fetch(cache, files, mirrors, label, progress=None, timeout=(10, 60), retries=3, backoff=0.5):
    """Ensure every file of ``files`` ({name: md5}) is in folder ``cache``, verified; their
    paths by name.

    A cached file whose MD5 matches is used as is, without any network request; one that
    does not is fetched again. ``mirrors`` are tried in order for each file; ``label``
    (e.g. "fashion-mnist") names the data set in errors, since its file names may be
    MNIST's. ``progress``, ``timeout``, ``retries`` and ``backoff`` are as in
    ``numpycnn.data.fetch_mnist``. Raises DownloadError when every mirror fails for a file.
    """
    mirrors = list(mirrors)
    if not mirrors:
        raise DataError(f"{label}: no mirrors configured")
    for mirror in mirrors:
        _local_dir(mirror)  # reject unsupported schemes before any transfer
    cache = Path(cache)
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{cache}: cannot create the data folder ({exc.strerror})") from None
    paths = {name: cache / name for name in files}
    with _session(retries, backoff) as session:
        for name, target in paths.items():
            if _is_verified(target, files[name]):
                continue
            failures = []
            for mirror in mirrors:
                try:
                    _fetch_from(
                        mirror, name, files[name], target, session, timeout, retries, progress
                    )
                except DataError as exc:
                    failures.append(f"{mirror} ({exc})")
                else:
                    mirrors = [mirror] + [m for m in mirrors if m != mirror]
                    break
            else:
                raise DownloadError(
                    f"could not fetch {label} file {name} from any mirror: " + "; ".join(failures)
                )
    return paths
