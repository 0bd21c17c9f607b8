"""CIFAR-10 (Krizhevsky, 2009): 60,000 colour 32x32 images in ten classes, from the
binary version of the publisher's archive.

``cifar-10-binary.tar.gz`` holds ``cifar-10-batches-bin/`` with ``data_batch_1.bin`` to
``data_batch_5.bin`` (the 50,000 training images), ``test_batch.bin`` (10,000) and
``batches.meta.txt`` (the class names, one a line). Each .bin file is 10,000 records of
3,073 bytes: the label (0-9), then the 1,024 red, 1,024 green and 1,024 blue pixels of a
32x32 image, each plane row by row: exactly (C, H, W) order. The binary version is used
rather than the Python one so that nothing is unpickled.

The archive is verified by the MD5 the publisher lists on the CIFAR page (see
``download``). Only the seven expected members are extracted, and only if they are
regular files; with tarfile's "data" filter where Python has it (3.12, and the security
releases 3.8.17, 3.9.17, 3.10.12, 3.11.4 on), which refuses absolute paths, paths leaving
the target, links and device files. They are extracted into a temporary folder that is
renamed to ``<data_dir>/cifar10/cifar-10-batches-bin`` only once complete, so an
interrupted extraction leaves nothing half-written under that name. Later runs read the
extracted files (their sizes checked) without opening the archive.
"""

import os
import secrets
import shutil
import tarfile
from pathlib import Path

import numpy as np

from ..data import DataError
from . import download
from .base import Dataset

NAME = "cifar10"
ARCHIVE = "cifar-10-binary.tar.gz"
#: MD5 of the archive, as the publisher lists it (162 MB, 170,052,171 bytes).
FILES = {ARCHIVE: "c32a1d4ab5d03f1284b67883e8d87530"}
DEFAULT_MIRRORS = ["https://www.cs.toronto.edu/~kriz/"]

FOLDER = "cifar-10-batches-bin"
TRAIN_BATCHES = [f"data_batch_{k}.bin" for k in range(1, 6)]
TEST_BATCH = "test_batch.bin"
META = "batches.meta.txt"
MEMBERS = (*TRAIN_BATCHES, TEST_BATCH, META)

INPUT_SHAPE = (3, 32, 32)
RECORD = 1 + 3 * 32 * 32
#: Records in each .bin file.
RECORDS = 10_000
CLASSES = 10

__all__ = ["ARCHIVE", "DEFAULT_MIRRORS", "FILES", "INPUT_SHAPE", "NAME", "load"]


def _complete(folder):
    """Whether an extracted folder holds every member, the batches at their exact size."""
    try:
        sizes = [(folder / name).stat().st_size for name in (*TRAIN_BATCHES, TEST_BATCH)]
        return (folder / META).is_file() and sizes == [RECORDS * RECORD] * len(sizes)
    except OSError:
        return False


def _members(tar, archive):
    """The archive's seven expected members, each checked to be a regular file."""
    wanted = {f"{FOLDER}/{name}": name for name in MEMBERS}
    found = {}
    for member in tar:
        name = wanted.get(member.name.removeprefix("./"))
        if name is None:
            continue  # anything else in the archive is never extracted
        if not member.isfile():
            raise DataError(f"{archive}: {member.name} is not a regular file")
        found[name] = member
    missing = [f"{FOLDER}/{name}" for name in MEMBERS if name not in found]
    if missing:
        raise DataError(f"{archive}: missing {', '.join(missing)}")
    return found


def _extract(archive, target):
    """Extract the expected members of ``archive`` into the folder ``target``, atomically."""
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.part")
    tmp.mkdir()
    try:
        try:
            with tarfile.open(archive, "r:gz") as tar:
                members = _members(tar, archive)
                if hasattr(tarfile, "data_filter"):
                    tar.extractall(tmp, members=list(members.values()), filter="data")
                    for name, member in members.items():
                        os.replace(tmp / member.name, tmp / name)
                    (tmp / FOLDER).rmdir()
                else:  # no filter in this Python: write the members' bytes ourselves
                    for name, member in members.items():
                        with tar.extractfile(member) as src, open(tmp / name, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        except (tarfile.TarError, EOFError, OSError) as exc:
            raise DataError(f"{archive}: cannot extract ({exc})") from None
        if target.exists():  # a folder left incomplete: replaced as a whole
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _read_batch(path):
    """(images (N, 3, 32, 32) uint8, labels (N,) int64) of one .bin file, sizes checked."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if len(data) != RECORDS * RECORD:
        raise DataError(
            f"{path}: {len(data):,} bytes, expected {RECORDS:,} records of {RECORD:,} bytes "
            f"({RECORDS * RECORD:,})"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(RECORDS, RECORD)
    labels = records[:, 0].astype(np.int64)
    if labels.max() >= CLASSES:
        bad = int(np.argmax(labels >= CLASSES))
        raise DataError(f"{path}: record {bad} has label {labels[bad]}, not in 0..{CLASSES - 1}")
    return records[:, 1:].reshape(RECORDS, *INPUT_SHAPE), labels


def _read_names(path):
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != CLASSES:
        raise DataError(f"{path}: {len(names)} class names, expected {CLASSES}")
    return names


def load(data_dir, mirrors=None, progress=None, **transfer):
    """CIFAR-10 from ``<data_dir>/cifar10/``, fetched, verified and extracted if needed.

    ``mirrors``: URL prefixes, file:// URLs or folders that serve ``cifar-10-binary.tar.gz``
    (DEFAULT_MIRRORS if None); ``progress`` and ``transfer`` as ``fashion_mnist.load``.
    """
    cache = Path(data_dir) / NAME
    folder = cache / FOLDER
    if not _complete(folder):
        mirrors = DEFAULT_MIRRORS if mirrors is None else mirrors
        paths = download.fetch(cache, FILES, mirrors, NAME, progress, **transfer)
        _extract(paths[ARCHIVE], folder)
    train = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    test_x, test_y = _read_batch(folder / TEST_BATCH)
    return Dataset(
        name=NAME,
        train_images=np.concatenate([x for x, _ in train]),
        train_labels=np.concatenate([y for _, y in train]),
        test_images=np.ascontiguousarray(test_x),
        test_labels=test_y,
        class_names=_read_names(folder / META),
        source={"dataset": NAME},
    )
