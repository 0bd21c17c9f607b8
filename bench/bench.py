#!/usr/bin/env python3
"""numpycnn against PyTorch, side by side in one run (``make bench``).

Both train the reference network (SPEC.md) from the same initial parameters, in float32,
with Adam (lr 1e-3), on the same shuffled order of the 60,000 MNIST training images,
normalised with numpycnn's ``standard`` normalisation, on the same number of threads. The
epoch is cut into chunks of batches run alternately (numpycnn then PyTorch, then the other
way round) so that a slow spell of a shared machine hits both. Then inference throughput
on the test images, and the peak resident memory of each side in a fresh process.

Prints a table on stdout (progress goes to stderr); ``--json FILE`` writes the figures.
"""

import argparse
import ctypes
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from numpycnn.data import (
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    Normalization,
    read_idx,
)
from numpycnn.engine import reference_network
from numpycnn.engine.optim import Adam

ROOT = Path(__file__).resolve().parent.parent
MNIST_ENV = "NUMPYCNN_TEST_MNIST"
LR = 1e-3
NORMALIZATION = "standard"

#: The issue's targets: epoch time at batch 32 at most 1.5x PyTorch's, inference at least
#: half PyTorch's throughput, peak memory training on all of MNIST under 1 GB.
TRAIN_RATIO_MAX = 1.5
INFERENCE_RATIO_MIN = 0.5
MEMORY_MB_MAX = 1000.0

#: The 2018 reference's own code, measured on these machines (SPEC.md).
REFERENCE_SECONDS_PER_IMAGE = 0.160
REFERENCE_PREDICT_PER_S = 11.9


def log(message):
    print(message, file=sys.stderr, flush=True)


def default_mnist_dir():
    """``$NUMPYCNN_TEST_MNIST``, else ``../shared/mnist`` beside the project, else the
    project's download cache ``data/mnist``."""
    if os.environ.get(MNIST_ENV):
        return Path(os.environ[MNIST_ENV])
    shared = ROOT.parent / "shared" / "mnist"
    return shared if (shared / TRAIN_IMAGES).is_file() else ROOT / "data" / "mnist"


def load_split(mnist_dir, split):
    """uint8 images (N, 28, 28) and int64 labels of the ``train`` or ``test`` split."""
    images, labels = (
        (TRAIN_IMAGES, TRAIN_LABELS) if split == "train" else (TEST_IMAGES, TEST_LABELS)
    )
    return read_idx(mnist_dir / images), read_idx(mnist_dir / labels).astype(np.int64)


def peak_rss_mb():
    """This process's peak resident set size so far, in MB (10^6 bytes).

    Linux's VmHWM where there is one: a child's ``ru_maxrss`` starts from its parent's
    peak at the fork, which would hide the child's own.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak * (1 if sys.platform == "darwin" else 1024) / 1e6


# ----- threads -----


def _openblas():
    """The OpenBLAS library NumPy loaded and its symbol prefix/suffix, or None (e.g. if
    NumPy uses another BLAS, or this is not Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                if hasattr(lib, f"{prefix}_get_num_threads{suffix}"):
                    return lib, prefix, suffix
    return None


def numpy_threads(threads):
    """Set NumPy's OpenBLAS to ``threads`` threads when it can be reached; what it uses."""
    info = {"numpy": np.__version__, "blas": "unknown", "threads": None}
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = f"{blas['name']} {blas['version']}"
    except Exception:  # older NumPy: no dict mode; the thread count below still works
        pass
    found = _openblas()
    if found is not None:
        lib, prefix, suffix = found
        getattr(lib, f"{prefix}_set_num_threads{suffix}")(int(threads))
        info["threads"] = int(getattr(lib, f"{prefix}_get_num_threads{suffix}")())
    return info


def torch_threads(threads):
    """Set PyTorch to ``threads`` intra-op threads and one inter-op thread; what it uses."""
    import torch

    torch.set_num_threads(int(threads))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only settable once per process, before any parallel work
        pass
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "mkl": torch.backends.mkl.is_available(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count()


def have_torch():
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


# ----- the two contenders -----


class NumpycnnSide:
    """numpycnn's reference network and Adam, training and predicting as its users do."""

    name = "numpycnn"

    def __init__(self, params, x, y, threads=1):
        self.threads = threads
        self.model = reference_network()
        self.model.set_params(params)
        self.optimizer = Adam(lr=LR)
        self.x, self.y = x, y

    def train(self, batches):
        """Train on each index array of ``batches``; (seconds, correct predictions)."""
        model, opt, x, y, correct = self.model, self.optimizer, self.x, self.y, 0
        started = time.perf_counter()
        for idx in batches:
            correct += model.train_step(x[idx], y[idx], opt)[1]
        return time.perf_counter() - started, correct

    def predict(self, x, batch_size):
        # numpycnn's predict works through the images in cache-sized blocks of its own
        # choosing (32), shared among the benchmark's threads; the batch size asked of the
        # user-facing call is the whole set.
        return self.model.predict(x, threads=self.threads)

    def logits(self, x):
        return self.model.forward(x)


class TorchSide:
    """The same network in PyTorch, with numpycnn's initial parameters copied in."""

    name = "torch"

    def __init__(self, params, x, y):
        import torch
        from torch import nn

        self.torch = torch
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
        copy_params(params, self.net)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=LR)
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)

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


