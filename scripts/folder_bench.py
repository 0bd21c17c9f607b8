"""How fast the folder source decodes, and how fast a cached start is.

Writes the 70,000 MNIST images as PNG files into a class-per-folder tree (train/<digit>/
and test/<digit>/, in a temporary folder unless ``--dir`` names one), then loads it with
``numpycnn.datasets.folder`` as ``numpycnn train`` will:

1. the first load, which decodes every file, once per thread count asked for (each with an
   empty cache), in images per second;
2. the cached start: the same load again, which only lists and stats the files and reads
   the cached arrays back, in seconds.

It checks that the decoded arrays equal the IDX pixels, so a fast wrong answer cannot
pass. The load average is printed beside the figures, as these machines are shared.

    python scripts/folder_bench.py                       # MNIST from data/ or ../shared
    python scripts/folder_bench.py --threads 1 2 --limit 20000 --dir /some/where
"""

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from numpycnn.data import load_mnist, resolve_data_dir
from numpycnn.datasets import folder

ROOT = Path(__file__).resolve().parent.parent
#: The shared MNIST folder beside the project, used as the mirror when it exists.
SHARED = ROOT.parent / "shared"


def loadavg():
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return ["?"] * 3


def write_tree(root, mnist, limit):
    """The MNIST images as PNGs under root/train/<digit>/ and root/test/<digit>/."""
    parts = (
        ("train", mnist.train_images, mnist.train_labels),
        ("test", mnist.test_images, mnist.test_labels),
    )
    written = 0
    for part, xs, ys in parts:
        n = len(xs) if limit is None else min(len(xs), limit * len(xs) // 70_000)
        for d in range(10):
            (root / part / str(d)).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(xs[i]).save(root / part / str(ys[i]) / f"{i:05}.png")
        written += n
    return written


def check(ds, mnist):
    """The decoded images are MNIST's, each in its class (compared as sorted bytes)."""
    for xs, ys, want_x, want_y in (
        (ds.train_images, ds.train_labels, mnist.train_images, mnist.train_labels),
        (ds.test_images, ds.test_labels, mnist.test_images, mnist.test_labels),
    ):
        for d in range(10):
            got = [x.tobytes() for x in xs[ys == d, 0]]
            want = set(x.tobytes() for x in want_x[want_y == d])
            if not set(got) <= want:
                sys.exit(f"decoded images of class {d} differ from MNIST's")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", type=Path, help="write the tree here (kept) instead of a temp")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--limit", type=int, help="write only about this many images")
    parser.add_argument("--data-dir", type=Path, help="where MNIST is (default: ../shared)")
    args = parser.parse_args(argv)

    data_dir = args.data_dir or (SHARED if (SHARED / "mnist").is_dir() else resolve_data_dir())
    mnist = load_mnist(data_dir)
    base = args.dir or Path(tempfile.mkdtemp(prefix="folder-bench-"))
    tree, cache = base / "mnist-png", base / "cache"
    try:
        if not tree.is_dir():
            start = time.perf_counter()
            n = write_tree(tree, mnist, args.limit)
            print(f"wrote {n:,} PNG files in {time.perf_counter() - start:.1f} s", flush=True)
        for threads in args.threads:
            shutil.rmtree(cache, ignore_errors=True)
            before = loadavg()
            start = time.perf_counter()
            ds = folder.load(tree, data_dir=cache, threads=threads)
            seconds = time.perf_counter() - start
            n = len(ds.train_images) + len(ds.test_images)
            print(
                f"first load, {threads} thread{'s' if threads > 1 else ''}: {n:,} images in "
                f"{seconds:.2f} s = {n / seconds:,.0f} images/s "
                f"(load average {' '.join(before)} -> {' '.join(loadavg())})",
                flush=True,
            )
            check(ds, mnist)
        for _ in range(2):
            before = loadavg()
            start = time.perf_counter()
            ds = folder.load(tree, data_dir=cache)
            print(
                f"cached start: {time.perf_counter() - start:.2f} s "
                f"(load average {' '.join(before)} -> {' '.join(loadavg())})",
                flush=True,
            )
        check(ds, mnist)
        print(f"cache entry: {sum(p.stat().st_size for p in cache.rglob('*.npz')) / 1e6:.1f} MB")
        print(f"cpus usable: {len(os.sched_getaffinity(0))}")
    finally:
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
