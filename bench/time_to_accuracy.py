"""Time to accuracy: train a config as ``numpycnn train`` does (same data split, worker
pool and trainer) and record, after every epoch, the training seconds of the epoch line,
the validation scoring that follows it, the validation accuracy and, outside the timed
part, the test accuracy; with the machine's load average around each run.

    python bench/time_to_accuracy.py CONFIG... [--seeds 0 1] [--workers N] [--target 0.99]
        [--limit N] [--epochs N] [--mnist DIR] [--json]

The time to the target is the seconds (training plus validation) up to the end of the
first epoch whose test accuracy reaches it. Used by ``bench.py`` for fast.yaml and
default.yaml, and to search for fast.yaml (choosing by validation accuracy, never by the
test accuracy this also prints).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from numpycnn import data, datasets, parallel
from numpycnn.allocator import keep_freed_blocks
from numpycnn.config import load_config
from numpycnn.training import evaluate, prepare

#: What ``make bench`` times to 99%: the speed-run recipe and the default one.
CONFIGS = ("fast", "default")
SEEDS = (0, 1)


def read_mnist(mnist_dir=None):
    """MNIST as a ``datasets.Dataset``, from a folder of the four .gz files or from
    numpycnn's data directory."""
    if mnist_dir is None:
        return datasets.load("mnist", data.resolve_data_dir())
    folder = Path(mnist_dir)
    names = (data.TRAIN_IMAGES, data.TRAIN_LABELS, data.TEST_IMAGES, data.TEST_LABELS)
    images, labels, test_images, test_labels = [data.read_idx(folder / n) for n in names]
    return datasets.Dataset(
        name="mnist",
        train_images=images[:, None],
        train_labels=labels.astype(np.int64),
        test_images=test_images[:, None],
        test_labels=test_labels.astype(np.int64),
        class_names=[str(digit) for digit in range(10)],
        source={"dataset": "mnist"},
    )


