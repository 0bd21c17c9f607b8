"""A run folder behind the inspector: its state as it trains, its snapshots, and an
``Inspector`` for any of them.

``RunView.open(folder, ...)`` loads the run's latest snapshot (or ``last.pkl`` for a run
of an earlier version, which has none) as the base ``Inspector``; ``inspector(step)``
answers with a snapshot's parameters, loaded once and kept in a small LRU cache. Only the
folder is read: the model file ``numpycnn train`` saves is never touched. A folder that
disappears while served, or a training killed mid-run, never raises from ``state`` or
``snapshots``: they answer with what was last known and say what happened.
"""

import os
import threading
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from .. import runlog, runs
from ..config import Config, ConfigError
from ..engine import Sequential
from ..modelfile import ModelFile, ModelFileError, load_model
from .compute import InspectionError, Inspector

__all__ = ["CACHE", "RunView"]

#: Snapshots whose parameters (as Inspectors) are kept loaded at once.
CACHE = 8
#: The timeline keeps every snapshot's parameters in memory up to this many bytes (the
#: default run's 44 take 18.7 MB); past it, they are read again on each request.
TIMELINE_BYTES = 256 * 2**20
#: The states a page shows as running, finished or failed.
FAILED = ("failed", "crashed")


class RunView:
    """A run folder being inspected: ``base`` (an Inspector of the latest snapshot, or of
    last.pkl), ``state(since)``, ``snapshots()`` and ``inspector(step)``."""

    def __init__(self, folder, base, base_step):
        self.folder, self.base, self.base_step = Path(folder), base, base_step
        self._cache = OrderedDict()  # step -> Inspector, most recently used last
        self._lock = threading.Lock()
        self._known = []  # the last snapshot list read
        self._last = None  # the last state read
        self._stamp, self._listed = None, []  # list_snapshots, and its folder's mtime
        # step -> (flat params, Normalization, flat state or None)
        self._params, self._params_bytes = {}, 0
        self._timeline_lock = threading.Lock()
        self._layers_read, self._scratch, self._probe = [], None, (None, {})
        self._steps = runlog.StepsReader(self.folder / runlog.STEPS)  # read as it grows
        self._read = {}  # snapshot file name -> Snapshot: each file is opened once
        if base_step is not None:
            self._cache[base_step] = base

    @classmethod
    def open(cls, folder, **inspector_args):
        """The run in ``folder``; RunFolderError (one line, naming the folder) if it is not
        a run folder or has neither snapshots nor last.pkl yet. ``inspector_args`` go to
        every ``Inspector`` (test_set, train_set, threads, name)."""
        folder = runs.RunFolder.open(folder).path
        snaps = runlog.list_snapshots(folder)
        last = folder / runs.LAST
        saved = None
        if last.is_file():
            try:
                saved = load_model(last)
            except ModelFileError:
                if not snaps:
                    raise
        if not snaps:
            if saved is None:
                raise runs.RunFolderError(
                    f"{folder}: no snapshot and no {runs.LAST} yet (has the run started?)"
                )
            return cls(folder, Inspector(saved, **inspector_args), None)
        step = snaps[-1].step
        model = runlog.load_snapshot(folder, step)
        norm = model.normalization.to_dict()
        if saved is None:
            run = runlog.read_run(folder)
            saved = ModelFile(
                model=model.network,
                normalization=norm,
                cost=[c for c in run["per_batch"]["loss"] if c is not None],
                config=model.config,
                metrics=None,
                checkpoint=None,
                metadata={"format": "run snapshot"},
                history=_epochs(run["per_epoch"]),
                class_names=list(model.class_names),
                data_source=_source(model.config),
            )
        else:
            saved = replace(saved, model=model.network, normalization=norm, config=model.config)
        view = cls(folder, Inspector(saved, **inspector_args), step)
        view._known = snaps
        return view

    # ----- the run as it goes -----

    def state(self, since=None):
        """``runlog.read_run`` with ``running``, ``finished`` and ``failed`` booleans; when
        the folder can no longer be read, the last state read (per-batch rows after
        ``since``) with state "gone" and the reason in ``error``."""
        try:
            run = runlog.read_run(self.folder, since=since, steps=self._steps)
            self._last = run
        except (runs.RunFolderError, OSError) as exc:
            run = dict(self._last or _empty(self.folder))
            run.update(state="gone", error=f"{exc}".strip() or f"{self.folder}: gone")
            if not self.folder.is_dir():
                run["error"] = f"{self.folder}: the run folder is gone"
            rows = [r for r in self._steps.rows if since is None or r["step"] > since]
            run["per_batch"] = {k: [r[k] for r in rows] for k in runlog.STEPS_COLUMNS}
        run = {**run, "layers": self._layers(run)}
        state = run["state"]
        return {
            **run,
            "running": state == "running",
            "finished": state == "finished",
            "failed": state in FAILED,
            "epoch": (run["step"] // run["steps_per_epoch"])
            if run.get("step") is not None and run.get("steps_per_epoch")
            else None,
        }

    def _layers(self, run):
        """layers.csv as a list of {epoch, layer, weight_norm, grad_norm, dead_fraction}
        (per epoch and layer), or what was last read when the folder is gone."""
        if run.get("state") == "gone":
            return self._layers_read
        rows = []
        for row in runlog._rows(self.folder / runs.LAYERS):
            entry = {k: runlog._number(row.get(k)) for k in runs.LAYERS_COLUMNS}
            entry["epoch"], entry["layer"] = runlog._number(row.get("epoch"), int), row.get("layer")
            rows.append(entry)
        self._layers_read = rows
        return rows

    def timeline(self, digit):
        """The class probabilities of ``digit`` (an input image) under every snapshot:
        {"steps", "epochs", "probabilities"}, each probability computed as
        ``inspector(step)`` computes it (so the last equals the final model's)."""
        steps, epochs, probabilities = [], [], []
        key = (digit.shape, digit.tobytes())
        with self._timeline_lock:
            if self._probe[0] != key:  # the last input's answers are kept: polled as it trains,
                self._probe = (key, {})  # each snapshot's is computed once
            done = self._probe[1]
            for snap, ins in self._each(skip=done):
                if snap.step not in done:
                    done[snap.step] = ins.trace(digit).probabilities.tolist()
                steps.append(snap.step)
                epochs.append(snap.epoch)
                probabilities.append(done[snap.step])
        return {"steps": steps, "epochs": epochs, "probabilities": probabilities}

    def filters_over_run(self):
        """The first conv layer's kernels (F, C, K, K) at every snapshot:
        [{"step", "epoch", "label", "weight"}] ([] for a network without convolutions)."""
        out = []
        with self._timeline_lock:
            for snap, ins in self._each():
                filters = ins.filters()
                if not filters:
                    return []
                first = filters[0]
                out.append(
                    {
                        "step": snap.step,
                        "epoch": snap.epoch,
                        "label": first["label"],
                        "weight": first["weight"].copy(),
                    }
                )
        return out

    def _each(self, skip=()):
        """(snapshot, Inspector at its parameters) for every snapshot that can be read, on
        one scratch network (None for the steps in ``skip``, which are not loaded): the
        caller holds ``_timeline_lock`` while it iterates."""
        snaps = self._list() or [s for s in self._known if s.step in self._params]
        for snap in snaps:
            if snap.step in skip:
                yield snap, None
                continue
            got = self._snapshot_params(snap)
            if got is None:
                continue
            params, norm, state = got
            network = self._network()
            network.flat_params[...] = params
            if state is not None:
                network.flat_state[...] = state
            yield snap, self.base.at(network, norm)

    def _network(self):
        """One engine network of the run's architecture, whose parameters the timeline
        overwrites snapshot after snapshot."""
        if self._scratch is None:
            self._scratch = self._new_network()
        return self._scratch

    def _new_network(self):
        """An engine network of the run's architecture (its parameters to be set)."""
        m = self.base.model
        return Sequential(
            m.specs(), loss=m.loss.kind, input_shape=m.input_shape, dtype=m.dtype, draw=False
        )

    def _snapshot_params(self, snap):
        """(flat parameters, Normalization, flat state) of a snapshot, read once and kept
        while they fit in TIMELINE_BYTES; None when the file cannot be read (being
        replaced, gone). The state is batch norm's running statistics (None without)."""
        if snap.step in self._params:
            return self._params[snap.step]
        try:
            arrays = runlog._open_snapshot(snap.path)
            params = arrays["params"]
            norm = runlog.snapshot_normalization(arrays)
            state = arrays.get("state")
        except (OSError, ValueError, KeyError, EOFError):
            return None
        if params.shape != self.base.model.flat_params.shape:
            return None
        if state is not None and state.shape != self.base.model.flat_state.shape:
            return None
        size = params.nbytes + (0 if state is None else state.nbytes)
        if self._params_bytes + size <= TIMELINE_BYTES:
            self._params[snap.step] = (params, norm, state)
            self._params_bytes += size
        return params, norm, state

    def snapshots(self):
        """The snapshots by step: [{"step", "epoch", "time"}]. When the folder is gone,
        the ones whose parameters are still loaded here."""
        snaps = self._list()
        if snaps:
            self._known = snaps
            return [_snapshot(s) for s in snaps]
        if self.folder.is_dir():
            return []
        with self._lock:
            steps = set(self._cache)
        return [_snapshot(s) for s in self._known if s.step in steps]

    def _list(self):
        """``runlog.list_snapshots``, read again only when the snapshots folder changed (its
        mtime or its names; a snapshot lands by a rename): the page asks for the latest on
        every stroke, and opening 44 files each time is wasted."""
        here = self.folder / runlog.SNAPSHOTS
        try:
            stamp = (here.stat().st_mtime_ns, tuple(sorted(os.listdir(here))))
        except OSError:
            return []
        with self._lock:
            if self._stamp == stamp:
                return self._listed
        snaps = runlog.list_snapshots(self.folder, known=self._read)
        with self._lock:
            self._stamp, self._listed = stamp, snaps
        return snaps

    def latest(self):
        """The step of the latest snapshot available, or None (the base is last.pkl)."""
        steps = [s["step"] for s in self.snapshots()]
        return max(steps) if steps else self.base_step

    def inspector(self, step=None):
        """(Inspector, step) for the snapshot at ``step`` (None: the latest one); the base
        and None for a run without snapshots. InspectionError naming an unknown step."""
        if step is None:
            step = self.latest()
            if step is None:
                return self.base, None
        elif isinstance(step, bool) or not isinstance(step, int):
            raise InspectionError(f"'snapshot' must be a step (an integer), got {step!r:.40}")
        with self._lock:
            if step in self._cache:
                self._cache.move_to_end(step)
                return self._cache[step], step
        known = [s["step"] for s in self.snapshots()]
        if step not in known:
            have = f"steps {known[0]} to {known[-1]}" if known else "none"
            raise InspectionError(f"no snapshot at step {step} (this run has {have})")
        snap = next(s for s in (self._listed or self._known) if s.step == step)
        with self._timeline_lock:
            got = self._snapshot_params(snap)
        if got is None:
            raise InspectionError(f"{snap.path}: cannot read the snapshot")
        network = self._new_network()
        network.flat_params[...] = got[0]
        if got[2] is not None:
            network.flat_state[...] = got[2]
        ins = self.base.at(network, got[1])
        with self._lock:
            self._cache[step] = ins
            self._cache.move_to_end(step)
            while len(self._cache) > CACHE:
                self._cache.popitem(last=False)
        return ins, step


def _snapshot(s):
    return {"step": s.step, "epoch": s.epoch, "time": s.time}


def _source(config):
    """The data source a run's config.yaml (a plain dict) names, as a model file records it
    (``datasets.Dataset.source``); MNIST's when it cannot be read."""
    try:
        cfg = Config.from_dict(config or {})
    except (ConfigError, TypeError, ValueError):
        return {"dataset": "mnist"}
    source = cfg.data.source(cfg.training.seed)
    return {"dataset": source} if isinstance(source, str) else source


def _epochs(columns):
    """results.csv's columns as one dict per epoch (as a model file's history)."""
    keys = list(columns)
    n = len(columns[keys[0]]) if keys else 0
    return [{k: columns[k][i] for k in keys} for i in range(n)]


def _empty(folder):
    return {
        "name": Path(folder).name,
        "state": "unknown",
        "error": None,
        "step": None,
        "total_steps": None,
        "steps_per_epoch": None,
        "epochs": None,
        "snapshots_dropped": 0,
        "pid": None,
        "updated": None,
        "per_batch": {k: [] for k in runlog.STEPS_COLUMNS},
        "per_epoch": {k: [] for k in runs.RESULTS_COLUMNS},
    }
