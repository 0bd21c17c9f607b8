"""Data-parallel training and prediction on a persistent pool of worker processes.

``WorkerPool(model, images, labels, workers=N)`` has N workers: the calling process is
worker 0, and N-1 helper processes, started once, are workers 1 .. N-1. The training images
and labels, the model's flat parameters and gradients, and one gradient slot per helper live
in shared memory (``multiprocessing.shared_memory``, named and laid out by ``numpycnn.shm``):
no helper copies the data set, and a step sends each helper one tiny tuple through its pipe
and gets one back.

``pool.step(idx)`` splits the batch ``images[idx]`` into N contiguous shares; worker k
computes the loss and gradient of its share with the engine's own layers (worker 0 into
``model.flat_grads``, a helper into its slot), and the calling process sums them in worker
order, each weighted by its share of the batch, into ``model.flat_grads``: the gradient of
the batch's mean loss, as ``model.loss_on`` and ``model.backward`` compute it in one process,
up to the rounding of the summation. The calling process computes a share rather than wait:
on a machine with as many cores as workers every core computes, and no process sits between
the cores and the optimiser. The optimiser steps in the caller, on ``model.flat_params``,
which the helpers read. The same inputs and worker count give bit-identical results run
after run; different worker counts differ only in summation order.

Batch norm is synchronised, so that its statistics are the whole batch's, not a share's:
in a training step each worker's batch-norm layer sends its share's per-channel count, sum
and sum of squares (float64) to worker 0, which adds them up in worker order and sends the
totals back; every worker then normalises its share with the batch's mean and variance
(worker 0 alone updates the running statistics, which live in shared memory beside the
parameters, so helpers predict with them). The backward pass needs two more whole-batch
sums, sum(dy) and sum(dy * xhat): each worker sends its share's, times its share's weight
(its loss is its share's mean), and divides the totals by that weight again. A network with
batch norm computes each share in one chunk (``CHUNK`` does not apply). So 1 and N workers
compute the same step up to the rounding of the sums.

A helper that dies makes the next call raise ``WorkerError`` naming it and how it ended;
the pool then closes itself. ``close()`` (or leaving the ``with`` block, or the pool being
collected, or the interpreter exiting) stops the helpers and unlinks every segment; an
interrupt meanwhile is held until that is done. Helpers ignore SIGINT and SIGTERM, so that a
signal to the process group reaches only the main process, and exit by themselves when the
main process goes away. Starting a pool removes the segments of killed pools
(``shm.remove_stale_segments``).
"""

import math
import multiprocessing
import os
import signal
import time
import weakref
from multiprocessing import connection

import numpy as np
from threadpoolctl import ThreadpoolController, threadpool_limits

from . import shm as _shm
from .allocator import keep_freed_blocks
from .engine import Sequential, losses
from .engine.model import BATCH_KINDS
from .poolworker import (
    CHUNK,
    accumulate,
    share_step,
    shares,
    signals_blocked,
    signals_held,
    worker_main,
)
from .shm import remove_stale_segments

__all__ = ["CHUNK", "MIN_SHARE", "PREDICT_IN_PROCESS_BELOW", "WorkerError", "WorkerPool",
           "default_workers", "one_blas_thread", "predict_proba", "remove_stale_segments",
           "shares", "usable_cpus"]  # fmt: skip

#: The smallest useful share of a batch, in images. A worker's step has a fixed cost (a
#: Python call per layer, a pipe round trip, one more gradient slot for the calling process
#: to add up) besides its arithmetic; on the reference network 8 images still take a few
#: milliseconds, far above that cost, while fewer would make it count. So the default
#: worker count is capped at batch_size // 8: 4 workers at batch 32, 16 at batch 128.
MIN_SHARE = 8

#: Below this many images ``predict_proba`` runs in the calling process: a few blocks take
#: less time than handing them to the workers, and one image is never slower than without
#: a pool.
PREDICT_IN_PROCESS_BELOW = 128

#: How long ``close`` waits for the workers to stop on their own before killing them.
STOP_SECONDS = 2.0


class WorkerError(RuntimeError):
    """A worker died or failed. ``rank``, ``pid`` and ``exitcode`` say which and how
    (a negative exit code is the signal that ended it); ``details`` holds a failed worker's
    traceback text. The pool is closed by the time this is raised."""

    def __init__(self, message, rank=None, pid=None, exitcode=None, details=None):
        super().__init__(message)
        self.rank, self.pid, self.exitcode, self.details = rank, pid, exitcode, details


