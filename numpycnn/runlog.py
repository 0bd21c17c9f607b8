"""Watching a run: its per-batch log, its parameter snapshots and its status, as files.

A run folder (``numpycnn.runs``) also holds, for a page that follows a training as it goes
or replays it afterwards:

- ``steps.csv``: one row per batch, appended and flushed as training goes: step (optimiser
  steps done, from 1), epoch and batch (from 1), the batch's loss, the running accuracy of
  the epoch so far, the step's learning rate and the seconds since training began
  (continued across a resume). CSV like ``results.csv``: about 50 bytes a row, readable
  by any spreadsheet, and a torn last line (a killed run) is told by its missing newline.
- ``snapshots/step-NNNNNNN.npz``: the flat parameters (the model's order and dtype) after
  step N, at about ``SNAPSHOT_TARGET`` steps spaced evenly on a log scale (``snapshot_steps``),
  every epoch's end among them; step 0 is the initialisation. Plain ``.npz`` (no pickle):
  ``params``, ``step``, ``epoch`` (epochs done, a fraction), ``seconds`` and the run's
  normalisation. Off with ``output.snapshots: false``.
- ``status.json``: running, finished, stopped (a clean interrupt: resume it) or failed,
  with the step, the epoch, the pid and its start time, refreshed about every second.

Every file is replaced by a rename or only appended to, so a reader never sees half of one.
The training loop never waits for the disk: it copies the parameters (one memcpy) and hands
them to one writer thread through a bounded queue; when the queue is full the new snapshot
is dropped (and counted in status.json), except the last step's.

The training side is ``Recorder`` (used by ``numpycnn.train``); the reading side, for a
server, is ``read_run``, ``list_snapshots`` and ``load_snapshot``.
"""

import contextlib
import csv
import io
import json
import math
import os
import queue
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import NamedTuple

import numpy as np
import yaml

from . import runs
from .procinfo import alive, start_time

STEPS = "steps.csv"
STATUS = "status.json"
SNAPSHOTS = "snapshots"
STEPS_COLUMNS = ("step", "epoch", "batch", "loss", "accuracy", "lr", "seconds")
#: Snapshots a run keeps: 44 of the default run's 105,634 float32 parameters are 18.7 MB.
SNAPSHOT_TARGET = 44
#: The log-spaced snapshots a run keeps however many epoch ends it has.
SNAPSHOT_MIN_LOG = 25
#: The most bytes of parameter copies waiting for the writer (at least two copies).
QUEUE_BYTES = 64 * 2**20
#: How often the writer refreshes status.json while training runs.
STATUS_SECONDS = 1.0
STATES = ("running", "finished", "stopped", "failed", "crashed", "unknown")
_SNAPSHOT = re.compile(r"step-(\d+)\.npz")


def snapshot_name(step):
    return f"step-{int(step):07d}.npz"


def snapshot_steps(total_steps, steps_per_epoch):
    """The steps (optimiser steps done, 0 = the initialisation) whose parameters a run of
    ``total_steps`` keeps: 0, every epoch's end and the last step, and steps spaced about
    evenly on a log scale (dense at the start, where the network changes fastest), about
    ``SNAPSHOT_TARGET`` in all; every step of a shorter run, and at least
    ``SNAPSHOT_MIN_LOG`` log-spaced ones besides the epoch ends of a run of many epochs."""
    total, per_epoch = int(total_steps), max(int(steps_per_epoch), 1)
    if total <= 0:
        return [0]
    ends = set(range(per_epoch, total, per_epoch))
    want = max(SNAPSHOT_TARGET - len(ends), SNAPSHOT_MIN_LOG)
    if total + 1 <= want:
        return list(range(total + 1))
    # n points from 1 to total, geometrically spaced, rounded: early ones coincide, so add
    # points until enough distinct steps remain
    for n in range(want, 4 * (total + 1)):
        steps = {0, total, *np.rint(np.geomspace(1, total, n - 1)).astype(int).tolist()}
        if len(steps) >= want:
            break
    return sorted(steps | ends)


def _replace(path, data):
    """Write ``data`` (bytes) to ``path`` through a temporary name and a rename, so a
    reader sees the old file or the new one, whole. Not synced to disk: these files serve
    a live view, and losing the last of them to a power cut loses nothing needed."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _rows(path):
    """The complete rows of a CSV file as dicts of strings (a torn last line, with no
    newline yet, is left out); [] if there is no such file."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    end = text.rfind("\n")
    if end < 0:
        return []
    return list(csv.DictReader(io.StringIO(text[: end + 1])))


