#!/usr/bin/env python3
"""numpycnn against PyTorch (``make bench``): each side in its own processes, runs interleaved.

Both train the reference network (SPEC.md) from the same initial parameters, in float32,
with Adam (lr 1e-3), on the same shuffled order of the 60,000 MNIST training images,
normalised with numpycnn's ``standard`` normalisation. numpycnn runs with its default
workers (``numpycnn.parallel.default_workers``, at most ``--threads``), stepping through a
``WorkerPool`` with the engine's Adam as its trainer does; PyTorch on ``--threads`` threads.

Every measurement runs in a fresh process per side, never both sides in one process (each
would slow the other: spinning BLAS threads, leftover thread pools). ``--rounds`` rounds
alternate which side goes first, so that a busy spell of a shared machine hits both, and
the ratio that counts is that of the round least favourable to numpycnn (the ratio of its
two adjacent runs); the median of the rounds is shown beside it. Memory is the
proportional set size (PSS) summed over the process and all its descendants (the helpers),
sampled while it trains, in runs of their own: reading a process's PSS walks its page
tables, which slowed PyTorch's training by 6-8% here when the timed runs were sampled. A
plain PyTorch script, which imports nothing of numpycnn, checks the PyTorch figures. A
per-layer time table shows where numpycnn's time goes at batch 32.

Prints a table on stdout (progress goes to stderr); ``--json FILE`` writes the figures.
"""

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import time_to_accuracy  # noqa: E402  (beside this script)

MNIST_ENV = "NUMPYCNN_TEST_MNIST"
LR = 1e-3
NORMALIZATION = "standard"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"

#: The issues' targets: epoch time at batch 32 and at 128 at most PyTorch's, prediction
#: throughput at least 1.25x PyTorch's, best against best (#20: PyTorch's CPU speed here is
#: bimodal, and its fast mode is the one to beat), all processes of training on all of
#: MNIST under 1 GB.
TRAIN_RATIO_MAX = 1.0
INFERENCE_RATIO_MIN = 1.25
#: Above this 1-minute load average a figure is not that of a quiet machine: say so.
LOAD_WARNING = 0.5
MEMORY_MB_MAX = 1000.0

#: Batches of the memory runs: the whole data set is loaded and shared before the first,
#: and a run's memory is steady long before this many.
MEMORY_BATCHES = 300
#: The bench's PyTorch figures should be within this fraction of a plain PyTorch script's.
PLAIN_TOLERANCE = 0.25

#: The 2018 reference's own code, measured on these machines (SPEC.md).
REFERENCE_SECONDS_PER_IMAGE = 0.160
REFERENCE_PREDICT_PER_S = 11.9

SIDES = ("numpycnn", "torch")


def log(message):
    print(message, file=sys.stderr, flush=True)


def default_mnist_dir():
    """``$NUMPYCNN_TEST_MNIST``, else ``../shared/mnist`` beside the project, else the
    project's download cache ``data/mnist``."""
    if os.environ.get(MNIST_ENV):
        return Path(os.environ[MNIST_ENV])
    shared = ROOT.parent / "shared" / "mnist"
    return shared if (shared / TRAIN_IMAGES).is_file() else ROOT / "data" / "mnist"


def have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def usable_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# ===== inside a measuring process =====


def load_data(spec):
    """Normalised float32 training and test images and their labels."""
    import numpy as np

    from numpycnn.data import (
        TEST_IMAGES,
        TEST_LABELS,
        TRAIN_LABELS,
        Normalization,
        read_idx,
    )

    mnist = Path(spec["mnist"])
    train = read_idx(mnist / TRAIN_IMAGES)
    norm = Normalization.fit(NORMALIZATION, train)
    test = read_idx(mnist / TEST_IMAGES)[: spec["infer_images"]]
    return {
        "x": norm.norm(train),
        "y": read_idx(mnist / TRAIN_LABELS).astype(np.int64),
        "test_x": norm.norm(test),
        "test_y": read_idx(mnist / TEST_LABELS)[: spec["infer_images"]].astype(np.int64),
    }


def initial_params(seed):
    from numpycnn.engine import reference_network

    return reference_network(seed=seed).get_params()


def epoch_batches(order, batch_size, limit=None):
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return batches if limit is None else batches[:limit]


def blas_info():
    """NumPy's BLAS and its thread count (threadpoolctl's view)."""
    import numpy as np
    from threadpoolctl import threadpool_info

    pools = [p for p in threadpool_info() if p.get("user_api") == "blas"]
    return {
        "numpy": np.__version__,
        "blas": ", ".join(f"{p['internal_api']} {p.get('version')}" for p in pools) or "unknown",
        "threads": pools[0]["num_threads"] if pools else None,
    }


