"""The model zoo: train every network in configs/ on MNIST and write the results table.

Each config is trained through the library exactly as ``numpycnn train`` trains it (config,
data split, normalisation fitted on the training images, Trainer, then ``evaluate`` on the
10,000 test images), but nothing is saved: no model file, no checkpoints. A config whose
settings equal an earlier one's (escontrela.ini, the INI twin of escontrela.yaml) is not
trained twice. The Markdown table goes to stdout and, for a full run, to docs/zoo.md.

    python scripts/zoo.py                                  # everything (make zoo)
    python scripts/zoo.py --only murugan --epochs 1 --limit 5000   # a quick look
"""

import argparse
import os
import platform
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np

from numpycnn import datasets
from numpycnn.config import EXTENSIONS, ConfigError, load_config
from numpycnn.data import DataError, resolve_data_dir, resolve_mirrors
from numpycnn.training import Diverged, evaluate, prepare

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
TABLE = ROOT / "docs" / "zoo.md"
#: The shared MNIST folder beside the project, used as the mirror when it exists.
SHARED_MIRROR = ROOT.parent / "shared" / "mnist"

#: Environment variables that set the BLAS thread count, reported with the figures.
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")

#: Per config (file stem): the paper it comes from, and what that paper shows with it.
PAPERS = {
    "escontrela": (
        "Escontrela 2018 (seed 001), the reference",
        "The forward and backward equations of dense, convolution and max-pool layers, why a "
        "CNN's convolution is really a cross-correlation, and this very network coded from "
        "scratch in NumPy, trained one image at a time for hours.",
    ),
    "best": (
        "numpycnn's most accurate recipe for the reference network",
        "Not a paper: the reference's layers and 105,634 parameters, trained longer on "
        "randomly shifted, rotated and scaled digits with a one-cycle learning rate.",
    ),
    "default": (
        "numpycnn's recipe for the reference network",
        "Not a paper: the reference's layers with standardised pixels, He initialisation and "
        "Adam on a one-cycle learning rate, for comparison with the faithful reproduction.",
    ),
    "lenet-average": (
        "LeNet appendix A.3 (seed 003)",
        "Backpropagation through conv and average-pool layers reduces to correlating the "
        "error with the kernels and up-sampling it, with sigmoids and a squared-error loss "
        "throughout.",
    ),
    "murugan": (
        "Murugan (seed 000)",
        "The chain rule from a per-class sigmoid cross-entropy back through several ReLU "
        "dense layers, one max pool and one convolution, updated by plain gradient descent.",
    ),
    "rasheed-sigmoid": (
        "Rasheed et al., section 4.2, first network (seed 002)",
        "Every derivative of conv, ReLU, max pool, dense and sigmoid output under binary "
        "cross-entropy, with max pooling's gradient as a 0/1 mask on each window's maximum.",
    ),
    "rasheed-softmax": (
        "Rasheed et al., section 4.2, Table 6 (seed 002)",
        "The same derivatives stacked through two conv-pool stages, where softmax with "
        "categorical cross-entropy gives the simple output gradient A - Y.",
    ),
    "slides-cnn": (
        "CNN slides (seed 004, in Persian)",
        "The delta recursion of backpropagation, delta = (next delta W^T) times the "
        "activation's derivative, vectorised for a conv-pool-conv-pool-dense-softmax network.",
    ),
}


def config_files(only=()):
    """The config files to train, sorted; ``only`` names files or stems to keep."""
    # By name, each YAML before its INI twin, so that the YAML file is the one trained.
    files = sorted(
        (p for p in CONFIGS.iterdir() if p.suffix.lower() in EXTENSIONS),
        key=lambda p: (p.stem, p.suffix.lower() == ".ini", p.suffix),
    )
    if only:
        wanted = set(only)
        files = [p for p in files if p.name in wanted or p.stem in wanted]
        found = {p.name for p in files} | {p.stem for p in files}
        missing = sorted(wanted - found)
        if missing:
            raise SystemExit(f"zoo: no config named {', '.join(missing)} in {CONFIGS}")
    return files


def train(config, mnist, log):
    """Train ``config`` as ``numpycnn train`` does; a dict of the figures for the table."""
    run = prepare(config, mnist)
    model, trainer, norm = run.model, run.trainer, run.normalization

    def on_epoch(trainer, stats):
        val = "" if stats.val_accuracy is None else f", val acc {100 * stats.val_accuracy:.2f}%"
        log(
            f"  epoch {stats.epoch}/{trainer.epochs}: loss {stats.train_loss:.4f}, "
            f"train acc {100 * stats.train_accuracy:.2f}%{val}, {stats.seconds:.0f} s"
        )

    row = {"params": model.num_params, "epochs": trainer.epochs, "images": len(trainer.y)}
    started = time.perf_counter()
    try:
        trainer.run(on_epoch=on_epoch)
    except Diverged as exc:
        row.update(seconds=time.perf_counter() - started, accuracy=None, note=str(exc))
        return row
    row["seconds"] = time.perf_counter() - started
    row["accuracy"] = evaluate(model, norm.norm(mnist.test_images), mnist.test_labels)["accuracy"]
    return row


