"""The worker pool's shared-memory segments: laid out, created, attached, released, and
removed when the process that created them is gone.

A segment is a file in /dev/shm on Linux. Its owner (the process that creates it) unlinks it
when its pool closes, and Python's resource tracker does if the owner dies; but a SIGKILL to
the owner's whole process group kills the tracker too, and the segment (tens of MB: the data
set) stays in memory until the machine restarts. So every segment is named after its owner's
pid and start time (``SEGMENT``), and ``remove_stale_segments`` removes those whose owner is
gone, and only those.
"""

import math
import os
import re
import secrets
import sys
from multiprocessing import resource_tracker, shared_memory
from pathlib import Path

import numpy as np

from .procinfo import alive, start_time

#: Where POSIX shared memory lives on Linux; each of the pool's segments is a file there.
SHM_DIR = Path("/dev/shm")

#: The pool's segment names: ``numpycnn-PID-START-RANDOM``, PID and START (its start time,
#: in clock ticks after boot; 0 where unknown) naming the process that owns it, so that a
#: later process can tell a dead owner's segments, even after the pid is reused.
SEGMENT = re.compile(r"numpycnn-(?P<pid>\d+)-(?:(?P<start>\d+)-)?[0-9a-f]{8}")

_ALIGN = 64  # bytes: each array of a segment starts on a cache line


def layout(fields):
    """Byte offsets of ``fields`` [(key, shape, dtype)], each aligned; (offsets, total)."""
    offsets, total = [], 0
    for _, shape, dtype in fields:
        offsets.append(total)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        total += -(-nbytes // _ALIGN) * _ALIGN
    return offsets, max(total, _ALIGN)


def views(shm, fields):
    """The arrays ``fields`` describes, as views of segment ``shm``."""
    offsets, _ = layout(fields)
    return {
        key: np.ndarray(shape, dtype=dtype, buffer=shm.buf, offset=off)
        for (key, shape, dtype), off in zip(fields, offsets)
    }


def create(fields):
    """A new segment sized for ``fields``, named after this process, owned by it."""
    _, size = layout(fields)
    owner = f"{os.getpid()}-{start_time(os.getpid()) or 0}"
    while True:
        name = f"numpycnn-{owner}-{secrets.token_hex(4)}"
        try:
            return shared_memory.SharedMemory(name=name, create=True, size=size)
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue


def attach(name):
    """Open an existing segment without registering it with the resource tracker.

    Python < 3.13 registers every attached segment, as if the attaching process owned it;
    the tracker then unlinks or warns about segments their owner still uses. Only the
    owner (the main process) registers and unlinks: workers just map.
    """
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    register = resource_tracker.register
    resource_tracker.register = lambda *args, **kwargs: None  # this worker process only
    try:
        return shared_memory.SharedMemory(name=name)
    finally:
        resource_tracker.register = register


def release(shm, unlink):
    """Unmap ``shm`` (unless arrays still use it: then when they go) and, as its owner,
    unlink it and take it off the resource tracker's list."""
    try:
        shm.close()
    except BufferError:  # views still alive: the mapping goes when they do
        pass
    if unlink:
        try:
            shm.unlink()
        except FileNotFoundError:  # someone removed it: still forget it in the tracker
            try:
                resource_tracker.unregister(shm._name, "shared_memory")
            except Exception:  # pragma: no cover
                pass


def _segment_owner(name):
    """(pid, start time or None) of the process that created segment ``name``, or None
    when ``name`` is not one of the pool's segments."""
    match = SEGMENT.fullmatch(name)
    if match is None:
        return None
    start = match["start"]
    return int(match["pid"]), None if start is None or start == "0" else int(start)


def remove_stale_segments(directory=None):
    """Unlink the shared-memory segments of worker pools whose process is gone, and return
    what was removed: a list of ``(name, owner pid, bytes)``.

    A pool's segments are unlinked by ``close``, by the interpreter's exit or, if the
    process is killed, by Python's resource tracker; a SIGKILL to the whole process group
    kills the tracker too, and the segments (tens of MB: the data set) would stay in
    memory until the machine restarts. Segment names carry their owner's pid and start
    time (see ``SEGMENT``), so a segment is removed only when no process with that pid and
    start time exists: a live pool's segments are never touched. ``directory``: where the
    segments are (default ``SHM_DIR``; where there is none, nothing is done).
    """
    directory = SHM_DIR if directory is None else Path(directory)
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:  # no /dev/shm: not Linux
        return removed
    for entry in entries:
        owner = _segment_owner(entry.name)
        if owner is None or alive(*owner):
            continue
        try:
            size = entry.stat(follow_symlinks=False).st_size
            os.unlink(entry.path)
        except OSError:  # removed meanwhile (by another command, or a resource tracker)
            continue
        removed.append((entry.name, owner[0], size))
    return removed