class NumpycnnSide:
    """numpycnn's reference network and Adam, on ``workers`` workers (this process and
    ``workers - 1`` helper processes; 1: in this process alone, on its BLAS threads),
    training and predicting as its commands do."""

    name = "numpycnn"

    def __init__(self, params, data, workers):
        from numpycnn.allocator import keep_freed_blocks
        from numpycnn.engine import reference_network
        from numpycnn.engine.optim import Adam
        from numpycnn.parallel import WorkerPool

        keep_freed_blocks()  # as every numpycnn command does, with or without workers
        self.params, self.Adam = params, Adam
        self.model = reference_network()
        self.x, self.y = data["x"], data["y"]
        self.workers, self.pool = workers, None
        started = time.perf_counter()
        if workers > 1:
            self.pool = WorkerPool(self.model, self.x, self.y, workers=workers)
            self.x = data["x"] = self.pool.images  # the shared copy only
        self.start_seconds = time.perf_counter() - started
        self.reset()

    def reset(self):
        self.model.set_params(self.params)
        self.optimizer = self.Adam(lr=LR)

    def train(self, batches):
        """Train on each index array of ``batches``; (seconds, correct predictions)."""
        model, opt, pool, correct = self.model, self.optimizer, self.pool, 0
        started = time.perf_counter()
        if pool is None:
            x, y = self.x, self.y
            for idx in batches:
                correct += model.train_step(x[idx], y[idx], opt)[1]
        else:
            for idx in batches:
                correct += pool.step(idx)[1]
                opt.step(model.flat_params, model.flat_grads)
        return time.perf_counter() - started, correct

    def predict(self, x, batch_size):
        # numpycnn predicts in cache-sized blocks of its own choosing (32), shared among
        # the workers; the batch size asked of the user-facing call is the whole set.
        if self.pool is None:
            return self.model.predict(x)
        return self.pool.predict(x)

    def close(self):
        if self.pool is not None:
            self.pool.close()


class TorchSide:
    """The same network in PyTorch, with numpycnn's initial parameters copied in."""

    name = "torch"

    def __init__(self, params, data, threads):
        import torch
        from torch import nn

        torch.set_num_threads(int(threads))
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # settable once per process, before any parallel work
            pass
        self.torch, self.params = torch, params
        self.net = nn.Sequential(
            nn.Conv2d(1, 8, 5),
            nn.ReLU(),
            nn.Conv2d(8, 8, 5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(800, 128),
            nn.ReLU(),
            nn.Linear(128, 10),
        )
        self.x, self.y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
        self.start_seconds = 0.0
        self.reset()

    def reset(self):
        copy_params(self.params, self.net)
        self.optimizer = self.torch.optim.Adam(self.net.parameters(), lr=LR)

    def train(self, batches):
        torch, net, opt, x, y, correct = self.torch, self.net, self.optimizer, self.x, self.y, 0
        loss_fn = torch.nn.functional.cross_entropy
        started = time.perf_counter()
        for idx in batches:
            idx = torch.from_numpy(idx)
            xb, yb = x[idx], y[idx]
            opt.zero_grad()
            out = net(xb)
            loss_fn(out, yb).backward()
            opt.step()
            correct += int((out.argmax(1) == yb).sum())
        return time.perf_counter() - started, correct

    def predict(self, x, batch_size):
        """Class predictions, from softmax probabilities as numpycnn's ``predict``."""
        torch, x = self.torch, self.torch.from_numpy(x)
        with torch.inference_mode():
            parts = [
                self.net(x[i : i + batch_size]).softmax(1).argmax(1)
                for i in range(0, len(x), batch_size)
            ]
        return torch.cat(parts).numpy()

    def logits(self, x):
        with self.torch.inference_mode():
            return self.net(self.torch.from_numpy(x)).numpy()

    def info(self):
        t = self.torch
        return {
            "torch": t.__version__,
            "threads": t.get_num_threads(),
            "interop_threads": t.get_num_interop_threads(),
            "mkldnn": t.backends.mkldnn.is_available(),
        }

    def close(self):
        pass


def copy_params(params, net):
    """numpycnn's parameters ``[f1, f2, w3, w4, b1, b2, b3, b4]`` into the torch network."""
    import numpy as np
    import torch

    layers = [m for m in net if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    weights, biases = params[: len(layers)], params[len(layers) :]
    with torch.no_grad():
        for layer, w, b in zip(layers, weights, biases, strict=True):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(b[:, 0])))


def make_side(spec, data):
    params = initial_params(spec["seed"])
    if spec["side"] == "torch":
        return TorchSide(params, data, spec["threads"])
    return NumpycnnSide(params, data, spec["workers"])


