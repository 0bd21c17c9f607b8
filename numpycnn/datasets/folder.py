"""Your own images: a folder with one subfolder of images per class.

The layout is torchvision's ImageFolder convention, in one of two forms:

- ``DIR/train/<class>/...`` and ``DIR/test/<class>/...``: the test set is given. The two
  must have the same class folders. Other folders beside train/ and test/ (val/, say) are
  not read.
- ``DIR/<class>/...`` alone: a seeded, stratified ``test_fraction`` of each class (at
  least one image of a class with two or more, never all of them) is held out as the test
  set, the same for the same files, fraction and seed.

A class is named after its folder, and classes are numbered in the sorted order of their
names. The images of a class are the files under its folder, in subfolders too, whose
names end in .png, .jpg, .jpeg, .bmp or .gif (any case); other files, and hidden files and
folders (a leading dot: .DS_Store, macOS's ._x.png, .ipynb_checkpoints), are not read.
Each image is decoded to ``input_shape`` (C, H, W), C = 1 grey or 3 RGB, as
``numpycnn.datasets.images`` describes: fitted and padded with its border colour, or
stretched. The training and test sets come out shuffled by the seed, so that a
validation set taken from the end of the training set holds every class.

Decoding happens once. The decoded arrays are cached in ``<data_dir>/folders/`` as one
.npz file, written to a temporary name and renamed, and read back with pickles refused.
Its name holds hashes of what the arrays depend on: each file's path, size and
modification time, the classes, ``input_shape``, ``resize``, this module's decoding
version and Pillow's version. A changed, added or removed file makes a new entry (the old
one of the same folder and settings is deleted; other settings keep theirs); a damaged
entry is decoded again. The split and the shuffling are applied after the cache, so
another seed or fraction costs no decoding. A cached start of 70,000 files takes 0.5-1.5
s here, most of it listing the files (``scripts/folder_bench.py``). Decoded images are
kept as uint8 throughout; the first load holds them about twice at its peak (all
decoded, then the training and test sets).

Files that cannot be read (damaged, not really images, too large) are skipped, and one
warning naming a few of them is returned in ``Dataset.warnings``. A missing folder, fewer
than two classes, a class folder without any image file, or whose images all fail, is a
``DataError`` naming the folder.
"""

import hashlib
import json
import os
import re
import secrets
import zipfile
from concurrent.futures import ThreadPoolExecutor
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import PIL

from ..data import DataError
from .base import Dataset
from .images import EXTENSIONS, RESIZES, ImageError, load_image

NAME = "folder"
DEFAULT_SHAPE = (1, 28, 28)
DEFAULT_TEST_FRACTION = 0.2
#: Largest image side accepted for ``input_shape``.
MAX_SIDE = 1024
#: Subfolder of the data directory that holds the decoded arrays.
CACHE_FOLDER = "folders"
#: Bump when decoding changes what it makes of a file: old cache entries stop matching.
DECODER_VERSION = 1
#: Images per task given to a decoding thread (and per progress update).
CHUNK = 64
#: Mean file size (bytes) from which decoding uses several threads (see ``_threads``).
LARGE_FILE = 16_384
#: How many unreadable files the warning names.
EXAMPLES = 3

TRAIN, TEST = 0, 1

__all__ = ["DEFAULT_SHAPE", "DEFAULT_TEST_FRACTION", "NAME", "load"]


