"""The Python face of numpycnn: ``train`` a network from a config, ``load`` a model file.

``numpycnn train`` is a thin shell over ``train``: the same run folder, checkpoints, results
and model file come out of either. Nothing here prints; progress reaches the caller through
``Callbacks``.

    import numpycnn
    result = numpycnn.train("default", epochs=1)   # a built-in config, or a file's path
    model = numpycnn.load("default.pkl")
    model.predict(["seven.png"])            # -> array([7])
    model.predict_names(["seven.png"])      # -> ['7'] (a folder's model: its class names)
"""

import math
import os
import tempfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from . import modelinput, parallel, runlog, runs
from .allocator import keep_freed_blocks
from .config import DEFAULT_RECIPE, Config, find_config, load_config
from .data import DEFAULT_MIRRORS, Normalization, resolve_data_dir, resolve_mirrors
from .datasource import check_same_data, load_data
from .engine import Sequential
from .modelfile import (
    MNIST_SOURCE,
    ModelFileError,
    default_class_names,
    load_model,
    save_model,
)
from .training import EpochStats, Trainer, evaluate, prepare

#: The run folder's name, and the model file's (NAME.pkl), when nothing names the run.
DEFAULT_NAME = "train"

#: Settings a resumed run takes from its checkpoint, never from the caller.
FIXED_ON_RESUME = ("batch_size", "lr", "seed", "limit", "name", "runs_dir")


@dataclass
class Callbacks:
    """What ``train`` reports as it goes; every field is optional.

    ``on_start(start)`` once training is set up (a ``Start``); ``on_batch(trainer, loss,
    running_accuracy)`` after every batch; ``on_epoch(trainer, stats, folder)`` after every
    epoch, once its checkpoint is written; ``should_stop()`` is asked between batches and
    stops the run cleanly (checkpoint saved) when true; ``download_progress`` is a
    tqdm-like factory for the data set's download (bytes), ``decode_progress`` one for
    decoding a folder of images (images); ``on_warning(text)`` gets each warning of the
    data (images skipped, a cache not written): the library never prints, so a caller
    that sets none sees none.
    """

    on_start: Callable | None = None
    on_batch: Callable | None = None
    on_epoch: Callable | None = None
    should_stop: Callable | None = None
    download_progress: Callable | None = None
    decode_progress: Callable | None = None
    on_warning: Callable | None = None


@dataclass
class Start:
    """What ``train`` tells ``on_start``: the run folder, the run's size, its workers."""

    folder: runs.RunFolder
    config: Config
    trainer: Trainer
    resumed_from: Path | None
    workers: int = 1


@dataclass
class TrainResult:
    """What ``train`` returns. ``finished`` is False when ``should_stop`` ended the run
    early: then ``checkpoint`` (the run folder's last.pkl) continues it and there is no
    test score. ``params`` is where the final model was saved, or None when it was not
    (interrupted, or ``params_skipped`` says why)."""

    model: Sequential
    normalization: Normalization
    history: list
    folder: runs.RunFolder
    config: Config
    finished: bool
    checkpoint: Path
    params: Path | None = None
    metrics: dict | None = None
    params_skipped: str | None = None


def resolve_config(config=None, **overrides):
    """The Config that ``train`` would use: a file path or a built-in config's name (a
    file of that name wins), a Config or None (the default recipe), with the given
    overrides applied (None keeps a setting). A file's run name defaults to the file's
    name without its extension, the default recipe's to "default"; the model file
    (``output.params``) to NAME.pkl after the run's name, so that ``best`` writes best.pkl
    and never replaces default.pkl (``train`` follows the run folder it claims: a second
    ``best`` run, in runs/best-2, writes best-2.pkl)."""
    return _resolve(config, **overrides)[0]


def _resolve(config=None, **overrides):
    """``resolve_config``'s Config, and whether its model file is the default NAME.pkl."""
    if config is None:
        config = DEFAULT_RECIPE.with_overrides(name="default")
    elif isinstance(config, (str, os.PathLike)):
        path = find_config(config)
        config = load_config(path)
        if config.output.name is None:
            config = config.with_overrides(name=Path(path).stem)
    elif not isinstance(config, Config):
        raise TypeError(f"config must be a path, a Config or None, got {type(config).__name__}")
    config = config.with_overrides(**overrides)
    defaulted = config.output.params is None
    if defaulted:
        config = config.with_overrides(params=f"{config.output.name or DEFAULT_NAME}.pkl")
    return config, defaulted


