"""Whether a process is still the one that was recorded: its pid and, since pids are reused,
its start time (field 22 of /proc/PID/stat, clock ticks after boot). Used to tell a dead
owner's shared memory (``shm``) and a crashed run (``runlog``) from live ones."""

import os
from pathlib import Path


def start_time(pid):
    """When process ``pid`` started, or None when there is no such process (or no /proc)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # the name in (...) may hold spaces


def alive(pid, start=None):
    """Whether process ``pid`` runs and is the one that started at ``start`` (None: not
    known, any process with that pid counts): not a zombie, nor a later process that was
    given its pid."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        if Path("/proc/self/stat").exists():  # /proc knows every process: this one is gone
            return False
        try:  # no /proc: ask the kernel whether the pid exists
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # someone else's process
            return True
        return True
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):  # exited, not yet reaped by its parent
        return False
    return start is None or int(fields[19]) == start
