"""Run folders: every training run keeps its settings, checkpoints and results together.

``runs/<name>/`` (``<name>-2``, ``<name>-3``, ... when taken) holds:

- ``config.yaml``: the resolved config, every key, overrides applied;
- ``last.pkl``: a checkpoint after every epoch (and where an interrupted run stopped);
- ``best.pkl``: the checkpoint of the epoch with the best validation accuracy so far;
- ``epoch-NNN.pkl``: a checkpoint per epoch, when ``output.save_epochs`` asks for them;
- ``results.csv``: one row per epoch (losses, accuracies, learning rate, time, speed);
- ``layers.csv``: per epoch and layer, the weight and gradient norms and dead ReLUs;
- ``results.png``: the curves, when matplotlib is installed;
- ``steps.csv``, ``status.json`` and ``snapshots/``: the per-batch log, the run's state and
  copies of its parameters at about 44 steps, written and read by ``numpycnn.runlog``.

A folder is claimed with an exclusive ``mkdir``, so two runs started at once never share
one, and a run holds an advisory lock on it while it trains, so a second process cannot
resume a run that is still going. Every file is written to a temporary name and renamed.
"""

import csv
import io
import os
from contextlib import contextmanager
from pathlib import Path

import yaml

from .modelfile import atomic_write

try:  # advisory locks where the platform has them (not on Windows)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None

CONFIG = "config.yaml"
LAST = "last.pkl"
BEST = "best.pkl"
RESULTS = "results.csv"
LAYERS = "layers.csv"
PLOT = "results.png"
LOCK = ".lock"
#: Written when a folder is claimed: what tells a run folder from any folder that happens to
#: hold a config.yaml, so that no user file is ever taken for a run's and overwritten.
MARKER = ".numpycnn-run"

RESULTS_COLUMNS = (
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "images_per_second",
)
LAYERS_COLUMNS = ("epoch", "layer", "weight_norm", "grad_norm", "dead_fraction")


class RunFolderError(ValueError):
    """A run folder that cannot be created, found or used."""


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return format(value, ".10g")
    return str(value)


def _row(entry, columns):
    return [_cell(entry.get(column)) for column in columns]


def _as_dict(stats):
    return stats if isinstance(stats, dict) else vars(stats)


class RunFolder:
    """One run's folder. Make one with ``create`` (a new run) or ``open`` (to resume)."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock_file = None

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    @classmethod
    def create(cls, runs_dir, name):
        """A new, empty folder ``runs_dir/name``, or ``name-2``, ``name-3``, ...: the first
        that does not exist yet, claimed atomically."""
        runs_dir = Path(runs_dir)
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise RunFolderError(f"{runs_dir}: cannot create: {exc.strerror or exc}") from None
        for n in range(1, 100_000):
            path = runs_dir / (name if n == 1 else f"{name}-{n}")
            try:
                path.mkdir()
            except FileExistsError:
                continue
            except OSError as exc:
                raise RunFolderError(f"{path}: cannot create: {exc.strerror or exc}") from None
            (path / MARKER).write_text("a numpycnn run folder\n")
            return cls(path)
        raise RunFolderError(f"{runs_dir}: no free run folder name for {name!r}")

    @classmethod
    def open(cls, path):
        """The existing run folder at ``path``; RunFolderError if it holds no run."""
        path = Path(path)
        if not (path / MARKER).is_file():
            raise RunFolderError(f"{path}: not a run folder of numpycnn train")
        return cls(path)

    @staticmethod
    def holding(checkpoint_path):
        """The run folder a checkpoint file lies in, or None."""
        parent = Path(checkpoint_path).parent
        return RunFolder(parent) if (parent / MARKER).is_file() else None

    def file(self, name):
        return self.path / name

    def epoch_file(self, epoch):
        return self.path / f"epoch-{epoch:03d}.pkl"

    @contextmanager
    def locked(self):
        """Hold this folder's advisory lock: RunFolderError if another process holds it."""
        if fcntl is None:  # pragma: no cover
            yield self
            return
        handle = open(self.path / LOCK, "a+")  # noqa: SIM115 (held for the block)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise RunFolderError(
                f"{self.path}: another training process is using this run folder"
            ) from None
        try:
            yield self
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
            handle.close()

    def _write_text(self, name, text):
        with atomic_write(self.path / name) as f:
            f.write(text.encode("utf-8"))

    def write_config(self, config_dict):
        """The resolved config, as YAML in the file schema."""
        self._write_text(CONFIG, yaml.safe_dump(config_dict, sort_keys=False))

    def write_results(self, history):
        """``results.csv`` and ``layers.csv`` from the run's epoch history (EpochStats or
        their dicts), rewritten whole: a resumed run's rows continue its own."""
        entries = [_as_dict(s) for s in history]
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(RESULTS_COLUMNS)
        writer.writerows(_row(e, RESULTS_COLUMNS) for e in entries)
        self._write_text(RESULTS, out.getvalue())

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(LAYERS_COLUMNS)
        for e in entries:
            for layer, figures in (e.get("layers") or {}).items():
                writer.writerow(
                    _row({"epoch": e["epoch"], "layer": layer, **figures}, LAYERS_COLUMNS)
                )
        self._write_text(LAYERS, out.getvalue())

    def write_plot(self, history):
        """``results.png`` (losses, accuracies, learning rate, gradient norms), if matplotlib
        is installed; returns its path, or None without matplotlib or history."""
        try:
            from matplotlib.figure import Figure
        except ImportError:
            return None
        entries = [_as_dict(s) for s in history]
        if not entries:
            return None
        epochs = [e["epoch"] for e in entries]

        def series(key):
            return [e.get(key) if e.get(key) is not None else float("nan") for e in entries]

        fig = Figure(figsize=(10, 6.5), layout="constrained")
        axes = fig.subplots(2, 2)
        for ax, keys, title in (
            (axes[0, 0], ("train_loss", "val_loss"), "loss"),
            (axes[0, 1], ("train_accuracy", "val_accuracy"), "accuracy"),
        ):
            for key in keys:
                ax.plot(epochs, series(key), marker="o", label=key.split("_")[0])
            ax.set_title(title)
            ax.legend()
        axes[1, 0].plot(epochs, series("lr"), marker="o")
        axes[1, 0].set_title("learning rate (last step of each epoch)")
        layers = sorted(
            {k for e in entries for k, v in (e.get("layers") or {}).items() if "grad_norm" in v}
        )
        for layer in layers:
            norms = [
                (e.get("layers") or {}).get(layer, {}).get("grad_norm", float("nan"))
                for e in entries
            ]
            axes[1, 1].plot(epochs, norms, marker="o", label=layer)
        axes[1, 1].set_yscale("log")
        axes[1, 1].set_title("gradient norm of each layer's weights")
        if layers:
            axes[1, 1].legend(fontsize="small")
        for ax in axes.flat:
            ax.set_xlabel("epoch")
            ax.grid(alpha=0.3)
        fig.suptitle(self.path.name)
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=100)
        with atomic_write(self.path / PLOT) as f:
            f.write(out.getvalue())
        return self.path / PLOT


def file_state(path):
    """What identifies the file at ``path`` now (None if there is none): to tell later
    whether another process replaced it."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)
