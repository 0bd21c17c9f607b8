"""A colour network's training against the same network in PyTorch, side by side, and the
memory a CIFAR-10-sized training set takes as float32 and as uint8.

The network is configs/cifar10.yaml's (3x32x32 input, 156,074 parameters). Both sides
train it from the same initial weights (``numpycnn.to_torch``) with Adam on the same
batches of 64 images for ``--images`` images, on one thread (numpycnn: one BLAS thread
per process; PyTorch: ``set_num_threads(1)``), and numpycnn again with 2 worker processes
(PyTorch with 2 threads). Rounds alternate between the sides; the best round of each is
reported (the machine is shared and noisy), with the load average. The images are CIFAR-
sized random pixels: the arithmetic of a step does not depend on what the pixels show,
and CIFAR-10 cannot be downloaded here.

The memory part builds the training set of 45,000 3x32x32 images both ways in a child
process each and reports its peak resident memory (ru_maxrss) and, with 2 workers, the
shared memory the pool holds.

    python scripts/colour_bench.py                 # 3 rounds of 3,200 images
    python scripts/colour_bench.py --rounds 5 --images 6400
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCH = 64
LR = 0.003


def setup(images, seed=0):
    from numpycnn.api import Model
    from numpycnn.config import load_config
    from numpycnn.data import Normalization
    from numpycnn.engine import Sequential

    config = load_config(ROOT / "numpycnn" / "configs" / "cifar10.yaml")
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (images, 3, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 10, images).astype(np.int64)
    norm = Normalization.fit("standard", x)
    model = Sequential(config.network, input_shape=(3, 32, 32), seed=seed)
    return Model(model, norm), x, y


def batches(n, seed=1):
    order = np.random.default_rng(seed).permutation(n)
    return [order[i : i + BATCH] for i in range(0, n, BATCH)]


def numpycnn_round(model, x, y, workers):
    from numpycnn import parallel
    from numpycnn.engine import optim
    from numpycnn.training import Trainer

    net = model.network
    start = net.flat_params.copy()
    t = Trainer(net, optim.Adam(lr=LR), x, y, epochs=1, batch_size=BATCH, seed=1,
                normalize=model.normalization.norm)  # fmt: skip
    with parallel.one_blas_thread():
        if workers > 1:
            with parallel.WorkerPool(net, t.x, t.y, workers,
                                     normalize=model.normalization.norm) as pool:  # fmt: skip
                t.use_pool(pool)
                started = time.perf_counter()
                t.run()
                seconds = time.perf_counter() - started
        else:
            started = time.perf_counter()
            t.run()
            seconds = time.perf_counter() - started
    net.flat_params[...] = start
    return seconds


def torch_round(model, x, y, threads):
    import torch

    import numpycnn

    torch.set_num_threads(threads)
    net = numpycnn.to_torch(model).train()
    xt = torch.from_numpy(model.normalization.norm(x))
    yt = torch.from_numpy(y)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    loss_fn = torch.nn.functional.cross_entropy
    started = time.perf_counter()
    for idx in batches(len(x)):
        idx = torch.from_numpy(idx)
        opt.zero_grad()
        loss_fn(net(xt[idx]), yt[idx]).backward()
        opt.step()
    return time.perf_counter() - started


def memory_child(kind, workers):
    """Peak RSS (MB) of building the 45,000-image training set ``kind`` (float32 or uint8),
    and the shared memory of a pool of ``workers`` holding it."""
    from numpycnn import parallel
    from numpycnn.engine import optim
    from numpycnn.training import Trainer

    model, x, y = setup(45_000)
    normalize = model.normalization.norm
    images = x if kind == "uint8" else normalize(x)
    del x
    t = Trainer(model.network, optim.Adam(lr=LR), images, y, epochs=1, batch_size=BATCH,
                normalize=normalize if kind == "uint8" else None)  # fmt: skip
    shm = 0
    if workers > 1:
        with parallel.WorkerPool(model.network, t.x, t.y, workers,
                                 normalize=t.normalize) as pool:  # fmt: skip
            shm = pool.images.nbytes
            t.use_pool(pool)
            del images
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"kind": kind, "workers": workers, "peak_mb": peak, "shm_mb": shm / 1e6}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=3200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-child", nargs=2, metavar=("KIND", "WORKERS"))
    args = parser.parse_args(argv)
    if args.memory_child:
        return memory_child(args.memory_child[0], int(args.memory_child[1]))

    model, x, y = setup(args.images)
    sides = {
        "numpycnn, 1 process": lambda: numpycnn_round(model, x, y, 1),
        "PyTorch, 1 thread": lambda: torch_round(model, x, y, 1),
        "numpycnn, 2 workers": lambda: numpycnn_round(model, x, y, 2),
        "PyTorch, 2 threads": lambda: torch_round(model, x, y, 2),
    }
    times = {name: [] for name in sides}
    load = [os.getloadavg()[0]]
    for _ in range(args.rounds):
        for name, run in sides.items():
            times[name].append(run())
        load.append(os.getloadavg()[0])
    print(
        f"cifar10.yaml network, {args.images:,} images of 3x32x32 a round, batch {BATCH}, "
        f"best of {args.rounds} rounds; load average {min(load):.1f}-{max(load):.1f}"
    )
    for name, seconds in times.items():
        best = min(seconds)
        epoch = best * 45_000 / args.images
        print(f"  {name:<22} {args.images / best:>7,.0f} images/s   "
              f"{epoch:>5.0f} s per 45,000-image epoch")  # fmt: skip
    print("memory of the 45,000-image training set (peak RSS of a process building it):")
    for kind in ("float32", "uint8"):
        for workers in (1, 2):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-child", kind, str(workers)],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            m = json.loads(out.splitlines()[-1])
            shm = f", shared memory {m['shm_mb']:.0f} MB" if workers > 1 else ""
            print(f"  {kind:<8} {workers} worker(s): peak {m['peak_mb']:,.0f} MB{shm}")


if __name__ == "__main__":
    main()