def _resume_point(resume):
    """(checkpoint path, the run folder to continue in or None) for ``resume``: a run
    folder (its last.pkl) or a checkpoint file. Only the folder's own last.pkl continues in
    that folder; an earlier checkpoint (best.pkl, epoch-002.pkl, a file from elsewhere)
    starts a new folder, so the later history it would overwrite is kept."""
    resume = Path(resume)
    if resume.is_dir():
        folder = runs.RunFolder.open(resume)
        return folder.file(runs.LAST), folder
    folder = runs.RunFolder.holding(resume)
    if folder is not None and resume.name == runs.LAST:
        return resume, folder
    return resume, None


def train(
    config=None,
    *,
    resume=None,
    callbacks=None,
    threads=1,
    workers=None,
    epochs=None,
    batch_size=None,
    lr=None,
    seed=None,
    limit=None,
    out=None,
    data_dir=None,
    mirrors=None,
    name=None,
    runs_dir=None,
):
    """Train a network as ``numpycnn train`` does, and return a ``TrainResult``.

    ``config``: a YAML/INI path, a built-in config's name (``"best"``; a file of that name
    wins), a ``Config`` or None (the default recipe). The keyword
    settings override the config's (``out`` is ``output.params``; ``data_dir`` and
    ``mirrors`` also override the environment). ``resume``: a run folder or a checkpoint
    to continue exactly, with its own settings (only ``epochs``, ``out``, ``data_dir``
    and ``mirrors`` may change). ``workers``: processes that share each batch
    (``numpycnn.parallel``; default ``parallel.default_workers(batch_size)``, 1 trains in
    this process); the same seed and worker count give bit-identical results, other
    counts differ only in the order the share gradients are summed. ``threads`` share the
    test-set predictions when training in one process.

    Raises the C library's malloc thresholds for this process, as the commands do, so that
    each step reuses the memory of the last (``numpycnn.allocator``), and computes on one
    BLAS thread per process (``parallel.one_blas_thread``).

    Writes the run folder (``numpycnn.runs``) and, when the run finishes, the model file at
    ``output.params``, unless another process replaced that file during the run: then it is
    left alone and ``params_skipped`` says so (the run folder's last.pkl holds the model).
    A folder of ``output.params`` that cannot be written is refused before training; if the
    model cannot be written at the end (a full disk), the ``ModelFileError`` names last.pkl.
    Raises ``training.Diverged`` if the loss stops being finite (the run folder's last.pkl
    holds the last completed epoch, if one completed), ``ConfigError``, ``ModelFileError``,
    ``DataError``, ``RunFolderError`` or ``ValueError`` for bad input.
    """
    keep_freed_blocks()  # every step's temporaries are reused, not faulted in again
    cb = callbacks or Callbacks()
    overrides = {
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "limit": limit,
        "params": None if out is None else os.fspath(out),
        "name": name,
        "runs_dir": None if runs_dir is None else os.fspath(runs_dir),
    }
    with ExitStack() as hold:
        checkpoint = folder = resumed_from = None
        if resume is not None:
            given = [k for k in FIXED_ON_RESUME if overrides[k] is not None]
            if config is not None or given:
                what = ", ".join(["config", *given] if config is not None else given)
                raise ValueError(
                    f"a resumed run keeps its own settings: {what} cannot be given with "
                    "resume (only epochs, out, data_dir and mirrors can)"
                )
            path, folder = _resume_point(resume)
            if folder is not None:  # resuming in place: refuse at once if that run is going,
                hold.enter_context(folder.locked())  # and read its checkpoint under the lock
            checkpoint = load_model(path)
            if checkpoint.checkpoint is None or checkpoint.config is None:
                raise ValueError(f"{path}: a trained model, not a training checkpoint")
            resumed_from = path
            config = Config.from_dict(checkpoint.config, source=str(path))
            _check_epochs_on_resume(config, checkpoint.checkpoint, epochs, path)
        config, default_params = _resolve(config, **overrides)
        data_dir = resolve_data_dir(data_dir, config.data.data_dir)
        mirrors = resolve_mirrors(mirrors or (), config.data.mirrors)
        # config.yaml records where the data came from, whatever chose it (the option, the
        # environment or the file); no mirrors means the public ones
        recorded = [] if mirrors == list(DEFAULT_MIRRORS) else list(mirrors)
        config = config.with_overrides(data_dir=os.fspath(data_dir), mirrors=recorded)
        _check_writable(Path(config.output.params))

        ds = load_data(
            config.data.source(config.training.seed), data_dir, mirrors,
            cb.download_progress, cb.decode_progress, cb.on_warning,
        )  # fmt: skip
        if checkpoint is not None:
            check_same_data(checkpoint.data_source, ds.source, path)
        run = prepare(config, ds, checkpoint)
        if folder is None:  # a new run claims its folder once its setup has succeeded
            name = config.output.name or DEFAULT_NAME
            folder = runs.RunFolder.create(config.output.runs_dir, name)
            hold.enter_context(folder.locked())
            if default_params and folder.path.name != name:  # runs/NAME-2 saves NAME-2.pkl,
                params = Path(config.output.params)  # never over the first run's model
                config = config.with_overrides(params=os.fspath(params.with_stem(folder.path.name)))
        if workers is None:
            workers = parallel.default_workers(config.training.batch_size)
        hold.enter_context(parallel.one_blas_thread())  # in this process too: see its doc
        pool = None
        if int(workers) > 1:
            t = run.trainer
            pool = hold.enter_context(
                parallel.WorkerPool(
                    run.model,
                    t.x,
                    t.y,
                    workers=int(workers),
                    augment=t.augment,
                    normalize=t.normalize,
                )  # fmt: skip
            )
            t.use_pool(pool)
        # steps.csv, snapshots/ and status.json, for a page that follows or replays the run
        source = resumed_from and runs.RunFolder.holding(resumed_from)
        with runlog.Recorder(
            folder.path, run.trainer, run.normalization, config.output.snapshots,
            source=source and source.path, class_names=ds.class_names,
        ) as recorder:  # fmt: skip
            cb = replace(cb, on_batch=recorder.chain(cb.on_batch))
            result = _train(run, ds, config, folder, resumed_from, cb, threads, pool)
            recorder.end("finished" if result.finished else "stopped")
        return result