def _number(text, kind=float):
    try:
        value = kind(text)
    except (TypeError, ValueError):
        return None
    return value if kind is int or math.isfinite(value) else None


def _steps_entry(row):
    """One steps.csv row (a dict of strings) as a dict of numbers; None if malformed."""
    step = _number(row.get("step"), int)
    if step is None:
        return None
    entry = {"step": step, "epoch": _number(row.get("epoch"), int)}
    entry["batch"] = _number(row.get("batch"), int)
    for key in ("loss", "accuracy", "lr", "seconds"):
        entry[key] = _number(row.get(key))
    return entry


def _steps_rows(path):
    """steps.csv's complete, well-formed rows, as dicts of numbers."""
    return [e for e in map(_steps_entry, _rows(path)) if e is not None]


class StepsReader:
    """steps.csv read as it grows: each ``read()`` parses only the complete lines added
    since the last call, so that a reader polling a long run (the inspector, once a
    second) reads each line once; it starts over when the file is replaced or shrinks
    (a resumed run rewrites it). ``rows``: every row read so far, as ``read_run`` gives
    them."""

    def __init__(self, path):
        self.path, self.rows = Path(path), []
        self._offset, self._header, self._file = 0, None, None

    def read(self):
        """The rows (all of them); those a failed read could not add are left for later."""
        try:
            with open(self.path, "rb") as f:
                st = os.fstat(f.fileno())
                if (st.st_ino, st.st_dev) != self._file or st.st_size < self._offset:
                    self.rows, self._offset, self._header = [], 0, None
                    self._file = (st.st_ino, st.st_dev)
                f.seek(self._offset)
                data = f.read()
        except OSError:
            return self.rows
        end = data.rfind(b"\n")
        if end < 0:
            return self.rows
        self._offset += end + 1
        lines = data[: end + 1].decode("utf-8", errors="replace").splitlines()
        if self._header is None:
            self._header, lines = next(csv.reader(lines[:1])), lines[1:]
        for row in csv.DictReader(lines, fieldnames=self._header):
            entry = _steps_entry(row)
            if entry is not None:
                self.rows.append(entry)
        return self.rows