def load(
    path,
    input_shape=DEFAULT_SHAPE,
    test_fraction=DEFAULT_TEST_FRACTION,
    resize="fit",
    seed=0,
    data_dir=None,
    progress=None,
    threads=None,
):
    """The images under folder ``path`` as a ``Dataset`` (see the module's description).

    ``input_shape``: (C, H, W) of the arrays, C = 1 or 3; ``test_fraction``: the share of
    each class held out when there is no test/ folder; ``resize``: "fit" or "stretch";
    ``seed``: the split and the shuffling; ``data_dir``: where the decoded arrays are
    cached (None: no cache); ``progress``: a tqdm-like factory, called as
    ``progress(desc=..., total=images)``, for the decoding; ``threads``: decoding threads
    (None: chosen by the files' size, see ``_threads``).
    """
    shape = _check_shape(input_shape)
    if resize not in RESIZES:
        raise ValueError(f"resize must be one of {', '.join(RESIZES)}, got {resize!r}")
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, Real):
        raise ValueError(f"test_fraction must be a number, got {test_fraction!r}")
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, Integral) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    if threads is not None:
        _threads(threads, None)  # check it before any work
    root = _check_root(path)
    scan = _scan(root)
    key = _fingerprint(scan, shape, resize)
    entry = None if data_dir is None else _cache_entry(Path(data_dir), root, key)
    decoded = None if entry is None else _read_cache(entry, shape)
    warnings = []
    if decoded is None:
        decoded = _decode(scan, shape, resize, progress, _threads(threads, scan))
        if entry is not None:
            problem = _write_cache(entry, decoded)
            if problem:
                warnings.append(problem)
    images, labels, parts, skipped, reasons = decoded
    if len(skipped):
        warnings.insert(0, _skipped_warning(root, len(scan.files), skipped, reasons))
    train, test = _split(labels, parts, scan, test_fraction, seed)
    source = {
        "dataset": NAME,
        "path": str(root),
        "layout": scan.layout,
        "input_shape": list(shape),
        "resize": resize,
        "seed": int(seed),
        "fingerprint": key[1][:16],
    }
    if scan.layout == "classes":
        source["test_fraction"] = float(test_fraction)
    return Dataset(
        name=NAME,
        train_images=images[train],
        train_labels=labels[train],
        test_images=images[test],
        test_labels=labels[test],
        class_names=list(scan.classes),
        source=source,
        warnings=tuple(warnings),
    )


# ----- options -----


def _check_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        shape = ()
    ok = len(shape) == 3 and all(isinstance(v, Integral) and not isinstance(v, bool) for v in shape)
    if not ok or shape[0] not in (1, 3) or not all(1 <= v <= MAX_SIDE for v in shape[1:]):
        raise ValueError(
            f"input_shape must be [C, H, W] with C 1 (grey) or 3 (RGB) and sides 1 to "
            f"{MAX_SIDE}, got {list(shape) if ok else input_shape!r}"
        )
    return tuple(int(v) for v in shape)


def _check_root(path):
    root = Path(path).expanduser()
    if not root.exists():
        raise DataError(f"{root}: no such folder")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (give a folder with one subfolder per class)")
    return root.resolve()


def _threads(threads, scan):
    """The decoding threads: as asked, else one per usable CPU (at most 4) for files of
    16 KB or more on average, else one. Pillow decodes without the GIL, but a small file
    costs mostly Python (opening, header parsing): measured on 2 cores, 2 threads decoded
    640x480 JPEGs 1.5-1.7x as fast as 1, MNIST's 28x28 PNGs 0.77-1.15x as fast."""
    if threads is None:
        sizes = [size for size, _ in scan.stats if size > 0]
        if not sizes or sum(sizes) / len(sizes) < LARGE_FILE:
            return 1
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        return max(1, min(4, usable or os.cpu_count() or 1))
    if isinstance(threads, bool) or not isinstance(threads, Integral) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    return int(threads)


# ----- finding the files -----


class _Scan:
    """The folder's layout, classes and image files (paths relative to the root, sorted)
    with their labels, parts (TRAIN or TEST) and (size, mtime_ns)."""

    def __init__(self, root, layout, classes):
        self.root, self.layout, self.classes = root, layout, classes
        self.files, self.labels, self.parts, self.stats = [], [], [], []