def usable_cpus():
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_workers(batch_size=32):
    """The default worker count: the usable CPUs, at most ``batch_size // MIN_SHARE`` so
    that every worker gets a useful share of a batch (see ``MIN_SHARE``), at least 1."""
    return max(1, min(usable_cpus(), int(batch_size) // MIN_SHARE))


def one_blas_thread():
    """A context in which BLAS computes on the calling thread alone.

    numpycnn's parallelism comes from processes (``WorkerPool``) and prediction threads,
    each held to one BLAS thread; training in one process (``--workers 1``) and predicting
    there are held to one too. OpenBLAS splits each product between its threads and waits
    for all of them: when another job holds a core, every product waits for a thread that
    is not running: a second BLAS thread made training in one process 3 to 5 times slower
    than one (medians), up to 24 times within one round (README, "Speed"). On a quiet
    machine two BLAS threads are about 1.35x faster there; the worker pool uses the cores
    without that risk."""
    return threadpool_limits(limits=1, user_api="blas")


# ----- shared memory (numpycnn.shm) -----

_layout, _views, _create = _shm.layout, _shm.views, _shm.create
_attach, _release = _shm.attach, _shm.release


# ----- the pool -----


class _Resources:
    """What ``close`` must release, kept apart from the pool so that a finaliser can."""

    def __init__(self, model):
        self.owner = os.getpid()
        self.model = model
        self.params_address = None  # where the shared flat parameters start
        self.processes, self.conns, self.segments = {}, {}, {}  # processes, conns by rank


def _shutdown(res):
    """Stop the workers, give the model private buffers back, unlink every segment; an
    interrupt meanwhile is delivered once all of that is done."""
    if os.getpid() != res.owner:  # a forked copy of the pool: not ours to clean up
        return
    with signals_held():
        _stop(res)


def _stop(res):
    model = res.model
    if model is not None and res.params_address is not None:
        if model.flat_params.__array_interface__["data"][0] == res.params_address:
            model.use_buffers(
                model.flat_params.copy(),
                model.flat_grads.copy(),
                copy=False,
                flat_state=model.flat_state.copy(),
            )
        for layer in model.layers:
            if layer.kind in BATCH_KINDS:
                layer.sync = None
    for conn in res.conns.values():
        try:
            conn.send(("stop",))
        except (OSError, ValueError):  # already gone
            pass
    deadline = time.monotonic() + STOP_SECONDS
    for p in res.processes.values():
        p.join(max(0.0, deadline - time.monotonic()))
    for p in res.processes.values():
        if p.is_alive():  # stuck: it ignores SIGTERM (see poolworker.worker_main)
            p.kill()
            p.join()
    for conn in res.conns.values():
        conn.close()
    for shm in res.segments.values():
        _release(shm, unlink=True)
    res.processes, res.conns, res.segments, res.model = {}, {}, {}, None


def _describe_end(process):
    process.join(0.5)  # its end may be a moment behind its pipe's
    code = process.exitcode
    if code is None:
        return "closed its pipe"
    if code < 0:
        try:
            return f"was killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class WorkerPool:
    """``workers`` workers training and predicting with ``model`` on shared data: this
    process (worker 0) and ``workers - 1`` helper processes. ``pids[k]`` is worker k's pid.

    ``model``: a ``numpycnn.engine.Sequential``; from here on its ``flat_params`` and
    ``flat_grads`` (and every view of them) live in shared memory, until ``close()`` gives
    it private copies again. ``images``: the normalised training images (N, C, H, W) (or
    (N, H, W) for one channel), copied once into shared memory as the model's dtype;
    ``labels``: their N integer classes. ``start_method``: "fork", "spawn" or "forkserver"
    (default: the platform's). ``augment``: None, or a picklable object with an int
    ``params_per_image`` P and ``apply(images (n, C, H, W), params (n, P) float64)`` ->
    images, applied by each worker to its share with the parameters given to ``step``.
    ``normalize``: None, or a picklable callable (``Normalization.norm``) that makes the
    network's input of raw pixels: then ``images`` are shared as they are (uint8, a
    quarter of float32's memory) and each worker normalises its share before the
    augmentation. This process computes its shares on one BLAS thread, as the helpers do.

    ``images`` and ``labels`` are the shared copies, for the caller to use (and to drop its
    own). Usable as a context manager.
    """

    def __init__(
        self, model, images, labels, workers=2, start_method=None, augment=None, normalize=None
    ):
        if not isinstance(model, Sequential):
            raise TypeError(f"model must be a numpycnn.engine.Sequential, got {type(model)}")
        if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)):
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if workers < 1:
            raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
        if normalize is None:
            x = model._as_input(images)
        else:  # raw pixels (uint8: a quarter of float32's memory), normalised per share
            x = np.asarray(images)
            if x.shape[1:] != model.input_shape or not callable(normalize):
                raise ValueError(
                    f"with normalize, images must be (N, {model.input_shape}) raw pixels and "
                    f"normalize a callable, got {x.shape}"
                )
        y = np.asarray(labels)
        if y.shape != (len(x),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be {len(x)} integers, got shape {y.shape} {y.dtype}")
        if augment is not None:
            p = getattr(augment, "params_per_image", None)
            if not callable(getattr(augment, "apply", None)) or not isinstance(p, int) or p < 0:
                raise ValueError("augment must have apply(images, params) and params_per_image")
        keep_freed_blocks()  # this process computes shares too (see allocator.py)
        self.model, self.workers, self.augment = model, int(workers), augment
        self.normalize = normalize
        self.helpers = range(1, self.workers)
        self._blas = ThreadpoolController()  # found once: a limit is then cheap to set
        self.context = multiprocessing.get_context(start_method)
        self.start_method = self.context.get_start_method()
        self._res = res = _Resources(model)
        self._finalizer = weakref.finalize(self, _shutdown, res)
        self._owed = set()  # workers whose reply to the last request is still unread
        self._scratch = {}  # this process's summation buffers (see poolworker.accumulate)
        self._fields, self._views = {}, {}
        self._capacity = {"batch": 0, "io": 0}
        self.closed = False
        #: what ``remove_stale_segments`` removed before this pool started (name, pid, bytes)
        self.stale_removed = remove_stale_segments()
        try:
            self._start(x, y)
        except BaseException:
            self.close()
            raise

    def _segment(self, key, fields):
        """Create segment ``key`` (replacing any old one) and return its views."""
        with signals_held():  # created, registered and recorded, or not at all
            old = self._res.segments.pop(key, None)
            self._views.pop(key, None)
            if old is not None:
                _release(old, unlink=True)
            self._res.segments[key] = shm = _create(fields)
        self._fields[key] = fields
        self._views[key] = views = _views(shm, fields)
        return views

    def _start(self, x, y):
        model, n = self.model, self.model.num_params
        state = self._segment(
            "state",
            [
                ("params", (n,), model.dtype),
                ("grads", (n,), model.dtype),
                ("slots", (self.workers - 1, n), model.dtype),
                ("running", (model.num_state,), model.dtype),
            ],
        )
        model.use_buffers(state["params"], state["grads"], flat_state=state["running"])
        for layer in model.layers:
            if layer.kind in BATCH_KINDS:
                layer.sync = self._sync
        self._res.params_address = state["params"].__array_interface__["data"][0]
        data = self._segment(
            "data",
            [
                ("images", x.shape, model.dtype if self.normalize is None else x.dtype),
                ("labels", y.shape, np.int64),
            ],
        )
        data["images"][...] = x
        data["labels"][...] = y
        self.images, self.labels = data["images"], data["labels"]
        loss = model.loss.kind if model.loss.kind in losses.LOSSES else type(model.loss)
        setup = {
            "layers": model.specs(),
            "loss": loss,
            "input_shape": model.input_shape,
            "dtype": str(model.dtype),
            "augment": self.augment,
            "normalize": self.normalize,
            "segments": {
                key: (self._res.segments[key].name, self._fields[key]) for key in self._fields
            },
        }
        fork = self.start_method == "fork"
        with signals_held(), signals_blocked():
            for rank in self.helpers:
                ours, theirs = self.context.Pipe(duplex=True)
                self._res.conns[rank] = ours
                inherited = list(self._res.conns.values()) if fork else []
                p = self.context.Process(
                    target=worker_main,
                    args=(rank, theirs, setup, inherited),
                    name=f"numpycnn-worker-{rank}",
                    daemon=True,
                )
                p.start()
                theirs.close()
                self._res.processes[rank] = p
        self.pids = [os.getpid()] + [reply[1] for reply in self._request(self.helpers, None)]

    # ----- talking to the workers -----

    def _check(self):
        if self.closed:
            raise WorkerError("the worker pool is closed")
        if self._owed:  # an interrupted request: read its replies before the next one
            self._collect(sorted(self._owed))
        if self.model.flat_params.__array_interface__["data"][0] != self._res.params_address:
            raise WorkerError("the model's parameters no longer live in the pool's shared memory")

    def _fail(self, rank, message=None, details=None):
        p = self._res.processes[rank]
        what = f"failed: {message}" if message else _describe_end(p)
        code = p.exitcode
        self.close()
        raise WorkerError(
            f"worker {rank} (pid {p.pid}) {what}", rank, p.pid, code, details
        ) from None

    def _send(self, rank, message):
        try:
            self._res.conns[rank].send(message)
        except (OSError, ValueError):
            self._fail(rank)
        self._owed.add(rank)

    def _request(self, ranks, messages):
        """Send ``messages[k]`` to worker ``ranks[k]`` (None: only collect) and return their
        replies in rank order."""
        ranks = list(ranks)
        if messages is not None:
            for rank, message in zip(ranks, messages):
                self._send(rank, message)
        else:
            self._owed.update(ranks)
        return self._collect(ranks)

    def _collect(self, ranks):
        """The replies of ``ranks``, in that order; WorkerError if one fails or dies."""
        conns, procs = self._res.conns, self._res.processes
        waiting = {conns[r]: r for r in ranks}
        sentinels = {procs[r].sentinel: r for r in ranks}
        replies = {}
        while waiting:
            for ready in connection.wait(list(waiting) + list(sentinels)):
                if ready in waiting:
                    rank = waiting.pop(ready)
                    sentinels.pop(procs[rank].sentinel, None)
                    try:
                        reply = ready.recv()
                    except (EOFError, OSError):
                        self._fail(rank)
                    if reply[0] == "error":
                        self._fail(rank, reply[1], reply[2])
                    replies[rank] = reply
                    self._owed.discard(rank)
                elif ready in sentinels:
                    rank = sentinels[ready]
                    if not conns[rank].poll():  # no last words waiting in its pipe
                        self._fail(rank)
        return [replies[r] for r in ranks]

    def _room(self, key, n):
        """Views of the per-call segment ``key`` with room for ``n`` images, grown (and
        announced to the workers) when too small."""
        if self._capacity[key] < n:
            cap = max(n, 2 * self._capacity[key])
            model = self.model
            if key == "batch":
                p = 0 if self.augment is None else self.augment.params_per_image
                fields = [("idx", (cap,), np.int64), ("aug", (cap, p), np.float64)]
            else:
                fields = [
                    ("x", (cap, *model.input_shape), model.dtype),
                    ("out", (cap, *model.output_shape), model.dtype),
                ]
            self._segment(key, fields)
            name = self._res.segments[key].name
            for rank in self.helpers:  # no reply: the pipe keeps the order
                self._send(rank, ("attach", key, name, fields))
                self._owed.discard(rank)
            self._capacity[key] = cap
        return self._views[key]

    # ----- the face -----

    def step(self, idx, aug_params=None):
        """Loss and gradient of the batch ``images[idx]``, computed by the workers.

        Leaves in ``model.flat_grads`` the gradient of the batch's mean loss and returns
        (mean loss, number of correct argmax predictions). ``aug_params`` (len(idx), P)
        float64: the augmentation parameters of each image of the batch (None: no
        augmentation this step). The optimiser step is the caller's.
        """
        self._check()
        idx = np.asarray(idx)
        n = len(idx) if idx.ndim == 1 else 0
        if n == 0 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"idx must be a non-empty 1-D integer array, got {idx.shape}")
        if idx.min() < 0 or idx.max() >= len(self.images):
            raise ValueError(f"batch indices must lie in [0, {len(self.images)})")
        if aug_params is not None:
            if self.augment is None:
                raise ValueError("aug_params given, but the pool has no augment")
            aug_params = np.asarray(aug_params, dtype=np.float64)
            want = (n, self.augment.params_per_image)
            if aug_params.shape != want:
                raise ValueError(f"aug_params must have shape {want}, got {aug_params.shape}")
        batch = self._room("batch", n)
        batch["idx"][:n] = idx
        if aug_params is not None:
            batch["aug"][:n] = aug_params
        work = [(r, lo, hi) for r, (lo, hi) in enumerate(shares(n, self.workers)) if hi > lo]
        augmented = aug_params is not None
        key = self.model.step_key
        for rank, lo, hi in work[1:]:
            self._send(rank, ("step", lo, hi, augmented, n, key))
        _, lo, hi = work[0]  # the first share, the largest, is this process's
        self._sync_ranks, self._sync_weight = [r for r, _, _ in work[1:]], (hi - lo) / n
        with self._blas.limit(limits=1):
            mine = share_step(
                self.model,
                self.images,
                self.labels,
                batch,
                lo,
                hi,
                self.augment if augmented else None,
                self._scratch,
                n,
                key,
                self.normalize,
            )
        replies = [mine] + [reply[1:] for reply in self._collect([r for r, _, _ in work[1:]])]
        # The batch's mean loss is the share means weighted by share size: sum the
        # weighted share gradients in worker order, the same order every time.
        grads, slots = self.model.flat_grads, self._views["state"]["slots"]
        loss, correct = 0.0, 0
        for (rank, lo, hi), (share_loss, share_correct) in zip(work, replies):
            weight = (hi - lo) / n
            part = grads if rank == 0 else slots[rank - 1]
            accumulate(grads, part, weight, self._scratch, rank == 0)
            loss += weight * share_loss
            correct += share_correct
        return loss, correct

    def _sync(self, parts, forward):
        """Batch norm's whole-batch sums, in worker 0 (this process): every helper of the
        step sends its share's, weighted (see ``Worker.sync``); their sum, in worker order,
        goes back to each, and in this share's scale to this process's layer."""
        ranks, weight = self._sync_ranks, self._sync_weight
        total = parts.copy() if forward else parts * weight
        for reply in self._collect(ranks):
            total += reply[1]
        for rank in ranks:
            self._send(rank, ("synced", total))
        return total if forward else total / weight

    def predict_proba(self, x, batch_size=32):
        """``model.predict_proba(x, batch_size)``, its blocks shared among the workers
        (below ``PREDICT_IN_PROCESS_BELOW`` images, in this process)."""
        self._check()
        x = self.model._as_input(x)
        n, batch_size = len(x), int(batch_size)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if n < PREDICT_IN_PROCESS_BELOW:
            with self._blas.limit(limits=1):
                return self.model.predict_proba(x, batch_size)
        blocks = math.ceil(n / batch_size)
        work = [
            (r, lo * batch_size, min(n, hi * batch_size))
            for r, (lo, hi) in enumerate(shares(blocks, self.workers))
            if hi > lo
        ]
        out = np.empty((n, *self.model.output_shape), dtype=self.model.dtype)
        if len(work) > 1:  # the helpers' blocks go through shared memory
            start = work[1][1]
            io = self._room("io", n - start)
            io["x"][: n - start] = x[start:]
            for rank, a, b in work[1:]:
                self._send(rank, ("predict", a - start, b - start, batch_size))
        _, a, b = work[0]
        with self._blas.limit(limits=1):
            out[a:b] = self.model.predict_proba(x[a:b], batch_size)
        if len(work) > 1:
            self._collect([r for r, _, _ in work[1:]])
            out[start:] = io["out"][: n - start]
        return out

    def predict(self, x, batch_size=32):
        return self.predict_proba(x, batch_size).argmax(axis=1)

    def close(self):
        """Stop the workers, give the model private buffers, unlink every shared segment.
        Idempotent. ``images`` and ``labels`` stay readable while anything refers to them."""
        if self.closed:
            return
        self.closed = True
        self._views, self._scratch = {}, {}
        self._finalizer()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self.closed else f"pids {self.pids}"
        return f"WorkerPool(workers={self.workers}, {self.start_method}, {state})"


def predict_proba(model, x, workers=1, batch_size=32, threads=1):
    """``model.predict_proba(x)``, its blocks shared among ``workers`` processes started for
    this call; with one worker, or fewer than ``PREDICT_IN_PROCESS_BELOW`` images, in this
    process on ``threads`` threads (``Sequential.predict_proba``), each on one BLAS thread
    (see ``one_blas_thread``)."""
    x = model._as_input(x)
    if int(workers) <= 1 or len(x) < PREDICT_IN_PROCESS_BELOW:
        with one_blas_thread():
            return model.predict_proba(x, batch_size, threads=threads)
    with WorkerPool(model, x[:1], np.zeros(1, dtype=np.int64), workers=int(workers)) as pool:
        return pool.predict_proba(x, batch_size)