def copy_params(params, net):
    """numpycnn's parameters ``[f1, f2, w3, w4, b1, b2, b3, b4]`` into the torch network."""
    import torch

    layers = [m for m in net if isinstance(m, torch.nn.Conv2d | torch.nn.Linear)]
    weights, biases = params[: len(layers)], params[len(layers) :]
    with torch.no_grad():
        for layer, w, b in zip(layers, weights, biases, strict=True):
            layer.weight.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            layer.bias.copy_(torch.from_numpy(np.ascontiguousarray(b[:, 0])))


def make_sides(params, x, y, with_torch, threads=1):
    sides = [NumpycnnSide(params, x, y, threads)]
    if with_torch:
        sides.append(TorchSide(params, x, y))
    return sides


def interleaved(sides, k):
    """The sides in the order of round ``k``: alternately numpycnn first and torch first."""
    return sides if k % 2 == 0 else sides[::-1]


# ----- measurements -----


def epoch_batches(order, batch_size, limit=None):
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    return batches if limit is None else batches[:limit]


def bench_training(params, data, order, batch_size, args, with_torch):
    """One epoch (or ``--batches``) at ``batch_size``, chunk by chunk, sides alternating."""
    x, y, xt, yt = data["x"], data["y"], data["test_x"], data["test_y"]
    batches = epoch_batches(order, batch_size, args.batches)
    warm = make_sides(params, x, y, with_torch, args.threads)  # first calls pay one-off setup costs
    for side in warm:
        side.train(batches[:3])
    sides = make_sides(params, x, y, with_torch, args.threads)
    chunks = [c for c in np.array_split(np.arange(len(batches)), args.chunks) if len(c)]
    times = {s.name: [] for s in sides}
    rates = {s.name: [] for s in sides}
    correct = dict.fromkeys(times, 0)
    for k, chunk in enumerate(chunks):
        chunk_batches = [batches[i] for i in chunk]
        images = sum(len(b) for b in chunk_batches)
        for side in interleaved(sides, k):
            seconds, right = side.train(chunk_batches)
            times[side.name].append(seconds)
            rates[side.name].append(images / seconds)
            correct[side.name] += right
        log(
            f"  batch {batch_size}: chunk {k + 1}/{len(chunks)} "
            + ", ".join(f"{n} {t[-1]:.2f} s" for n, t in times.items())
        )
    images = sum(len(b) for b in batches)
    result = {"batch_size": batch_size, "batches": len(batches), "images": images}
    result["chunks"] = len(chunks)
    for side in sides:
        seconds = sum(times[side.name])
        result[side.name] = {
            "seconds": seconds,
            "images_per_s": images / seconds,
            "median_chunk_images_per_s": statistics.median(rates[side.name]),
            "chunk_seconds": times[side.name],
            "train_accuracy": correct[side.name] / images,
            "test_accuracy": float((side.predict(xt, args.infer_batch) == yt).mean()),
        }
    result["ratio"] = result["median_chunk_ratio"] = None
    if with_torch:
        result["ratio"] = result["numpycnn"]["seconds"] / result["torch"]["seconds"]
        # Each chunk's two runs are adjacent in time: the median of their ratios shrugs off
        # a slow spell that hit one chunk much more than the others.
        pairs = zip(times["numpycnn"], times["torch"])
        result["median_chunk_ratio"] = statistics.median(a / b for a, b in pairs)
    return result, sides