#: Formats only ``numpycnn export`` writes: a model saved under such a name would be a pickle.
EXPORT_ONLY = (".onnx", ".pt", ".pth")


def _check_writable(params):
    """Refuse at once, not after the training, a model path whose folder is absent or cannot
    be written (read-only, full): a byte is written to a temporary file there, flushed to
    disk and removed."""
    if params.suffix.lower() in EXPORT_ONLY:
        raise ValueError(
            f"{params}: train writes numpycnn model files (.pkl or .safetensors); "
            f"save one, then convert it with numpycnn export MODEL {params.name}"
        )
    if not params.parent.is_dir():
        raise ValueError(f"{params}: cannot save the model there: no folder {params.parent}")
    try:
        with tempfile.NamedTemporaryFile(
            dir=params.parent, prefix=f".{params.name}.", suffix=".write-check"
        ) as probe:
            probe.write(b"\0")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as exc:
        raise ValueError(f"{params}: cannot save the model there: {exc.strerror or exc}") from None


def _check_epochs_on_resume(config, state, epochs, path):
    """Refuse an ``epochs`` that would make the resumed run differ from the one it continues:
    fewer than it has trained, or another length under a schedule that depends on it."""
    if epochs is None:
        return
    done, planned = int(state["epoch"]), config.training.epochs
    if epochs < done:
        raise ValueError(
            f"{path}: the run has trained {done} epochs already; epochs {epochs} is fewer"
        )
    schedule = config.training.schedule.name
    if epochs != planned and schedule != "exponential":
        raise ValueError(
            f"{path}: the {schedule} schedule's rates depend on the run's length, so epochs "
            f"cannot change on resume ({planned} planned); start a new run to train longer"
        )


