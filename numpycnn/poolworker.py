"""The worker side of the pool (``numpycnn.parallel``): one share of a training step,
computed in any worker, and a helper process's whole life.

A helper serves the main process over its pipe: ``step`` computes the loss and gradient
of its share into its gradient slot in shared memory, ``predict`` the scores of its part of
the images, ``attach`` maps a new segment, ``stop`` ends it. It ignores SIGINT and SIGTERM
(stopping is the main process's decision) and exits by itself when the main process goes
away. The signal helpers used while the pool's own state changes live here too, beside the
ones the helpers use at birth.
"""

import contextlib
import os
import signal
import sys
import threading
import traceback

import numpy as np
from threadpoolctl import threadpool_limits

from . import shm as _shm
from .allocator import keep_freed_blocks
from .engine import Sequential
from .engine.model import BATCH_KINDS

__all__ = ["CHUNK", "PARENT_POLL_SECONDS", "Worker", "accumulate", "share_step", "shares",
           "signals_blocked", "signals_held", "worker_main"]  # fmt: skip

#: The most images a worker puts through the network at once: a larger share is computed
#: in chunks of at most this many, their gradients summed. The working arrays of 16 images
#: stay near the core: with two workers computing side by side here at batch 128, chunks
#: of 16 gave 10,500-10,900 images/s, of 32 9,900-10,600 and of 64 9,700-9,900 (8-image
#: chunks pay the per-layer calls: 10,500-10,600).
CHUNK = 16

#: How often an idle worker checks that the process that started it is still there.
PARENT_POLL_SECONDS = 1.0