def child_train(spec):
    """One epoch (or ``batches``) at ``batch_size``, after a short warm-up."""
    import numpy as np

    data = load_data(spec)
    side = make_side(spec, data)
    try:
        order = np.random.default_rng(spec["seed"]).permutation(len(data["x"]))
        batches = epoch_batches(order, spec["batch_size"], spec["batches"])
        side.train(batches[:3])  # first calls pay one-off costs; then start afresh
        side.reset()
        seconds, correct = side.train(batches)
        images = sum(len(b) for b in batches)
        predicted = side.predict(data["test_x"], spec["infer_batch"])
        return {
            "seconds": seconds,
            "images": images,
            "images_per_s": images / seconds,
            "train_accuracy": correct / images,
            "test_accuracy": float((predicted == data["test_y"]).mean()),
            "start_seconds": side.start_seconds,
        }
    finally:
        side.close()


def child_predict(spec):
    """Prediction throughput on the test images: the median of ``reps`` runs."""
    data = load_data(spec)
    side = make_side(spec, data)
    try:
        x = data["test_x"]
        side.predict(x, spec["infer_batch"])  # warm-up
        rates = []
        for _ in range(spec["reps"]):
            started = time.perf_counter()
            side.predict(x, spec["infer_batch"])
            rates.append(len(x) / (time.perf_counter() - started))
        result = {"median_images_per_s": statistics.median(rates), "images_per_s": rates}
        if side.name == "torch":  # the same network: the same outputs before training
            from numpycnn.engine import reference_network

            probe = x[:64]
            model = reference_network()
            model.set_params(side.params)
            diff = abs(side.logits(probe) - model.forward(probe)).max()
            result["initial_logits_max_abs_diff"] = float(diff)
            result["torch"] = side.info()
        else:
            result["blas"] = blas_info()
        return result
    finally:
        side.close()


def child_layers(spec):
    """Where numpycnn's time goes at batch 32: each layer's forward and backward on one
    worker's share (and on the whole batch) on one BLAS thread, Adam, the summation of the
    workers' gradients, and what remains of a pool step: synchronisation and contention."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from numpycnn.allocator import keep_freed_blocks
    from numpycnn.engine import reference_network
    from numpycnn.engine.optim import Adam
    from numpycnn.parallel import WorkerPool, shares
    from numpycnn.poolworker import accumulate

    keep_freed_blocks()  # the layer times are those of a command's steps

    data = load_data(spec)
    x, y, workers = data["x"], data["y"], spec["workers"]
    model = reference_network()
    model.set_params(initial_params(spec["seed"]))
    order = np.random.default_rng(spec["seed"]).permutation(len(x))
    batches = epoch_batches(order, 32, spec["batches"])
    share = shares(32, workers)[0][1]
    names = [f"{k + 1} {layer.kind}" for k, layer in enumerate(model.layers)]
    result = {"workers": workers, "share_images": share, "steps": len(batches), "layers": names}
    clock = time.perf_counter
    with threadpool_limits(1):
        for key, size in (("share", share), ("batch", 32)):
            fwd, bwd, loss_t = np.zeros(len(names)), np.zeros(len(names)), np.zeros(1)
            for k, idx in enumerate([batches[0], *batches]):
                if k == 1:  # the first pass was a warm-up
                    fwd[:], bwd[:], loss_t[:] = 0, 0, 0
                out = model._as_input(x[idx[:size]])
                for i, layer in enumerate(model.layers):
                    t = clock()
                    out = layer.forward(out)
                    fwd[i] += clock() - t
                t = clock()
                model.loss.forward(out, y[idx[:size]])
                g = model.loss.backward()
                loss_t[0] += clock() - t
                for i in reversed(range(len(names))):
                    t = clock()
                    g = model.layers[i].backward(g)
                    bwd[i] += clock() - t
            steps = len(batches)
            result[key] = {
                "images": size,
                "forward_ms": list(fwd / steps * 1e3),
                "backward_ms": list(bwd / steps * 1e3),
                "loss_ms": loss_t[0] / steps * 1e3,
                "compute_ms": (fwd.sum() + bwd.sum() + loss_t[0]) / steps * 1e3,
            }
        opt = Adam(lr=LR)
        opt.step(model.flat_params, model.flat_grads)
        t = clock()
        for _ in batches:
            opt.step(model.flat_params, model.flat_grads)
        result["optimizer_ms"] = (clock() - t) / len(batches) * 1e3
        slots = np.ones((workers - 1, model.num_params), dtype=model.dtype)
        grads, scratch = np.ones_like(model.flat_grads), {}
        t = clock()
        for _ in batches:  # what the calling process does after each step
            for k, part in enumerate([grads, *slots]):
                accumulate(grads, part, 1 / workers, scratch, k == 0)
        result["summation_ms"] = (clock() - t) / len(batches) * 1e3
    result["step_ms"] = None
    if workers > 1:
        with WorkerPool(model, x, y, workers=workers) as pool:
            for idx in batches[:3]:
                pool.step(idx)
            t = clock()
            for idx in batches:
                pool.step(idx)
            result["step_ms"] = (clock() - t) / len(batches) * 1e3
    return result


CHILDREN = {"train": child_train, "predict": child_predict, "layers": child_layers}

#: A plain PyTorch process, importing nothing of numpycnn (nor NumPy's BLAS), to check the
#: figures of the bench's PyTorch side: prediction and training throughput on random
#: images of MNIST's shape.
PLAIN_TORCH = """
import json, statistics, sys, time
import torch
from torch import nn
threads, images, batch, reps, steps = (int(a) for a in sys.argv[1:6])
torch.set_num_threads(threads)
torch.set_num_interop_threads(1)
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(1, 8, 5), nn.ReLU(), nn.Conv2d(8, 8, 5), nn.ReLU(),
                    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(800, 128), nn.ReLU(),
                    nn.Linear(128, 10))