def _train(run, ds, config, folder, resumed_from, cb, threads, pool):
    """The training run proper, in its locked run folder."""
    model, trainer, norm = run.model, run.trainer, run.normalization
    folder.write_config(config.to_dict())
    folder.write_results(trainer.history)  # a resumed run's rows so far, in a new folder too
    params_path = Path(config.output.params)
    params_before = runs.file_state(params_path)
    # best.pkl: the best epoch this folder holds a checkpoint of. A folder that continues
    # its own run knows its best so far; a new folder (a new run, or one branched from an
    # earlier checkpoint) starts afresh, so its first validated epoch writes best.pkl.
    best = -math.inf
    if folder.file(runs.BEST).exists():
        best = max(
            (s.val_accuracy for s in trainer.history if s.val_accuracy is not None),
            default=-math.inf,
        )

    def save(path, **extra):
        history = [asdict(s) for s in trainer.history]
        save_model(
            path, model, norm, trainer.cost, config.to_dict(), history=history,
            data_source=ds.source, class_names=ds.class_names, **extra,
        )  # fmt: skip
        return path

    def save_checkpoint(path, **extra):
        return save(path, checkpoint=trainer.state_dict(), **extra)

    def on_epoch(t, stats):
        nonlocal best
        save_checkpoint(folder.file(runs.LAST))
        if stats.val_accuracy is not None and stats.val_accuracy > best:
            best = stats.val_accuracy
            save_checkpoint(folder.file(runs.BEST))
        if config.output.save_epochs:
            save_checkpoint(folder.epoch_file(stats.epoch))
        folder.write_results(t.history)
        folder.write_plot(t.history)
        if cb.on_epoch is not None:
            cb.on_epoch(t, stats, folder)

    if cb.on_start is not None:
        cb.on_start(
            Start(folder, config, trainer, resumed_from, 1 if pool is None else pool.workers)
        )
    finished = trainer.run(cb.on_batch, on_epoch, cb.should_stop)
    last = folder.file(runs.LAST)
    result = TrainResult(model, norm, list(trainer.history), folder, config, finished, last)
    if not finished:
        save_checkpoint(last)
        return result

    test = evaluate(
        model,
        norm.norm(ds.test_images),
        ds.test_labels,
        classes=ds.num_classes,
        threads=threads,
        pool=pool,
        class_names=ds.class_names,
    )
    final = trainer.history[-1] if trainer.history else None
    result.metrics = {
        "test_accuracy": test["accuracy"],
        "test_correct": test["correct"],
        "test_total": test["total"],
        "val_accuracy": None if final is None else final.val_accuracy,
        "train_loss": None if final is None else final.train_loss,
        "seconds": sum(s.seconds for s in trainer.history),
        "epochs": trainer.epoch,
        "workers": 1 if pool is None else pool.workers,
    }
    save_checkpoint(last, metrics=result.metrics)
    if runs.file_state(params_path) != params_before:
        result.params_skipped = (
            f"{params_path} was replaced by another process during this run, so it was "
            f"left alone; this run's model is {last}"
        )
    else:
        try:
            result.params = save(params_path, metrics=result.metrics)
        except ModelFileError as exc:  # say, the disk filled up during the run
            raise ModelFileError(f"{exc}; this run's model is in {last}") from None
    return result


class Model:
    """A trained network ready to classify: the engine's ``Sequential`` with the
    normalisation of its training images. ``load`` makes one from a model file;
    ``history`` is its per-epoch figures as plain dicts (``EpochStats`` fields)."""

    def __init__(
        self,
        network,
        normalization,
        history=(),
        metrics=None,
        config=None,
        class_names=None,
        data_source=None,
    ):
        self.network = network
        outputs = int(network.output_shape[-1])
        self.class_names = list(class_names or default_class_names(outputs))
        self.data_source = dict(data_source or MNIST_SOURCE)
        self.normalization = normalization
        self.history = [asdict(h) if isinstance(h, EpochStats) else dict(h) for h in history]
        self.metrics, self.config = metrics, config

    def __repr__(self):
        return (
            f"Model({len(self.network.layers)} layers, {self.network.num_params:,} parameters, "
            f"{self.normalization.strategy} normalization)"
        )

    def _inputs(self, images):
        """Normalised network input from image files or raw pixel arrays."""
        pixels = modelinput.prepare(images, self.data_source, self.network.input_shape)
        return self.normalization.norm(pixels)

    def predict_proba(self, images, threads=1):
        """Class probabilities (N, classes) for ``images``: a file path or a list of them
        (any image ``numpycnn predict`` takes, prepared as the model's training data was:
        ``numpycnn.modelinput``), or pixel arrays valued 0-255: (N, C, H, W), or (N, H, W)
        and (H, W) for a grey model (an MNIST model's as in MNIST, light digit on dark)."""
        return self.network.predict_proba(self._inputs(images), threads=threads)

    def predict(self, images, threads=1):
        """The most likely class of each image, as its index (see ``predict_proba``);
        ``class_names[i]`` names class i, and ``predict_names`` gives the names at once.

        It returns indices, not names, so that code written for MNIST models, which
        compares the result with digits or uses it as an index, keeps working unchanged
        (for MNIST the names are the digits' strings, "7" rather than 7)."""
        return self.predict_proba(images, threads=threads).argmax(axis=1)

    def predict_names(self, images, threads=1):
        """The name of the most likely class of each image (a list of str), from the
        class names recorded in the model file: a folder's class folders, Fashion-MNIST's
        "Sneaker", MNIST's "7"."""
        return [self.class_names[k] for k in self.predict(images, threads=threads)]


def load(path):
    """The ``Model`` in a model file written by ``train`` (or a 2018 reference pickle)."""
    saved = load_model(path)
    return Model(
        saved.model,
        Normalization.from_dict(saved.normalization),
        history=saved.history,
        metrics=saved.metrics,
        config=saved.config,
        class_names=saved.class_names,
        data_source=saved.data_source,
    )