def loadavg():
    """The 1-minute load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def run(config_path, seed, workers=None, limit=None, epochs=None, mnist_dir=None):
    """One training run; returns {config, seed, workers, load_before, load_after, epochs:
    [{epoch, train_seconds, validation_seconds, seconds, val_accuracy, test_accuracy}]},
    ``seconds`` being the cumulative training plus validation time."""
    config = load_config(config_path)
    t = config.training
    overrides = {"seed": seed}
    if limit is not None:
        overrides["limit"] = limit
    if epochs is not None:
        overrides["epochs"] = epochs
    config = config.with_overrides(**overrides)
    mnist = read_mnist(mnist_dir)
    keep_freed_blocks()
    r = prepare(config, mnist)
    workers = parallel.default_workers(t.batch_size) if workers is None else workers
    test_x = r.normalization.norm(mnist.test_images)
    rows, marks = [], {}

    def on_batch(trainer, loss, accuracy):
        if trainer.batch == trainer.batches_per_epoch:
            marks["trained"] = time.perf_counter()

    def on_epoch(trainer, stats):
        validation = time.perf_counter() - marks["trained"]
        cpu = time.process_time() - marks["cpu"]  # this process's so far, tests excluded
        test = evaluate(r.model, test_x, mnist.test_labels, threads=1)["accuracy"]
        marks["cpu"] += time.process_time() - marks["cpu"] - cpu
        total = (rows[-1]["seconds"] if rows else 0.0) + stats.seconds + validation
        rows.append(
            {
                "epoch": stats.epoch,
                "train_seconds": stats.seconds,
                "validation_seconds": validation,
                "seconds": total,
                # CPU seconds of this process (training and validation): with 1 worker,
                # about what the run takes on a quiet core, whatever the load
                "cpu_seconds": cpu,
                "val_accuracy": stats.val_accuracy,
                "test_accuracy": test,
                "load": loadavg(),
            }
        )

    before = loadavg()
    marks["cpu"] = time.process_time()
    with parallel.one_blas_thread():
        if workers > 1:
            t = r.trainer  # uint8 images, normalised a share at a time, as train does
            with parallel.WorkerPool(
                r.model, t.x, t.y, workers=workers, augment=t.augment, normalize=t.normalize
            ) as pool:
                r.trainer.use_pool(pool)
                r.trainer.run(on_batch=on_batch, on_epoch=on_epoch)
        else:
            r.trainer.run(on_batch=on_batch, on_epoch=on_epoch)
    return {
        "config": str(config_path),
        "seed": seed,
        "workers": workers,
        "load_before": before,
        "load_after": loadavg(),
        "epochs": rows,
    }


def time_to(result, target):
    """Seconds (training plus validation) to the first epoch at ``target`` test accuracy,
    or None if no epoch reached it."""
    for row in result["epochs"]:
        if row["test_accuracy"] >= target:
            return row["seconds"]
    return None


def describe(result, target):
    last = result["epochs"][-1]
    reached = time_to(result, target)
    when = "not reached" if reached is None else f"{reached:.1f} s"
    return (
        f"{os.path.basename(result['config'])} seed {result['seed']} ({result['workers']} "
        f"workers): {len(result['epochs'])} epochs {last['seconds']:.1f} s (CPU "
        f"{last['cpu_seconds']:.1f} s of this process; validation "
        f"{sum(r['validation_seconds'] for r in result['epochs']):.1f} s), val "
        f"{last['val_accuracy']:.2%}, test {last['test_accuracy']:.2%}; {target:.1%} test: "
        f"{when}; load {result['load_before']:.2f} -> {result['load_after']:.2f}"
    )


def bench_runs(configs, mnist_dir, target=0.99, limit=None, epochs=None):
    """``make bench``'s part: every config with seeds 0 and 1, each run in a fresh process
    (with the default workers), one after the other; {config: [result, ...]}."""
    out = {}
    for name in configs:
        for seed in SEEDS:
            command = [sys.executable, __file__, name, "--seeds", str(seed), "--json"]
            command += ["--target", str(target), "--mnist", str(mnist_dir)]
            command += [] if limit is None else ["--limit", str(limit)]
            command += [] if epochs is None else ["--epochs", str(epochs)]
            run_ = subprocess.run(command, capture_output=True, text=True, check=False)
            if run_.returncode != 0:
                raise RuntimeError(f"time to accuracy of {name} failed:\n{run_.stderr}")
            result = json.loads(run_.stdout.strip().splitlines()[-1])
            result["seconds_to_target"] = time_to(result, target)
            out.setdefault(name, []).append(result)
    return {"target": target, "limit": limit, "epochs": epochs, "runs": out}


def report(results, load_warning=0.5):
    """The bench's lines for ``bench_runs`` output."""
    target = results["target"]
    lines = [
        f"time to {target:.1%} test accuracy (training plus validation seconds of the epoch "
        "lines up to the first epoch at the target; test accuracy measured after each epoch, "
        "untimed), default workers"
        + (f"; on {results['limit']:,} images" if results["limit"] else "")
        + (f", {results['epochs']} epoch(s)" if results["epochs"] else "")
    ]
    for name, runs in results["runs"].items():
        for r in runs:
            lines.append("  " + describe(r, target))
        reached = [r["seconds_to_target"] for r in runs if r["seconds_to_target"] is not None]
        summary = (
            f"best {min(reached):.1f} s, median {statistics.median(reached):.1f} s"
            if len(reached) == len(runs)
            else f"{len(runs) - len(reached)} of {len(runs)} runs never reached it"
        )
        lines.append(f"  {name}: {summary}")
    loads = [v for runs in results["runs"].values() for r in runs
             for v in (r["load_before"], r["load_after"]) if v is not None]  # fmt: skip
    if loads and max(loads) > load_warning:
        lines.append(
            f"  WARNING: the load average reached {max(loads):.2f} (> {load_warning}) during "
            "these runs: other processes were using the CPUs, so these times are inflated"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("configs", nargs="+")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--target", type=float, default=0.99)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--mnist", default=None, help="folder of the four MNIST .gz files")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    for path in args.configs:
        for seed in args.seeds:
            result = run(path, seed, args.workers, args.limit, args.epochs, args.mnist)
            print(json.dumps(result) if args.json else describe(result, args.target), flush=True)
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main())