x = torch.randn(images, 1, 28, 28)
def predict():
    with torch.inference_mode():
        return torch.cat([net(x[i:i + batch]).softmax(1).argmax(1)
                          for i in range(0, len(x), batch)])
predict()
rates = []
for _ in range(reps):
    t = time.perf_counter(); predict(); rates.append(len(x) / (time.perf_counter() - t))
opt = torch.optim.Adam(net.parameters(), lr=1e-3)
xb, yb = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
def step():
    opt.zero_grad(); torch.nn.functional.cross_entropy(net(xb), yb).backward(); opt.step()
for _ in range(5):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
train = steps * 32 / (time.perf_counter() - t)
print(json.dumps({"predict_images_per_s": statistics.median(rates),
                  "train_32_images_per_s": train}))
"""


# ===== the conductor =====


def pss_kb(pid):
    """A process's proportional set size in kB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def family(pid):
    """``pid`` and every process below it."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(stat.split("/")[2]))
    found, todo = [pid], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class PssSampler(threading.Thread):
    """The peak over time of the PSS summed over a process and its descendants."""

    def __init__(self, pid, every=0.2):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak_kb, self.processes = 0, 0  # at the peak
        self.most = 0  # the most processes seen at once
        self.done = threading.Event()

    def run(self):
        while not self.done.wait(self.every):
            pids = family(self.pid)
            total = sum(pss_kb(p) for p in pids)
            self.most = max(self.most, len(pids))
            if total > self.peak_kb:
                self.peak_kb, self.processes = total, len(pids)


def child_env(spec):
    env = dict(os.environ)
    if spec["side"] == "torch":  # NumPy only moves data there: no BLAS threads of its own
        blas, omp = 1, spec["threads"]
    else:  # the in-process path uses BLAS threads; the pool's workers hold themselves to 1
        blas = omp = spec["threads"] if spec["workers"] == 1 else 1
    env.update(
        OPENBLAS_NUM_THREADS=str(blas),
        MKL_NUM_THREADS=str(blas),
        OMP_NUM_THREADS=str(omp),
    )
    return env


def run_child(spec):
    """Run ``CHILDREN[spec["task"]](spec)`` in a fresh interpreter; its result, with the
    peak PSS of all its processes."""
    command = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    before = os.getloadavg()[0]
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(spec)
    )
    sampler = PssSampler(proc.pid) if spec.get("memory") else None
    if sampler is not None:
        sampler.start()
    stdout, stderr = proc.communicate()
    if sampler is not None:
        sampler.done.set()
        sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {spec['task']} {spec['side']} failed:\n{stderr}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["load"] = [before, os.getloadavg()[0]]  # the 1-minute load around the process
    if sampler is not None:
        result["pss_peak_mb"] = sampler.peak_kb * 1024 / 1e6
        result["pss_processes"] = sampler.processes
        result["processes_seen"] = sampler.most
    return result


def run_plain_torch(args):
    steps = 200 if args.batches is None else min(200, args.batches)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS="1")
    argv = [args.threads, args.infer_images, args.infer_batch, args.infer_reps, steps]
    run = subprocess.run(
        [sys.executable, "-c", PLAIN_TORCH, *map(str, argv)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"the plain PyTorch script failed:\n{run.stderr}")
    return {"steps": steps, **json.loads(run.stdout.strip().splitlines()[-1])}


def order_of(round_, sides):
    """The sides in round ``round_``: numpycnn first in even rounds, torch first in odd."""
    return sides if round_ % 2 == 0 else sides[::-1]


def measure(task, args, sides, workers, **extra):
    """``args.rounds`` rounds of ``task``, each side in a fresh process, alternating."""
    base = {
        "task": task,
        "mnist": str(args.mnist),
        "seed": args.seed,
        "threads": args.threads,
        "batches": args.batches,
        "infer_images": args.infer_images,
        "infer_batch": args.infer_batch,
        "reps": args.infer_reps,
        **extra,
    }
    runs = {side: [] for side in sides}
    rounds = args.predict_rounds if task == "predict" else args.rounds
    for k in range(rounds):
        for side in order_of(k, sides):
            # "numpycnn-1": numpycnn with one worker, i.e. in process, on --threads BLAS threads
            side_workers = {"numpycnn": workers, "torch": 1}.get(side, 1)
            spec = {**base, "side": side.split("-")[0], "workers": side_workers}
            log(f"  {task} {extra}: round {k + 1}/{rounds}, {side}")
            runs[side].append(run_child(spec))
    return runs


def train_summary(runs, sides):
    result = {}
    for side in sides:
        r = runs[side]
        result[side] = {
            "seconds": [x["seconds"] for x in r],
            "median_seconds": statistics.median(x["seconds"] for x in r),
            "images_per_s": statistics.median(x["images_per_s"] for x in r),
            "train_accuracy": r[0]["train_accuracy"],
            "test_accuracy": r[0]["test_accuracy"],
            "start_seconds": r[0]["start_seconds"],
        }
    result["images"] = runs[sides[0]][0]["images"]
    result["ratio"] = None
    if "torch" in sides:
        pairs = zip(runs["numpycnn"], runs["torch"])  # adjacent in time
        result["round_ratios"] = [a["seconds"] / b["seconds"] for a, b in pairs]
        # The verdict takes the round least favourable to numpycnn: a load spike in one
        # of torch's runs must not make numpycnn look fast.
        result["ratio"] = max(result["round_ratios"])
        result["median_ratio"] = statistics.median(result["round_ratios"])
    result["single_ratio"] = None
    if "numpycnn-1" in sides:  # the default workers against the in-process path
        pairs = zip(runs["numpycnn"], runs["numpycnn-1"])
        result["single_ratio"] = max(a["seconds"] / b["seconds"] for a, b in pairs)
    return result


def predict_summary(runs, sides):
    """Each side's best (the fastest run of any of its processes) and median (of its
    processes' medians), the load around each process; the verdict's ratio is best against
    best, the median ratio beside it."""
    result = {}
    for side in sides:
        rates = [x["median_images_per_s"] for x in runs[side]]
        result[side] = {
            "median_images_per_s": statistics.median(rates),
            "best_images_per_s": max(max(x["images_per_s"]) for x in runs[side]),
            "rounds": rates,
            "loads": [x["load"] for x in runs[side]],
        }
    result["ratio"] = result["median_ratio"] = None
    if "torch" in sides:
        n, t = result["numpycnn"], result["torch"]
        result["round_ratios"] = [a / b for a, b in zip(n["rounds"], t["rounds"])]
        result["ratio"] = n["best_images_per_s"] / t["best_images_per_s"]
        result["median_ratio"] = n["median_images_per_s"] / t["median_images_per_s"]
    result["max_load"] = max(v for side in sides for pair in result[side]["loads"] for v in pair)
    return result


# ----- report -----


def fmt(value, spec=",.0f", none="-"):
    return none if value is None else format(value, spec)


def as_ratio(ratio):
    return "" if ratio is None else f"{ratio:.2f}x"


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def report(results):
    cfg = results["config"]
    lines = [
        "numpycnn bench: reference network (105,634 parameters), float32, Adam lr 1e-3, "
        f"'{NORMALIZATION}' normalisation, seed {cfg['seed']}",
        (
            f"numpycnn: {cfg['workers']} workers, this process and {cfg['workers'] - 1} "
            "helper process(es), one BLAS thread each "
            if cfg["workers"] > 1
            else "numpycnn: 1 worker, this process alone, on its BLAS threads "
        )
        + f"[default_workers: {cfg['default_workers']}]; {cfg['blas']}",
    ]
    if cfg["torch"]:
        t = cfg["torch_info"]
        lines.append(
            f"torch {t['torch']}: {t['threads']} intra-op threads, {t['interop_threads']} "
            f"inter-op (oneDNN {t['mkldnn']}); initial logits agree with numpycnn's to "
            f"{cfg['initial_logits_max_abs_diff']:.1e}"
        )
    else:
        lines.append(f"torch: {cfg['torch_note']}; numpycnn measured alone")
    lines.append(
        f"{cfg['cpus']} CPUs usable; each side in its own fresh processes, {cfg['rounds']} "
        "rounds alternating which goes first; a ratio is that of the two adjacent runs of "
        "the round least favourable to numpycnn"
    )
    load = results["load_average"]
    lines.append(
        f"load average (1 min) before {load['before']:.1f}, after {load['after']:.1f} "
        "(its own included)"
        + (": other processes were using the CPUs" if load["before"] >= 1 else "")
    )
    lines.extend(load_warning("bench", max(load["before"], load["after"])))
    lines.append("")
    w = 40
    head = f"{'':{w}} {'numpycnn':>10} {'torch':>10} {'ratio':>7}  target"
    for bs, train in results["train"].items():
        n, t = train["numpycnn"], train.get("torch", {})
        lines.append(f"training, batch {bs}: {train['images']:,} images per run")
        lines.append(head)
        tgt = f"<= {TRAIN_RATIO_MAX}x {verdict(train['pass'])}"
        rows = [
            ("epoch time (s), median of rounds", "median_seconds", ".2f", None, ""),
            ("epoch time ratio, worst round", None, "", train["ratio"], tgt),
            ("images/s", "images_per_s", ",.0f", None, ""),
            ("training accuracy over the run", "train_accuracy", ".2%", None, ""),
            ("test accuracy after it", "test_accuracy", ".2%", None, ""),
        ]
        for label, key, spec, ratio, tgt in rows:
            a, b = ("", "") if key is None else (fmt(n[key], spec), fmt(t.get(key), spec))
            lines.append(f"  {label:{w - 2}} {a:>10} {b:>10} {as_ratio(ratio):>7}  {tgt}".rstrip())
        if t:
            rounds = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(n["seconds"], t["seconds"]))
            lines.append(f"  {'rounds (numpycnn/torch s)':{w - 2}} {rounds}")
            lines.append(
                f"  {'  their ratios':{w - 2}} "
                + ", ".join(f"{r:.2f}x" for r in train["round_ratios"])
            )
        single = train.get("numpycnn-1")
        if single is not None:
            label = f"vs numpycnn --workers 1 ({single['median_seconds']:.2f} s), worst"
            lines.append(
                f"  {label:{w - 2}} {'':>10} {'':>10} {as_ratio(train['single_ratio']):>7}  "
                f"<= 1.0x {verdict(train['single_ratio'] <= 1.0)}"
            )
        lines.append("")
    inf = results["inference"]
    lines.append(
        f"inference, {cfg['infer_images']:,} test images (torch: batch {cfg['infer_batch']}; "
        "numpycnn: predict() on all, blocks of 32 shared among its workers), "
        f"{cfg['infer_reps']} runs in each of {cfg['predict_rounds']} processes per side, "
        "alternating"
    )
    lines.append(head)
    t = inf.get("torch", {})
    lines.append(
        f"  {'images/s, best run of any process':{w - 2}} "
        f"{fmt(inf['numpycnn']['best_images_per_s']):>10} "
        f"{fmt(t.get('best_images_per_s')):>10} "
        f"{as_ratio(inf['ratio']):>7}  >= {INFERENCE_RATIO_MIN}x {verdict(inf['pass'])}"
    )
    lines.append(
        f"  {'images/s, median of the processes':{w - 2}} "
        f"{fmt(inf['numpycnn']['median_images_per_s']):>10} "
        f"{fmt(t.get('median_images_per_s')):>10} {as_ratio(inf['median_ratio']):>7}"
    )
    for side in [s for s in SIDES if s in inf]:
        loads = ", ".join(f"{a:.2f}-{b:.2f}" for a, b in inf[side]["loads"])
        rates = ", ".join(f"{r:,.0f}" for r in inf[side]["rounds"])
        lines.append(f"  {side + ': process medians':{w - 2}} {rates}")
        lines.append(f"  {'  load around each':{w - 2}} {loads}")
    lines.extend(load_warning("prediction", inf["max_load"]))
    lines.append("")
    if results.get("time_to_accuracy") is not None:
        lines.extend(time_to_accuracy.report(results["time_to_accuracy"], LOAD_WARNING))
        lines.append("")
    mem = results["memory"]
    lines.append(
        f"peak memory, training at batch 32 on all 60,000 images ({mem['batches']} batches, in "
        "runs of their own): PSS summed over the process and its helpers, sampled every 0.2 s "
        "(MB = 10^6 bytes)"
    )
    lines.append(head)
    ratio = None if mem["torch_mb"] is None else mem["numpycnn_mb"] / mem["torch_mb"]
    lines.append(
        f"  {'all processes':{w - 2}} {mem['numpycnn_mb']:>10,.0f} {fmt(mem['torch_mb']):>10} "
        f"{as_ratio(ratio):>7}  < {MEMORY_MB_MAX:,.0f} MB {verdict(mem['pass'])}"
    )
    lines.append(
        f"  {'processes at the peak / in all':{w - 2}} "
        f"{mem['numpycnn_processes']:>5} / {mem['numpycnn_processes_seen']}"
    )
    lines.append("")
    lines.extend(layer_table(results["layers"]))
    plain = results.get("plain_torch")
    if plain is not None:
        lines.append("")
        lines.append(
            "check: a plain PyTorch process (no numpycnn, random images of MNIST's shape), "
            "same threads"
        )
        for label, key, bench in (
            ("prediction images/s", "predict_images_per_s", plain["bench_predict"]),
            (f"training images/s, batch 32 ({plain['steps']} steps)", "train_32_images_per_s",
             plain["bench_train_32"]),
        ):  # fmt: skip
            agree = abs(bench / plain[key] - 1) <= PLAIN_TOLERANCE
            lines.append(
                f"  {label:{w - 2}} plain {plain[key]:>9,.0f}, bench {bench:>9,.0f} "
                f"({bench / plain[key]:.2f}x) {'agrees' if agree else 'DISAGREES'}"
            )
    lines.append("")
    ref = results["reference"]
    lines.append(
        f"for scale, the 2018 reference's own code here: {REFERENCE_SECONDS_PER_IMAGE} s/image "
        f"= {ref['train_images_per_s']:.2f} images/s training, {REFERENCE_PREDICT_PER_S} "
        "images/s predicting;"
    )
    lines.append(
        f"numpycnn is {ref['numpycnn_train_speedup']:,.0f}x that training (batch 32) "
        f"and {ref['numpycnn_predict_speedup']:,.0f}x predicting"
    )
    return "\n".join(lines)


def load_warning(what, load):
    if load is None or load <= LOAD_WARNING:
        return []
    return [
        f"  WARNING: the load average reached {load:.2f} (> {LOAD_WARNING}) during the {what} "
        "runs: other processes were using the CPUs, so these figures are not a quiet machine's"
    ]


def layer_table(lay):
    share, steps = lay["share_images"], lay["steps"]
    step_ms = lay["step_ms"]
    lines = [
        f"where numpycnn's time goes at batch 32 (ms per step, mean of {steps} steps, one BLAS "
        f"thread): each of {lay['workers']} workers computes a share of {share} images",
        f"  {'':24} {'share fwd':>10} {'share bwd':>10} {'batch fwd':>10} {'batch bwd':>10}",
    ]
    s, b = lay["share"], lay["batch"]
    for i, name in enumerate(lay["layers"]):
        lines.append(
            f"  {name:24} {s['forward_ms'][i]:>10.3f} {s['backward_ms'][i]:>10.3f} "
            f"{b['forward_ms'][i]:>10.3f} {b['backward_ms'][i]:>10.3f}"
        )
    lines.append(f"  {'loss (both ways)':24} {s['loss_ms']:>10.3f} {'':>10} {b['loss_ms']:>10.3f}")
    lines.append(f"  {'compute, total':24} {s['compute_ms']:>21.3f} {b['compute_ms']:>21.3f}")
    lines.append(f"  {'optimiser (Adam, main)':24} {lay['optimizer_ms']:>21.3f}")
    lines.append(f"  {'gradient summation (main)':24} {lay['summation_ms']:>21.3f}")
    if step_ms is not None:
        sync = step_ms - s["compute_ms"] - lay["summation_ms"]
        lines.append(f"  {'pool step, wall (main)':24} {step_ms:>21.3f}")
        lines.append(
            f"  {'synchronisation + contention':24} {sync:>21.3f}   (pool step - share "
            "compute - summation)"
        )
    return lines


# ----- main -----


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Train and predict with numpycnn and PyTorch, each in its own processes, "
        "runs interleaved; print ratios against the targets."
    )
    p.add_argument(
        "--batches", type=int, default=None, help="train only N batches per run (a quick look)"
    )
    p.add_argument("--rounds", type=int, default=2, help="interleaved runs per side")
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[32, 128], help="training batch sizes"
    )
    p.add_argument("--infer-batch", type=int, default=1000, help="PyTorch's inference batch")
    p.add_argument("--infer-images", type=int, default=10000, help="test images for inference")
    p.add_argument("--infer-reps", type=int, default=7, help="inference runs per process")
    p.add_argument(
        "--predict-rounds", type=int, default=5, help="inference processes per side, alternating"
    )
    p.add_argument(
        "--tta-configs",
        nargs="*",
        default=list(time_to_accuracy.CONFIGS),
        help="configs timed to --tta-target test accuracy, two seeds each (none: skip)",
    )
    p.add_argument("--tta-target", type=float, default=0.99)
    p.add_argument("--tta-limit", type=int, default=None, help="train those on N images only")
    p.add_argument("--tta-epochs", type=int, default=None, help="and for N epochs only")
    p.add_argument(
        "--threads", type=int, default=None, help="PyTorch's threads (default: the usable CPUs)"
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="numpycnn's workers (default: its default_workers, at most --threads)",
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffle seed")
    p.add_argument(
        "--mnist",
        type=Path,
        default=None,
        help=f"folder of the four MNIST .gz files (default: ${MNIST_ENV}, else "
        "../shared/mnist beside the project, else data/mnist)",
    )
    p.add_argument("--skip-torch", action="store_true", help="measure numpycnn alone")
    p.add_argument("--json", type=Path, default=None, help="also write the figures as JSON")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    positive = ("batches", "rounds", "infer_batch", "infer_images", "infer_reps", "predict_rounds")
    for name in (*positive, "threads", "workers"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.mnist is None:
        args.mnist = default_mnist_dir()
    if args.threads is None:
        args.threads = usable_cpus()
    return args


def main(argv=None):
    """Run the benchmark; print the table and return the results dict."""
    args = parse_args(argv)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(CHILDREN[spec["task"]](spec)))
        return None
    if not (args.mnist / TRAIN_IMAGES).is_file():
        sys.exit(
            f"MNIST not found in {args.mnist}: pass --mnist DIR or set {MNIST_ENV} "
            "(`numpycnn download` fills data/mnist)"
        )
    from numpycnn.parallel import default_workers

    with_torch = not args.skip_torch and have_torch()
    if not args.skip_torch and not with_torch:
        log("torch is not installed: measuring numpycnn alone (make install-oracle)")
    sides = list(SIDES) if with_torch else ["numpycnn"]
    load_before = os.getloadavg()[0]

    def workers_for(batch_size):
        if args.workers is not None:
            return args.workers
        return min(default_workers(batch_size), args.threads)

    results = {"train": {}}
    for bs in args.batch_sizes:
        log(f"training at batch {bs}")
        train_sides = sides + (["numpycnn-1"] if workers_for(bs) > 1 else [])
        runs = measure("train", args, train_sides, workers_for(bs), batch_size=bs)
        train = train_summary(runs, train_sides)
        train["workers"] = workers_for(bs)
        train["pass"] = None if train["ratio"] is None else train["ratio"] <= TRAIN_RATIO_MAX
        results["train"][str(bs)] = train
    log("inference")
    workers = workers_for(32)
    runs = measure("predict", args, sides, workers)
    inference = predict_summary(runs, sides)
    inference["pass"] = (
        None if inference["ratio"] is None else inference["ratio"] >= INFERENCE_RATIO_MIN
    )
    results["inference"] = inference
    results["time_to_accuracy"] = None
    if args.tta_configs:
        log(f"time to {args.tta_target:.1%} test accuracy")
        results["time_to_accuracy"] = time_to_accuracy.bench_runs(
            args.tta_configs, args.mnist, args.tta_target, args.tta_limit, args.tta_epochs
        )
    first = next(iter(results["train"].values()))
    log("memory")
    batches = MEMORY_BATCHES if args.batches is None else min(args.batches, MEMORY_BATCHES)
    once = argparse.Namespace(**{**vars(args), "rounds": 1})
    mem = measure(
        "train", once, sides, workers_for(32), batch_size=32, batches=batches, memory=True
    )
    results["memory"] = {
        "batches": batches,
        "numpycnn_mb": mem["numpycnn"][0]["pss_peak_mb"],
        "numpycnn_processes": mem["numpycnn"][0]["pss_processes"],
        "numpycnn_processes_seen": mem["numpycnn"][0]["processes_seen"],
        "torch_mb": mem["torch"][0]["pss_peak_mb"] if "torch" in mem else None,
        "target_mb": MEMORY_MB_MAX,
    }
    results["memory"]["pass"] = results["memory"]["numpycnn_mb"] < MEMORY_MB_MAX
    log("per-layer times")
    results["layers"] = run_child(
        {
            "task": "layers",
            "side": "numpycnn",
            "mnist": str(args.mnist),
            "seed": args.seed,
            "threads": args.threads,
            "workers": workers,
            "batches": 200 if args.batches is None else args.batches,
            "infer_images": 1,
        }
    )
    if with_torch:
        log("plain PyTorch check")
        plain = run_plain_torch(args)
        plain["bench_predict"] = inference["torch"]["median_images_per_s"]
        plain["bench_train_32"] = results["train"].get("32", first)["torch"]["images_per_s"]
        results["plain_torch"] = plain
    torch_run = runs["torch"][0] if with_torch else {}
    results["config"] = {
        "seed": args.seed,
        "mnist": str(args.mnist),
        "cpus": usable_cpus(),
        "threads": args.threads,
        "workers": workers,
        "default_workers": default_workers(32),
        "rounds": args.rounds,
        "batches_limit": args.batches,
        "infer_images": args.infer_images,
        "infer_batch": args.infer_batch,
        "infer_reps": args.infer_reps,
        "predict_rounds": args.predict_rounds,
        "lr": LR,
        "blas": "numpy {numpy}, {blas}".format(**runs["numpycnn"][0]["blas"]),
        "torch": with_torch,
        "torch_note": None if with_torch else ("skipped (--skip-torch)" if args.skip_torch
                                               else "not installed"),
        "torch_info": torch_run.get("torch"),
        "initial_logits_max_abs_diff": torch_run.get("initial_logits_max_abs_diff"),
    }  # fmt: skip
    results["reference"] = {
        "train_seconds_per_image": REFERENCE_SECONDS_PER_IMAGE,
        "train_images_per_s": 1 / REFERENCE_SECONDS_PER_IMAGE,
        "predict_images_per_s": REFERENCE_PREDICT_PER_S,
        "numpycnn_train_speedup": first["numpycnn"]["images_per_s"] * REFERENCE_SECONDS_PER_IMAGE,
        "numpycnn_predict_speedup": inference["numpycnn"]["median_images_per_s"]
        / REFERENCE_PREDICT_PER_S,
    }
    results["load_average"] = {"before": load_before, "after": os.getloadavg()[0]}
    print(report(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
