"""Downloads for the sources other than MNIST, verified by the publishers' MD5 sums.

The transfer is ``numpycnn.data.fetch_files``, MNIST's own: the same requests session
(retries with backoff on connection errors, 429 and 5xx), the same streaming of the body
as stored (no Content-Encoding decoding, Content-Length checked), the same mirrors (URL
prefixes, ``file://`` URLs or folders) tried in order, the one that served a file tried
first for the next, and the same atomic cache: each file streams into a temporary name
beside its cache entry, is verified, and only then renamed into place.

Only the check differs. ``numpycnn.data`` checks MNIST against the SHA-256 of each file's
decoded payload. For Fashion-MNIST, KMNIST and CIFAR-10 the publishers (and torchvision,
which pins the same numbers) give the MD5 of the compressed file as published, and no
payload digest: that MD5 is what is verified here, on the whole file as downloaded. MD5
is no defence against a forger, but it is what the publishers sign their files with, and
it catches what a mirror gets wrong: truncation, an error page, another file.
"""

import hashlib

from ..data import CHUNK, DataError, fetch_files

__all__ = ["fetch", "md5_of"]


def md5_of(path):
    """The hex MD5 of a file's bytes, read in chunks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(cache, files, mirrors, label, progress=None, timeout=(10, 60), retries=3, backoff=0.5):
    """Ensure every file of ``files`` ({name: md5}) is in folder ``cache``, verified; their
    paths by name.

    A cached file whose MD5 matches is used as is, without any network request; one that
    does not is fetched again. ``mirrors`` are tried in order for each file; ``label``
    (e.g. "fashion-mnist") names the data set in errors, since its file names may be
    MNIST's. ``progress``, ``timeout``, ``retries`` and ``backoff`` are as in
    ``numpycnn.data.fetch_files``. Raises DownloadError when every mirror fails for a file.
    """

    def verify(path, name):
        if md5_of(path) != files[name]:
            raise DataError("content fails the MD5 check")

    return fetch_files(
        cache,
        files,
        mirrors,
        verify,
        label=label,
        progress=progress,
        timeout=timeout,
        retries=retries,
        backoff=backoff,
    )