def _subfolders(folder):
    """The names of a folder's visible subfolders, sorted."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if not e.name.startswith(".") and e.is_dir())
    except OSError as exc:
        raise DataError(f"{folder}: cannot list the folder ({exc.strerror})") from None


def _image_files(folder, root):
    """(path relative to ``root`` with "/", size, mtime_ns) of each image file under
    ``folder``, recursively, links followed (each folder once), sorted by path. Plain
    strings and ``os.scandir``: a folder of 70,000 files is listed in a fraction of a
    second, which is most of a cached start."""
    found, seen, pending = [], set(), [os.fspath(folder)]
    prefix = len(os.fspath(root)) + 1
    while pending:
        current = pending.pop()
        try:
            st = os.stat(current)
            with os.scandir(current) as it:
                entries = list(it)
        except OSError as exc:
            raise DataError(f"{current}: cannot list the folder ({exc.strerror})") from None
        if (st.st_dev, st.st_ino) in seen:  # a link back up the tree
            continue
        seen.add((st.st_dev, st.st_ino))
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                pending.append(entry.path)
            elif entry.name.lower().endswith(EXTENSIONS):
                try:
                    info = entry.stat()
                    stat = (info.st_size, info.st_mtime_ns)
                except OSError:
                    stat = (-1, -1)  # gone or unreadable: decoding will say why
                found.append((entry.path[prefix:].replace(os.sep, "/"), *stat))
    return sorted(found)


def _scan(root):
    train_dir, test_dir = root / "train", root / "test"
    if train_dir.is_dir():
        if not test_dir.is_dir():
            raise DataError(
                f"{test_dir}: missing (a folder with train/ needs test/ beside it, "
                "with the same class folders)"
            )
        classes, test_classes = _subfolders(train_dir), _subfolders(test_dir)
        if classes != test_classes:
            missing = [c for c in classes if c not in test_classes]
            extra = [c for c in test_classes if c not in classes]
            detail = "; ".join(
                text
                for text in (
                    missing and "no " + ", ".join(missing),
                    extra and "extra " + ", ".join(extra),
                )
                if text
            )
            raise DataError(f"{test_dir}: class folders differ from train/'s ({detail})")
        scan, parts = _Scan(root, "split", classes), [(train_dir, TRAIN), (test_dir, TEST)]
    else:
        scan, parts = _Scan(root, "classes", _subfolders(root)), [(root, TRAIN)]
    where = parts[0][0]
    if len(scan.classes) < 2:
        raise DataError(
            f"{where}: {len(scan.classes)} class folder{'s' if len(scan.classes) != 1 else ''}"
            ", need at least 2 (one subfolder of images per class)"
        )
    for folder, part in parts:
        for label, name in enumerate(scan.classes):
            files = _image_files(folder / name, root)
            if not files:
                raise DataError(
                    f"{folder / name}: no image files ({', '.join(EXTENSIONS)}) in the folder"
                )
            scan.files += [file for file, _, _ in files]
            scan.stats += [(size, mtime) for _, size, mtime in files]
            scan.labels += [label] * len(files)
            scan.parts += [part] * len(files)
    return scan


# ----- the cache -----


def _fingerprint(scan, shape, resize):
    """(settings, files): SHA-256 digests of everything the decoded arrays depend on, the
    decoding settings apart from the files' list, sizes and modification times."""
    settings = {
        "decoder": DECODER_VERSION,
        "pillow": PIL.__version__,
        "input_shape": list(shape),
        "resize": resize,
    }
    files = hashlib.sha256(json.dumps([scan.layout, scan.classes]).encode())
    for file, label, part, (size, mtime) in zip(scan.files, scan.labels, scan.parts, scan.stats):
        files.update(f"\n{file}\0{label}\0{part}\0{size}\0{mtime}".encode("utf-8", "replace"))
    settings = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    return settings.hexdigest(), files.hexdigest()