class Recorder:
    """Writes a training run's ``steps.csv``, ``snapshots/`` and ``status.json`` as it
    trains. Use it as a context manager around the training; ``on_batch`` follows every
    batch (as ``Trainer.run`` calls it) and ``end(state)`` says how the run ended, before
    the block closes; an exception leaving the block records "failed" (or "stopped" for a
    KeyboardInterrupt). A run resumed in its folder keeps its log and snapshots up to the
    step it resumes from and drops what came later; one resumed from another folder's
    checkpoint (``source``) starts with that folder's log and snapshots up to that step."""

    def __init__(
        self, folder, trainer, normalization, snapshots=True, source=None, class_names=None
    ):
        self.path, self.trainer = Path(folder), trainer
        self.class_names = None if class_names is None else [str(n) for n in class_names]
        self.per_epoch, self.total = trainer.batches_per_epoch, trainer.total_steps
        self.first = trainer.epoch * self.per_epoch + trainer.batch  # the step resumed from
        self.planned = set(snapshot_steps(self.total, self.per_epoch)) if snapshots else set()
        self.normalization = normalization.to_dict()
        self.source = None if source is None or Path(source) == self.path else Path(source)
        nbytes = trainer.model.flat_params.nbytes
        self._queue = queue.Queue(maxsize=max(2, QUEUE_BYTES // max(nbytes, 1)))
        self._thread = None
        self._log = None
        self._step = self.first
        self._offset = 0.0
        self._state, self._error = "running", None
        self.dropped = 0
        self.started = time.time()

    # ----- setting up -----

    def __enter__(self):
        if self.planned:
            (self.path / SNAPSHOTS).mkdir(exist_ok=True)
        self._offset = self._keep_log_until(self.first)
        self._keep_snapshots_until(self.first)
        self._clock = time.perf_counter()
        self._log = open(self.path / STEPS, "a", encoding="utf-8", newline="")  # noqa: SIM115
        if self._log.tell() == 0:
            self._log.write(",".join(STEPS_COLUMNS) + "\n")
            self._log.flush()
        self._write_status()
        self._thread = threading.Thread(target=self._writer, name="numpycnn-snapshots")
        self._thread.daemon = True  # never keeps a stopped command alive
        self._thread.start()
        if self.first == 0 and 0 in self.planned:
            self._offer(0, _copy(self.trainer.model), 0.0)
        return self

    def _keep_log_until(self, step):
        """Leave in steps.csv the rows up to ``step`` only (the ones this run continues:
        this folder's, or ``source``'s for a branched run); the seconds of the last kept."""
        origin = self.path / STEPS if self.source is None else self.source / STEPS
        rows = [r for r in _steps_rows(origin) if r["step"] <= step] if step > 0 else []
        if origin == self.path / STEPS and not origin.exists():
            return 0.0
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(STEPS_COLUMNS)
        writer.writerows(_log_row(r) for r in rows)
        _replace(self.path / STEPS, text.getvalue().encode("utf-8"))
        return (rows[-1]["seconds"] or 0.0) if rows else 0.0

    def _keep_snapshots_until(self, step):
        """Remove this folder's snapshots after ``step`` (and temporary files a killed writer
        left); a branched run links (or copies) ``source``'s up to ``step``."""
        here = self.path / SNAPSHOTS
        for path in here.iterdir() if here.is_dir() else ():
            match = _SNAPSHOT.fullmatch(path.name)
            if (match and int(match[1]) > step) or path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
        if self.source is None or not self.planned:
            return
        for snap in list_snapshots(self.source):
            if snap.step <= step:
                with contextlib.suppress(OSError):
                    try:
                        os.link(snap.path, here / snap.path.name)
                    except OSError:
                        shutil.copyfile(snap.path, here / snap.path.name)

    # ----- during training -----

    def on_batch(self, trainer, loss, accuracy):
        """Log the batch just done; hand its parameters to the writer at a snapshot step."""
        step = trainer.epoch * self.per_epoch + trainer.batch
        seconds = self._offset + time.perf_counter() - self._clock
        if self._log is not None:
            try:
                self._log.write(
                    f"{step},{trainer.epoch + 1},{trainer.batch},{_cell(loss)},"
                    f"{_cell(accuracy)},{_cell(trainer.optimizer.lr)},{seconds:.3f}\n"
                )
                self._log.flush()
            except OSError:  # a full disk ends the log, not the run (checkpoints say more)
                self._close_log()
        self._step = step
        if step in self.planned:
            self._offer(step, _copy(trainer.model), seconds)

    def _close_log(self):
        log, self._log = self._log, None
        if log is not None:
            with contextlib.suppress(OSError):
                log.close()

    def _offer(self, step, params, seconds):
        item = (step, params, seconds)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if step == self.total:  # the run is over: its last snapshot waits for room
                self._queue.put(item)
            else:
                self.dropped += 1

    def _writer(self):
        """The writer thread: snapshots as they come, status.json about every second."""
        refreshed = time.monotonic()
        while True:
            try:
                item = self._queue.get(timeout=STATUS_SECONDS)
            except queue.Empty:
                item = ()
            if item is None:
                return
            with contextlib.suppress(Exception):  # a full disk costs a snapshot, not the run
                if item:
                    self._write_snapshot(*item)
                if time.monotonic() - refreshed >= STATUS_SECONDS:
                    self._write_status()
                    refreshed = time.monotonic()

    def chain(self, on_batch=None):
        """``on_batch`` preceded by this recorder's: what ``Trainer.run`` is given."""
        if on_batch is None:
            return self.on_batch

        def both(trainer, loss, accuracy):
            self.on_batch(trainer, loss, accuracy)
            on_batch(trainer, loss, accuracy)

        return both

    def _write_snapshot(self, step, values, seconds):
        out = io.BytesIO()
        norm = self.normalization
        params, state = values
        np.savez(
            out,
            params=params,
            **({"state": state} if state.size else {}),
            step=np.int64(step),
            epoch=np.float64(step / self.per_epoch),
            seconds=np.float64(seconds),
            # [mean, std], or [means..., stds...] for per-channel statistics
            normalization=np.hstack([norm["mean"], norm["std"]]).astype(np.float64),
            strategy=np.array(norm["strategy"]),
            # the data's class names (a str array: no pickle), for a page on a running run
            **({"class_names": np.array(self.class_names)} if self.class_names else {}),
        )
        _replace(self.path / SNAPSHOTS / snapshot_name(step), out.getvalue())

    def _write_status(self):
        step = self._step
        status = {
            "state": self._state,
            "error": self._error,
            "step": step,
            "epoch": step // self.per_epoch,
            "total_steps": self.total,
            "steps_per_epoch": self.per_epoch,
            "epochs": self.trainer.epochs,
            "snapshots": bool(self.planned),
            "snapshots_dropped": self.dropped,
            "pid": os.getpid(),
            "pid_start": start_time(os.getpid()),
            "started": self.started,
            "updated": time.time(),
        }
        _replace(self.path / STATUS, (json.dumps(status, indent=1) + "\n").encode("utf-8"))

    # ----- the end -----

    def end(self, state, error=None):
        """Say how the run ended: "finished", "stopped" or "failed" (with ``error``)."""
        self._state, self._error = state, error

    def __exit__(self, kind, exc, tb):
        if kind is not None and self._state == "running":
            stopped = issubclass(kind, KeyboardInterrupt)
            self.end("stopped" if stopped else "failed", None if stopped else str(exc))
        wait = 60.0 if kind is None else 10.0  # for the snapshots queued, then no longer
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=wait)  # after the queued snapshots: written first
        self._thread.join(wait)
        self._close_log()
        with contextlib.suppress(OSError):
            self._write_status()
        return False


def _cell(value):
    return format(float(value), ".9g")


def _log_row(row):
    return [
        row["step"],
        row["epoch"],
        row["batch"],
        *(_cell(row[k]) if row[k] is not None else "" for k in ("loss", "accuracy", "lr")),
        "" if row["seconds"] is None else f"{row['seconds']:.3f}",
    ]


# ----- reading -----


class Snapshot(NamedTuple):
    """One snapshot: after ``step`` optimiser steps, ``epoch`` epochs (a fraction) and
    ``time`` seconds of the run; its file is ``path``."""

    step: int
    epoch: float
    time: float
    path: Path


def read_status(folder):
    """status.json as a dict, or None when the folder has none (a run of an earlier
    version) or it cannot be read."""
    try:
        status = json.loads((Path(folder) / STATUS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _state(folder, status, per_epoch):
    """The run's state: status.json's, but "crashed" for a run whose status says running
    while its process is gone; for a folder without status.json, "finished" when
    results.csv holds every planned epoch, else "unknown"."""
    if status is None:
        try:
            config = yaml.safe_load((Path(folder) / runs.CONFIG).read_text(encoding="utf-8"))
            planned = int(config["training"]["epochs"])
        except (OSError, ValueError, TypeError, KeyError, yaml.YAMLError):
            return "unknown"
        return "finished" if per_epoch and len(per_epoch) >= planned else "unknown"
    state = status.get("state")
    if state == "running" and not alive(status.get("pid"), status.get("pid_start")):
        return "crashed"
    return state if state in STATES else "unknown"


def _columns(rows, keys):
    return {key: [row.get(key) for row in rows] for key in keys}


def read_run(folder, since=None, steps=None):
    """What a run folder says of its run, as plain (JSON-ready) data.

    ``state``: running, finished, stopped (interrupted cleanly: resume it), failed (with
    ``error``), crashed (its status says running but the process is gone: killed) or
    unknown; ``step`` (the last logged), ``total_steps``, ``steps_per_epoch``, ``epochs``,
    ``pid``, ``updated`` (from status.json; None for a folder without one);
    ``per_batch``: steps.csv's columns (``since``: only the steps after that one);
    ``per_epoch``: results.csv's columns. Files being written are read safely: a torn last
    line is left out. ``steps``: a ``StepsReader`` of the folder's steps.csv, for a caller
    that polls (only new lines are parsed). RunFolderError if ``folder`` is not a run folder.
    """
    folder = runs.RunFolder.open(folder).path
    status = read_status(folder)
    batches = _steps_rows(folder / STEPS) if steps is None else steps.read()
    if since is not None:
        batches = [r for r in batches if r["step"] > since]
    epochs = []
    for row in _rows(folder / runs.RESULTS):
        entry = {k: _number(row.get(k)) for k in runs.RESULTS_COLUMNS}
        entry["epoch"] = _number(row.get("epoch"), int)
        epochs.append(entry)
    status_ = status or {}
    step = status_.get("step")
    if batches:
        step = max(batches[-1]["step"], step or 0)
    return {
        "name": folder.name,
        "state": _state(folder, status, epochs),
        "error": status_.get("error"),
        "step": step,
        "total_steps": status_.get("total_steps"),
        "steps_per_epoch": status_.get("steps_per_epoch"),
        "epochs": status_.get("epochs"),
        "snapshots_dropped": status_.get("snapshots_dropped", 0),
        "pid": status_.get("pid"),
        "updated": status_.get("updated"),
        "per_batch": _columns(batches, STEPS_COLUMNS),
        "per_epoch": _columns(epochs, runs.RESULTS_COLUMNS),
    }


def _copy(model):
    """The parameters and the state (batch norm's running statistics) to snapshot."""
    return model.flat_params.copy(), model.flat_state.copy()


def _open_snapshot(path):
    """The arrays of a snapshot file (a dict), read without pickle."""
    with np.load(path, allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


def list_snapshots(folder, known=None):
    """The folder's snapshots, by step: [Snapshot(step, epoch, time, path)]; [] when it has
    none. A file that cannot be read is left out. ``known``: a dict of file name ->
    Snapshot from earlier calls, whose files are not opened again (a snapshot never
    changes once renamed into place); the new ones are added to it."""
    here = Path(folder) / SNAPSHOTS
    try:
        names = sorted(p.name for p in here.iterdir() if _SNAPSHOT.fullmatch(p.name))
    except OSError:
        return []
    out = []
    known = {} if known is None else known
    for name in names:
        if name in known:
            out.append(known[name])
            continue
        try:
            with np.load(here / name, allow_pickle=False) as npz:
                step, epoch, seconds = int(npz["step"]), float(npz["epoch"]), float(npz["seconds"])
        except (OSError, ValueError, KeyError, EOFError):
            continue
        known[name] = Snapshot(step, epoch, seconds, here / name)
        out.append(known[name])
    return sorted(out)


def snapshot_normalization(arrays):
    """The ``Normalization`` a snapshot's arrays record: its strategy and [mean, std], or
    [means..., stds...] per channel. ValueError or KeyError when they are not there."""
    from .data import Normalization

    values = [float(v) for v in arrays["normalization"]]
    half = len(values) // 2
    mean, std = values[:half], values[half:]
    if half == 1:
        mean, std = mean[0], std[0]
    return Normalization(str(arrays["strategy"]), mean, std)


def load_snapshot(folder, step):
    """The model (a ``numpycnn.Model``: its ``network`` is the engine's Sequential) with
    the parameters of the snapshot at ``step``, built from the run's config.yaml.
    RunFolderError naming the file when there is no such snapshot or it cannot be used."""
    from .api import Model  # the API imports this module
    from .config import Config, ConfigError
    from .engine import Sequential

    folder = Path(folder)
    path = folder / SNAPSHOTS / snapshot_name(step)
    try:
        arrays = _open_snapshot(path)
        params = arrays["params"]
        norm = snapshot_normalization(arrays)
    except FileNotFoundError:
        raise runs.RunFolderError(f"{path}: no snapshot at step {step}") from None
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise runs.RunFolderError(f"{path}: cannot read the snapshot: {exc}") from None
    source = folder / runs.CONFIG
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
        config = Config.from_dict(raw, source=str(source))
    except (OSError, yaml.YAMLError) as exc:
        raise runs.RunFolderError(f"{source}: cannot read: {exc}") from None
    except ConfigError as exc:
        raise runs.RunFolderError(str(exc)) from None
    t = config.training
    network = Sequential(
        config.network, loss=t.loss, init=t.init, dtype=t.dtype, seed=t.seed,
        input_shape=config.data.shape,
    )  # fmt: skip
    if params.shape != network.flat_params.shape:
        raise runs.RunFolderError(
            f"{path}: {params.size:,} parameters, but the run's network has {network.num_params:,}"
        )
    network.flat_params[...] = params
    state = arrays.get("state")
    if state is not None and state.shape == network.flat_state.shape:
        network.flat_state[...] = state  # batch norm's running statistics at that step
    names = snapshot_class_names(arrays, network.output_shape[-1])
    return Model(network, norm, config=raw, class_names=names)


def snapshot_class_names(arrays, count):
    """The class names a snapshot records (None for one written before they were, or
    whose names do not fit the network's ``count`` class scores)."""
    names = arrays.get("class_names")
    if names is None or names.dtype.kind != "U" or names.shape != (count,):
        return None
    return [str(n) for n in names]