def bench_inference(sides, data, args):
    """Prediction throughput at ``--infer-batch``, ``--infer-reps`` rounds alternating."""
    x = data["test_x"]
    rates = {s.name: [] for s in sides}
    for side in sides:  # warm-up
        side.predict(x, args.infer_batch)
    for k in range(args.infer_reps):
        for side in interleaved(sides, k):
            started = time.perf_counter()
            side.predict(x, args.infer_batch)
            rates[side.name].append(len(x) / (time.perf_counter() - started))
    result = {"batch_size": args.infer_batch, "images": len(x), "repetitions": args.infer_reps}
    for side in sides:
        result[side.name] = {
            "median_images_per_s": statistics.median(rates[side.name]),
            "images_per_s": rates[side.name],
        }
    result["ratio"] = result["median_run_ratio"] = None
    if "torch" in result:
        result["ratio"] = (
            result["numpycnn"]["median_images_per_s"] / result["torch"]["median_images_per_s"]
        )
        pairs = zip(rates["numpycnn"], rates["torch"])  # adjacent in time, as in training
        result["median_run_ratio"] = statistics.median(a / b for a, b in pairs)
    return result


def memory_child(spec):
    """Run in a fresh process: load data, train or predict, report peak RSS as JSON."""
    side_name, task = spec["side"], spec["task"]
    if side_name == "torch":
        torch_threads(spec["threads"])
    else:
        numpy_threads(spec["threads"])
    imports_mb = peak_rss_mb()
    mnist_dir = Path(spec["mnist"])
    norm = Normalization.from_dict(spec["normalization"])
    images, labels = load_split(mnist_dir, "train" if task == "train" else "test")
    if task == "infer":
        images, labels = images[: spec["images"]], labels[: spec["images"]]
    x = norm.norm(images)
    data_mb = peak_rss_mb()
    params = reference_network(seed=spec["seed"]).get_params()
    if side_name == "torch":
        side = TorchSide(params, x, labels)
    else:  # predicting as in the timed runs, on the benchmark's threads
        side = NumpycnnSide(params, x, labels, spec["threads"])
    if task == "train":
        order = np.random.default_rng(spec["seed"]).permutation(len(x))
        side.train(epoch_batches(order, spec["batch_size"], spec["batches"]))
    else:
        side.predict(x, spec["batch_size"])
    print(json.dumps({"imports_mb": imports_mb, "data_mb": data_mb, "peak_mb": peak_rss_mb()}))