def shares(n, workers):
    """The (start, stop) ranges of ``n`` items split into ``workers`` contiguous shares,
    as even as possible (the first ones one longer); a function of n and workers alone."""
    n, workers = int(n), int(workers)
    bounds = [k * (n // workers) + min(k, n % workers) for k in range(workers + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


# ----- a share of a step, in any worker -----


def accumulate(total, part, weight, scratch, first):
    """``total = weight * part`` if ``first``, else ``total += weight * part``, in the
    arrays' dtype: the one ordered, weighted summation of chunk and share gradients, so that
    the same inputs and worker count always give the same bits. ``scratch``: a dict that
    keeps the temporary buffer from one call to the next."""
    w = total.dtype.type(weight)
    if first:
        np.multiply(part, w, out=total)
    else:
        tmp = _buffer(scratch, "tmp", total)
        np.multiply(part, w, out=tmp)
        total += tmp


def _buffer(scratch, key, like):
    """``scratch[key]``, an array like ``like``, made on first use."""
    if key not in scratch:
        scratch[key] = np.empty_like(like)
    return scratch[key]


def share_step(model, images, labels, batch, lo, hi, augment, scratch, total, key, normalize=None):
    """Loss and gradient of the batch's share ``lo:hi`` (``batch``: the shared indices and
    augmentation parameters; ``augment``: None, or the pool's, for an augmented step), left
    in the model's gradient buffer; returns (mean loss of the share, correct predictions).
    ``total``: the batch's size and ``key``: the step's (seed, step), for dropout's masks.

    A share of more than ``CHUNK`` images is computed in even chunks, whose gradients are
    summed in order, each weighted by its part of the share (``accumulate``; ``scratch``
    keeps the summation buffers); a network with batch norm takes its share whole, so that
    its statistics are the batch's (``WorkerPool``)."""
    n = hi - lo
    parts = [(0, n)] if model.batch_dependent else shares(n, -(-n // CHUNK))
    grads, loss, correct = model.flat_grads, 0.0, 0
    for k, (a, b) in enumerate(parts):
        idx = batch["idx"][lo + a : lo + b]
        x, y = images[idx], labels[idx]
        if normalize is not None:  # raw pixels shared: normalised a share at a time
            x = normalize(x)
        if augment is not None:
            x = augment.apply(x, batch["aug"][lo + a : lo + b])
        model.set_step(*key, rows=(lo + a, total))
        with model.mode(True):
            part_loss, out = model.loss_on(x, y)
            model.backward()
        weight = (b - a) / n
        loss += weight * part_loss
        correct += int((out.argmax(axis=1) == y).sum())
        if len(parts) > 1:
            accumulate(_buffer(scratch, "sum", grads), grads, weight, scratch, k == 0)
    if len(parts) > 1:
        grads[...] = scratch["sum"]
    return loss, correct


# ----- the helper process -----


class _ParentGone(Exception):
    pass


_STOPPING = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_blocked():
    """Block SIGINT and SIGTERM in this thread while workers start: they inherit the
    blocked signals and ignore both before unblocking them, so that a Ctrl-C or SIGTERM to
    the process group during their start-up (a spawned worker spends a while importing)
    cannot interrupt them. Signals sent meanwhile reach this process once it unblocks."""
    if not hasattr(signal, "pthread_sigmask"):  # Windows
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, set(_STOPPING))
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM back from Python code while the pool's own state changes (a
    segment created and registered, helpers started, the pool closed), then deliver them
    again to whatever handlers were there. Python runs its handlers between two bytecodes
    of the main thread, so an interrupt could otherwise land between creating a segment
    and recording it, or halfway through ``close``, and leave a segment nobody unlinks (the
    resource tracker's "leaked shared_memory" warnings) or a helper nobody stops."""
    if threading.current_thread() is not threading.main_thread():
        yield  # Python runs signal handlers in the main thread only: nothing to hold here
        return
    caught = []
    previous = {}
    try:
        for signum in _STOPPING:
            handler = signal.getsignal(signum)
            if handler is not None and handler != signal.SIG_IGN:  # None: set outside Python
                previous[signum] = signal.signal(signum, lambda n, frame: caught.append(n))
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in dict.fromkeys(caught):
            signal.raise_signal(signum)  # to the handler that was there before


def worker_main(rank, conn, setup, inherited):
    """A worker's whole life: serve the main process's requests until told to stop.

    It ignores SIGINT and SIGTERM: stopping is the main process's decision (a Ctrl-C or
    SIGTERM to the process group lets the main process finish its step, save and close the
    pool; were the helpers to die at once, that step would fail instead). A worker stops
    when told, when the main process goes away, or when killed."""
    for signum in _STOPPING:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # blocked since birth (signals_blocked): now ignored
        signal.pthread_sigmask(signal.SIG_UNBLOCK, set(_STOPPING))
    for c in inherited:  # fork: the main process's pipe ends, so that its death reads as EOF
        c.close()
    keep_freed_blocks()  # each step reuses its temporaries instead of faulting them in
    try:
        with (
            threadpool_limits(1),
            np.errstate(over="ignore", invalid="ignore", divide="ignore"),
        ):
            Worker(rank, conn, setup).serve()
    except (EOFError, BrokenPipeError, ConnectionResetError, _ParentGone):
        pass  # the main process went away: nobody to report to
    except BaseException as exc:  # reported to the main process, never printed here
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
        except Exception:
            pass
        sys.exit(1)


class Worker:
    def __init__(self, rank, conn, setup):
        self.rank, self.conn = rank, conn
        self.model = Sequential(
            setup["layers"],
            loss=setup["loss"],
            input_shape=setup["input_shape"],
            dtype=setup["dtype"],
            draw=False,  # the shared parameters replace them
        )
        self.augment, self.normalize = setup["augment"], setup["normalize"]
        self.segments, self.views, self.scratch = {}, {}, {}
        for key, (name, fields) in setup["segments"].items():
            self.attach(key, name, fields)
        state = self.views["state"]
        self.model.use_buffers(
            state["params"], state["slots"][rank - 1], copy=False, flat_state=state["running"]
        )
        for layer in self.model.layers:
            if layer.kind in BATCH_KINDS:  # worker 0 keeps the shared running statistics
                layer.sync, layer.track_running = self.sync, False
        self.weight = 1.0
        self.ppid = os.getppid()

    def attach(self, key, name, fields):
        old = self.segments.pop(key, None)
        self.views.pop(key, None)
        if old is not None:
            _shm.release(old, unlink=False)
        self.segments[key] = shm = _shm.attach(name)
        self.views[key] = _shm.views(shm, fields)

    def receive(self):
        while not self.conn.poll(PARENT_POLL_SECONDS):
            if os.getppid() != self.ppid:
                raise _ParentGone
        return self.conn.recv()

    def serve(self):
        self.conn.send(("ready", os.getpid()))
        while True:
            command, *args = self.receive()
            if command == "stop":
                return
            if command == "attach":
                self.attach(*args)
            elif command == "step":
                self.conn.send(("ok", *self.step(*args)))
            elif command == "predict":
                self.predict(*args)
                self.conn.send(("ok",))
            else:
                raise ValueError(f"unknown command {command!r}")

    def step(self, lo, hi, augmented, total, key):
        data = self.views["data"]
        augment = self.augment if augmented else None
        self.weight = (hi - lo) / total
        return share_step(
            self.model,
            data["images"],
            data["labels"],
            self.views["batch"],
            lo,
            hi,
            augment,
            self.scratch,
            total,
            key,
            self.normalize,
        )

    def sync(self, parts, forward):
        """Batch norm's whole-batch sums: this share's go to worker 0 (backward sums in
        the batch's scale, times this share's weight), the batch's come back."""
        self.conn.send(("sync", parts if forward else parts * self.weight))
        _, total = self.receive()
        return total if forward else total / self.weight

    def predict(self, lo, hi, batch_size):
        io = self.views["io"]
        io["out"][lo:hi] = self.model.predict_proba(io["x"][lo:hi], batch_size)