def _cache_entry(data_dir, root, key):
    """The cache file for this folder and key: <data_dir>/folders/<name>-<path hash>-
    <settings hash>-<files hash>.npz. Entries of other settings are kept side by side."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", root.name)[:40] or "folder"
    where = hashlib.sha256(os.fsencode(root)).hexdigest()[:8]
    settings, files = key
    return data_dir / CACHE_FOLDER / f"{slug}-{where}-{settings[:8]}-{files[:24]}.npz"


ARRAYS = ("images", "labels", "parts", "skipped", "reasons")


def _read_cache(entry, shape):
    """The cached (images, labels, parts, skipped, reasons), or None if absent or damaged."""
    try:
        with np.load(entry, allow_pickle=False) as npz:
            arrays = tuple(npz[name] for name in ARRAYS)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None
    images, labels, parts, skipped, reasons = arrays
    n = len(images)
    if (
        images.dtype != np.uint8
        or images.shape[1:] != shape
        or labels.shape != (n,)
        or parts.shape != (n,)
        or skipped.shape != reasons.shape
    ):
        return None
    return images, labels.astype(np.int64), parts.astype(np.int8), skipped, reasons


def _write_cache(entry, decoded):
    """Save decoded arrays under ``entry`` atomically, and delete older entries of the same
    folder and settings; a problem is returned as a warning (no cache is no failure)."""
    tmp = entry.with_name(f".{entry.name}.{secrets.token_hex(6)}.part")
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as out:
            np.savez(out, **dict(zip(ARRAYS, decoded)))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, entry)
        prefix = entry.name.rsplit("-", 1)[0] + "-"
        for old in entry.parent.glob(f"{_glob_escape(prefix)}*.npz"):
            if old != entry:
                old.unlink(missing_ok=True)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass  # never created: its folder could not be
        return f"{entry.parent}: could not cache the decoded images ({exc.strerror or exc})"
    return None


def _glob_escape(text):
    return re.sub(r"([*?[])", r"[\1]", text)


# ----- decoding -----


def _decode(scan, shape, resize, progress, threads):
    """(images, labels, parts, skipped, reasons): the readable images decoded, in file
    order, and the unreadable files with why."""
    n = len(scan.files)
    try:
        images = np.empty((n, *shape), dtype=np.uint8)
    except MemoryError:
        size = n * np.prod(shape) / 1e9
        raise DataError(f"{scan.root}: {n:,} images of {shape} need {size:.1f} GB") from None
    ok = np.zeros(n, dtype=bool)
    reasons = {}

    def work(start):
        failures = []
        for i in range(start, min(start + CHUNK, n)):
            path = scan.root / scan.files[i]
            try:
                images[i] = load_image(path, shape, resize)
                ok[i] = True
            except ImageError as exc:
                failures.append((i, str(exc).removeprefix(f"{path}: ")))
        return min(start + CHUNK, n) - start, failures

    bar = None if progress is None else progress(desc=f"decoding {scan.root.name}", total=n)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        starts = range(0, n, CHUNK)
        for count, failures in map(work, starts) if pool is None else pool.map(work, starts):
            reasons.update(failures)
            if bar is not None:
                bar.update(count)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if bar is not None:
            bar.close()
    labels = np.array(scan.labels, dtype=np.int64)
    parts = np.array(scan.parts, dtype=np.int8)
    _check_classes(scan, ok, labels, parts, reasons)
    bad = sorted(reasons)
    skipped = np.array([scan.files[i] for i in bad], dtype=str)
    why = np.array([reasons[i] for i in bad], dtype=str)
    if not bad:
        return images, labels, parts, skipped, why
    return images[ok], labels[ok], parts[ok], skipped, why


def _check_classes(scan, ok, labels, parts, reasons):
    """DataError naming the first class folder none of whose images could be read."""
    for part, folder in ((TRAIN, "train"), (TEST, "test")):
        for label, name in enumerate(scan.classes):
            mine = (labels == label) & (parts == part)
            if mine.any() and not ok[mine].any():
                first = int(np.flatnonzero(mine)[0])
                where = scan.root / folder / name if scan.layout == "split" else scan.root / name
                raise DataError(
                    f"{where}: none of its {int(mine.sum())} image files could be read "
                    f"({scan.files[first]}: {reasons[first]})"
                )


def _skipped_warning(root, total, skipped, reasons):
    named = "; ".join(f"{f} ({r})" for f, r in zip(skipped[:EXAMPLES], reasons[:EXAMPLES]))
    more = f"; and {len(skipped) - EXAMPLES} more" if len(skipped) > EXAMPLES else ""
    return (
        f"{root}: skipped {len(skipped):,} of {total:,} image files that could not be read: "
        f"{named}{more}"
    )


# ----- split and order -----


def _split(labels, parts, scan, test_fraction, seed):
    """Indices of the training and test images, each shuffled by ``seed``."""
    rng = np.random.default_rng([int(seed), 0xF01D])
    if scan.layout == "split":
        train, test = np.flatnonzero(parts == TRAIN), np.flatnonzero(parts == TEST)
    else:
        train, test = [], []
        for label in range(len(scan.classes)):
            mine = rng.permutation(np.flatnonzero(labels == label))
            held = int(np.floor(len(mine) * test_fraction + 0.5))
            held = min(max(held, 1 if len(mine) >= 2 else 0), len(mine) - 1)
            test.append(mine[:held])
            train.append(mine[held:])
        train, test = np.concatenate(train), np.concatenate(test)
    return rng.permutation(train), rng.permutation(test)