def measure_memory(spec):
    """Peak RSS of ``memory_child(spec)`` in a fresh interpreter."""
    env = dict(os.environ)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(spec["threads"])
    run = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(spec)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if run.returncode != 0:
        raise RuntimeError(f"memory measurement {spec} failed:\n{run.stderr}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def bench_memory(norm, args, with_torch):
    """Peak RSS of training at batch 32 on all the training images, and of inference."""
    base = {
        "mnist": str(args.mnist),
        "normalization": norm.to_dict(),
        "threads": args.threads,
        "seed": args.seed,
    }
    batches = (
        args.memory_batches if args.batches is None else min(args.memory_batches, args.batches)
    )
    tasks = {
        "train": {"task": "train", "batch_size": 32, "batches": batches},
        "infer": {"task": "infer", "batch_size": args.infer_batch, "images": args.infer_images},
    }
    sides = ["numpycnn", "torch"] if with_torch else ["numpycnn"]
    result = {}
    for key, task in tasks.items():
        result[key] = dict(task)
        for side in sides:
            log(f"  memory: {key}, {side}")
            result[key][side] = measure_memory({**base, **task, "side": side})
    return result


# ----- report -----


def fmt(value, spec=",.0f", none="-"):
    return none if value is None else format(value, spec)


def as_ratio(ratio):
    """A ratio as "1.23x", or nothing when there is none."""
    return "" if ratio is None else f"{ratio:.2f}x"


def verdict(ok):
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def report(results):
    """The results as a readable table."""
    cfg, th = results["config"], results["threads"]
    torch_on = cfg["torch"]
    lines = [
        "numpycnn bench: reference network (105,634 parameters), float32, Adam lr 1e-3, "
        f"'{NORMALIZATION}' normalisation, seed {cfg['seed']}",
        f"numpy {th['numpy']['numpy']}, {th['numpy']['blas']}, "
        f"BLAS threads: {fmt(th['numpy']['threads'], 'd', 'unknown')}",
    ]
    if torch_on:
        t = th["torch"]
        lines.append(
            f"torch {t['torch']}, threads: {t['threads']} intra-op, "
            f"{t['interop_threads']} inter-op (MKL {t['mkl']}, oneDNN {t['mkldnn']})"
        )
    else:
        lines.append(f"torch: {cfg['torch_note']}; numpycnn measured alone")
    lines.append(f"{th['cpus']} CPUs available; MNIST from {cfg['mnist']}")
    load = results["load_average"]
    if load["before"] is not None:
        lines.append(
            f"load average (1 min) before the run {load['before']:.1f}, after it "
            f"{load['after']:.1f} (its own included)"
            + (
                ": other processes were using the CPUs, timings may be unreliable"
                if load["before"] >= 1
                else ""
            )
        )
    if torch_on:
        lines.append(
            "same initial parameters in both: logits before training agree to "
            f"{cfg['initial_logits_max_abs_diff']:.1e}"
        )
    lines.append("")
    w = 40
    n_test = results["inference"]["images"]
    head = f"{'':{w}} {'numpycnn':>10} {'torch':>10} {'ratio':>7}  target"
    for bs_key, train in results["train"].items():
        np_, tr = train["numpycnn"], train.get("torch", {})
        lines.append(
            f"training, batch {bs_key}: {train['images']:,} images, {train['batches']:,} "
            f"batches in {train['chunks']} interleaved chunks"
        )
        lines.append(head)
        target = train.get("target")
        tgt = "" if target is None else f"<= {target}x {verdict(train.get('pass'))}"
        rows = [
            ("epoch time (s)", "seconds", ".2f", as_ratio(train["ratio"]), tgt),
            ("images/s over the epoch", "images_per_s", ",.0f", "", ""),
            ("median chunk images/s", "median_chunk_images_per_s", ",.0f", "", ""),
            ("time ratio, median over chunks", None, "", as_ratio(train["median_chunk_ratio"]), ""),
            ("training accuracy over the epoch", "train_accuracy", ".2%", "", ""),
            (f"test accuracy after it ({n_test:,} images)", "test_accuracy", ".2%", "", ""),
        ]
        for label, key, spec, ratio, tgt in rows:
            a, b = ("", "") if key is None else (fmt(np_[key], spec), fmt(tr.get(key), spec))
            lines.append(f"  {label:{w - 2}} {a:>10} {b:>10} {ratio:>7}  {tgt}".rstrip())
        lines.append("")
    inf = results["inference"]
    lines.append(
        f"inference, {inf['images']:,} test images (torch: batch {inf['batch_size']}; "
        f"numpycnn: predict() on all, in its own blocks of 32, on the same threads), median of "
        f"{inf['repetitions']} interleaved runs"
    )
    lines.append(head)
    ratio = as_ratio(inf["ratio"])
    lines.append(
        f"  {'images/s':{w - 2}} {fmt(inf['numpycnn']['median_images_per_s']):>10} "
        f"{fmt(inf.get('torch', {}).get('median_images_per_s')):>10} {ratio:>7}  "
        f">= {INFERENCE_RATIO_MIN}x {verdict(inf.get('pass'))}"
    )
    if inf["median_run_ratio"] is not None:
        label = "throughput ratio, median over runs"
        lines.append(f"  {label:{w - 2}} {'':>10} {'':>10} {as_ratio(inf['median_run_ratio']):>7}")
    lines.append("")
    mem = results["memory"]
    tr = mem["train"]
    lines.append(
        "peak memory (resident set of a fresh process: imports, data, model; MB = 10^6 bytes)"
    )
    lines.append(head)
    for label, key, tgt in (
        (f"training, batch 32, {tr['batches']} batches", "train", f"< {MEMORY_MB_MAX:,.0f} MB"),
        (f"inference, batch {mem['infer']['batch_size']}", "infer", ""),
    ):
        m = mem[key]
        n_mb, t_mb = m["numpycnn"]["peak_mb"], m.get("torch", {}).get("peak_mb")
        ratio = as_ratio(None if t_mb is None else n_mb / t_mb)
        tgt = f"{tgt} {verdict(mem['pass'])}" if tgt else ""
        lines.append(f"  {label:{w - 2}} {n_mb:>10,.0f} {fmt(t_mb):>10} {ratio:>7}  {tgt}".rstrip())
        lines.append(
            f"  {'  after imports / after data':{w - 2}} "
            f"{_split(m['numpycnn']):>10} {_split(m.get('torch')):>10}"
        )
    lines.append(
        "  (training loads and normalises all 60,000 images; its peak does not grow with the "
        "number of batches)"
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


def _split(m):
    return "-" if not m else f"{m['imports_mb']:.0f}/{m['data_mb']:.0f}"


# ----- main -----


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Train and predict with numpycnn and PyTorch side by side; print ratios."
    )
    p.add_argument(
        "--batches",
        type=int,
        default=None,
        help="train on only the first N batches of each epoch (a quick look)",
    )
    p.add_argument("--chunks", type=int, default=10, help="interleaved chunks per epoch")
    p.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[32, 128], help="training batch sizes"
    )
    p.add_argument("--infer-batch", type=int, default=1000, help="inference batch size")
    p.add_argument("--infer-images", type=int, default=10000, help="test images used for inference")
    p.add_argument("--infer-reps", type=int, default=7, help="inference repetitions per side")
    p.add_argument(
        "--memory-batches",
        type=int,
        default=200,
        help="batches trained by the memory measurement (at most --batches)",
    )
    p.add_argument("--threads", type=int, default=2, help="threads for both sides")
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
    p.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    positive = ("batches", "chunks", "infer_batch", "infer_images", "infer_reps", "memory_batches")
    for name in (*positive, "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.mnist is None:
        args.mnist = default_mnist_dir()
    return args


def main(argv=None):
    """Run the benchmark; print the table and return the results dict."""
    args = parse_args(argv)
    if args.memory_child:
        memory_child(json.loads(args.memory_child))
        return None
    if not (args.mnist / TRAIN_IMAGES).is_file():
        sys.exit(
            f"MNIST not found in {args.mnist}: pass --mnist DIR or set {MNIST_ENV} "
            "(`numpycnn download` fills data/mnist)"
        )
    with_torch = not args.skip_torch and have_torch()
    torch_note = "skipped (--skip-torch)" if args.skip_torch else "not installed"
    if not args.skip_torch and not with_torch:
        log("torch is not installed: measuring numpycnn alone (make install-oracle)")
    threads = {"numpy": numpy_threads(args.threads), "cpus": available_cpus()}
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if with_torch:
        threads["torch"] = torch_threads(args.threads)

    log(f"loading MNIST from {args.mnist}")
    train_images, train_labels = load_split(args.mnist, "train")
    test_images, test_labels = load_split(args.mnist, "test")
    norm = Normalization.fit(NORMALIZATION, train_images)
    data = {
        "x": norm.norm(train_images),
        "y": train_labels,
        "test_x": norm.norm(test_images[: args.infer_images]),
        "test_y": test_labels[: args.infer_images],
    }
    params = reference_network(seed=args.seed).get_params()
    order = np.random.default_rng(args.seed).permutation(len(data["x"]))

    results = {
        "config": {
            "seed": args.seed,
            "mnist": str(args.mnist),
            "torch": with_torch,
            "torch_note": None if with_torch else torch_note,
            "batches_limit": args.batches,
            "normalization": norm.to_dict(),
            "lr": LR,
        },
        "threads": threads,
    }
    if with_torch:  # the same network: the same outputs before any training
        sides = make_sides(params, data["x"], data["y"], True)
        probe = data["x"][order[:64]]
        diff = np.abs(sides[0].logits(probe) - sides[1].logits(probe)).max()
        results["config"]["initial_logits_max_abs_diff"] = float(diff)

    results["train"] = {}
    inference = None
    for bs in args.batch_sizes:
        log(f"training at batch {bs}")
        train, sides = bench_training(params, data, order, bs, args, with_torch)
        if bs == 32:
            train["target"] = TRAIN_RATIO_MAX
            train["pass"] = None if train["ratio"] is None else train["ratio"] <= TRAIN_RATIO_MAX
        results["train"][str(bs)] = train
        if inference is None:  # on the first trained models, batch 32's by default
            log("inference")
            inference = bench_inference(sides, data, args)
    inference["target"] = INFERENCE_RATIO_MIN
    inference["pass"] = (
        None if inference["ratio"] is None else inference["ratio"] >= INFERENCE_RATIO_MIN
    )
    results["inference"] = inference

    log("peak memory, one fresh process per measurement")
    memory = bench_memory(norm, args, with_torch)
    memory["target_mb"] = MEMORY_MB_MAX
    memory["pass"] = memory["train"]["numpycnn"]["peak_mb"] < MEMORY_MB_MAX
    results["memory"] = memory

    first = next(iter(results["train"].values()))
    results["reference"] = {
        "train_seconds_per_image": REFERENCE_SECONDS_PER_IMAGE,
        "train_images_per_s": 1 / REFERENCE_SECONDS_PER_IMAGE,
        "predict_images_per_s": REFERENCE_PREDICT_PER_S,
        "numpycnn_train_speedup": first["numpycnn"]["images_per_s"] * REFERENCE_SECONDS_PER_IMAGE,
        "numpycnn_predict_speedup": inference["numpycnn"]["median_images_per_s"]
        / REFERENCE_PREDICT_PER_S,
    }
    results["load_average"] = {
        "before": load_before,
        "after": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    print(report(results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        log(f"wrote {args.json}")
    return results


if __name__ == "__main__":
    main()