def layers_text(config):
    """The network in one line, e.g. 'conv 6 5x5, sigmoid, avgpool 2/2, ...'."""
    parts = []
    for spec in config.network:
        kind = spec["type"]
        if kind == "conv2d":
            k = spec["kernel"]
            pad = f" pad {spec['padding']}" if spec["padding"] else ""
            stride = f" stride {spec['stride']}" if spec["stride"] != 1 else ""
            parts.append(f"conv {spec['filters']} {k}x{k}{pad}{stride}")
        elif kind in ("maxpool2d", "avgpool2d"):
            parts.append(f"{kind[:-2]} {spec['size']}/{spec['stride']}")
        elif kind == "dense":
            parts.append(f"dense {spec['units']}")
        elif kind != "flatten":
            parts.append(kind)
    return ", ".join(parts)


def recipe_text(config):
    t, opt, a = config.training, config.training.optimizer, config.data.augment
    if t.schedule.name != "exponential":
        decay = f" ({t.schedule.name} schedule)"
    else:
        decay = f" (x{t.lr_decay:g} per epoch)" if t.lr_decay != 1 else ""
    moves = ""
    if a is not None:
        moves = f", augmented (shift {a.shift:g} px, rotate {a.rotate:g} deg, scale {a.scale:g})"
    return (
        f"{t.loss}, init {t.init}, {opt.name} lr {opt.hyperparameters['lr']:g}{decay}, "
        f"batch {t.batch_size}, {config.data.normalization} pixels{moves}"
    )


def seconds(value):
    return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"


def table(results):
    """The Markdown table and, below it, each network's layers and recipe."""
    lines = [
        "| config | paper | parameters | epochs | training images | wall time | "
        "test accuracy | what the paper shows |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        paper, shows = PAPERS.get(r["path"].stem, ("", ""))
        if r.get("twin"):
            lines.append(
                f"| `{r['path'].name}` | {paper} | | | | | | same settings as "
                f"`{r['twin']}`: not trained again |"
            )
            continue
        accuracy = "diverged" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%"
        lines.append(
            f"| `{r['path'].name}` | {paper} | {r['params']:,} | {r['epochs']} | "
            f"{r['images']:,} | {seconds(r['seconds'])} | {accuracy} | {shows} |"
        )
    lines += ["", "Networks and recipes:", ""]
    for r in results:
        if not r.get("twin"):
            lines.append(
                f"- `{r['path'].name}`: {layers_text(r['config'])}; {recipe_text(r['config'])}."
            )
    return "\n".join(lines)


def document(body, total, argv):
    """docs/zoo.md: how the table was made, then the table."""
    command = " ".join(["python scripts/zoo.py", *map(shlex.quote, argv)])
    how = f"`{command}`" + ("" if argv else " (`make zoo`)")
    threads = [f"{k}={os.environ[k]}" for k in BLAS_THREADS if k in os.environ]
    setting = f" with {', '.join(threads)}" if threads else ""
    return (
        "# Model zoo: every network in configs/, trained on MNIST\n\n"
        f"Produced by {how}{setting} on {date.today().isoformat()}: "
        f"{os.cpu_count()} CPU cores, Python {platform.python_version()}, "
        f"NumPy {np.__version__}, {total / 60:.1f} min in all. Wall time is the training "
        "alone, on a machine shared with other jobs, so it is noisy; test accuracy is on the "
        "10,000 MNIST test images. Each config's header comment says what its paper "
        "specifies, what was chosen where the paper leaves it open, and why.\n\n"
        f"{body}\n"
    )


def positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME",
        help="train only this config (file name or stem); repeatable",
    )
    parser.add_argument("--epochs", type=positive, help="override every config's epochs")
    parser.add_argument(
        "--limit", type=positive, help="override every config's number of training images"
    )
    parser.add_argument(
        "--mirror",
        action="append",
        default=[],
        metavar="URL",
        help="MNIST mirror (URL or "
        "directory); repeatable; default ../shared/mnist beside the project when it exists",
    )
    parser.add_argument("--data-dir", help="MNIST download cache (default: the project's data/)")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the table (default: docs/zoo.md, and only "
        "for a full run: a quick look with --only/--epochs/--limit just prints it)",
    )
    return parser.parse_args(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        run(args, argv)
    except (ConfigError, DataError) as exc:
        raise SystemExit(f"zoo: {exc}") from None


def run(args, argv):
    quick = bool(args.only or args.epochs or args.limit)
    output = args.output or (None if quick else TABLE)
    default_mirrors = [str(SHARED_MIRROR)] if SHARED_MIRROR.is_dir() else []
    mnist = datasets.load(
        "mnist",
        resolve_data_dir(args.data_dir, ROOT / "data"),
        resolve_mirrors(args.mirror, default_mirrors),
    )

    def log(message):
        print(message, file=sys.stderr, flush=True)

    results, seen = [], []
    started = time.perf_counter()
    for path in config_files(args.only):
        config = load_config(path).with_overrides(epochs=args.epochs, limit=args.limit)
        if config.data.dataset != "mnist":  # the zoo is MNIST's; the others' recipes apart
            log(f"{path.name}: trains on {config.data.dataset}, not MNIST: not in the zoo")
            continue
        twin = next((p for p, c in seen if c == config), None)
        if twin is not None:
            log(f"{path.name}: same settings as {twin.name}, not trained again")
            results.append({"path": path, "twin": twin.name})
            continue
        seen.append((path, config))
        log(f"{path.name}: {layers_text(config)}")
        row = train(config, mnist, log)
        accuracy = "diverged" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%"
        log(f"{path.name}: test accuracy {accuracy} after {row['seconds']:.0f} s")
        results.append({"path": path, "config": config, **row})
    body = table(results)
    print(body)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(document(body, time.perf_counter() - started, argv), "utf-8")
        log(f"wrote {output}")


if __name__ == "__main__":
    main()
