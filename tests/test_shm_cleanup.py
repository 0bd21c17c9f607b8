"""Shared memory left by killed runs is removed by the next command, and only theirs.

A SIGKILL to a run's whole process group kills its resource tracker too, so nothing
unlinks the pool's segments (the data set: tens of MB) until the machine restarts. Segment
names carry the owner's pid and start time; the next command that may start a pool removes
the segments whose owner is gone (or whose pid now belongs to a later process), says so in
one line, and never touches a live process's segments.
"""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import tiny_config
from test_interrupts import group_alive

from numpycnn import parallel
from numpycnn.engine import Sequential

SHM = Path("/dev/shm")

pytestmark = pytest.mark.skipif(not SHM.is_dir(), reason="no /dev/shm (not Linux)")


def own_start():
    return int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])


def dead_pid():
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_segment_names_carry_the_owner_pid_and_start_time():
    model = Sequential([{"type": "flatten"}, {"type": "dense", "units": 10}], input_shape=(4,))
    x, y = np.zeros((8, 4), np.float32), np.zeros(8, np.int64)
    with parallel.WorkerPool(model, x, y, workers=2) as pool:
        names = [shm.name for shm in pool._res.segments.values()]
        assert names and all(
            re.fullmatch(rf"numpycnn-{os.getpid()}-{own_start()}-[0-9a-f]{{8}}", n) for n in names
        ), names
        assert parallel.remove_stale_segments() is not None  # a live pool's are kept:
        assert all((SHM / n).exists() for n in names)


def test_only_the_segments_of_gone_owners_are_removed(tmp_path):
    me, start, gone = os.getpid(), own_start(), dead_pid()
    # name: the owner pid reported if it must be removed, else None
    names = {
        f"numpycnn-{gone}-12345-0badf00d": gone,  # its process has exited
        f"numpycnn-{gone}-0a1b2c3d": gone,  # the older name, without a start time
        f"numpycnn-{me}-{start + 1}-0badf00d": me,  # the pid now belongs to another process
        f"numpycnn-{me}-{start}-0badf00d": None,  # this live process's
        f"numpycnn-{me}-0-0badf00d": None,  # start time unknown: the pid is alive
        f"numpycnn-{me}-0a1b2c3d": None,
        f"other-{gone}-12345-0badf00d": None,  # not ours
        f"numpycnn-{gone}-12345-0badf00d.x": None,
    }
    for name in names:
        (tmp_path / name).write_bytes(b"x" * 100)

    removed = parallel.remove_stale_segments(tmp_path)

    assert sorted(removed) == sorted((n, pid, 100) for n, pid in names.items() if pid)
    kept = sorted(n for n, pid in names.items() if pid is None)
    assert sorted(p.name for p in tmp_path.iterdir()) == kept
    assert parallel.remove_stale_segments(tmp_path) == []
    assert parallel.remove_stale_segments(tmp_path / "missing") == []


@pytest.fixture
def killed_run(tmp_path, mnist_dir):
    """A real `train --workers 2` in a process group of its own, killed with SIGKILL while
    it trains; yields its pid. Whatever it leaves is removed at the end, test passed or not."""
    config = tiny_config(tmp_path, epochs=100, limit=2000, batch_size=20, params="p.pkl")
    command = [
        sys.executable, "-m", "numpycnn.cli.main", "train", "-c", str(config), "--quiet",
        "--workers", "2", "--data-dir", str(tmp_path / "data"), "--mirror", str(mnist_dir),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "runs" / "tiny" / "last.pkl").exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        yield process.pid
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()
        process.stderr.close()
        for path in SHM.glob(f"numpycnn-{process.pid}-*"):
            path.unlink(missing_ok=True)


def test_the_next_command_removes_a_killed_runs_segments_and_says_so(
    killed_run, tmp_path, mnist_dir, monkeypatch
):
    deadline = time.monotonic() + 30  # the group's processes are gone, their memory not
    while group_alive(killed_run) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_alive(killed_run) == []
    left = sorted(p.name for p in SHM.glob(f"numpycnn-{killed_run}-*"))
    assert len(left) >= 3, left  # state, data and batch: nobody removed them
    size = sum((SHM / n).stat().st_size for n in left)

    # meanwhile this process runs a pool of its own: its segments must stay (it would
    # remove the killed run's segments itself on starting, silently: not here)
    monkeypatch.setattr(parallel, "remove_stale_segments", lambda: [], raising=False)
    model = Sequential([{"type": "flatten"}, {"type": "dense", "units": 10}], input_shape=(4,))
    with parallel.WorkerPool(model, np.zeros((8, 4), np.float32), np.zeros(8, np.int64)) as pool:
        mine = [shm.name for shm in pool._res.segments.values()]
        config = tiny_config(tmp_path, "next.yaml", limit=100, params="next.pkl", run_name="n")
        child = subprocess.run(
            [sys.executable, "-m", "numpycnn.cli.main", "train", "-c", str(config), "--quiet",
             "--workers", "1", "--data-dir", str(tmp_path / "data"), "--mirror", str(mnist_dir)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert child.returncode == 0, child.stderr
        assert all((SHM / n).exists() for n in mine)  # a live pool's segments are untouched

    assert list(SHM.glob(f"numpycnn-{killed_run}-*")) == []
    (line,) = child.stderr.splitlines()
    match = re.fullmatch(
        r"removed (\d+) shared-memory segments \(([\d,.]+) MB\) left by numpycnn "
        r"process(?:es)? ([\d, ]+), no longer running",
        line,
    )
    assert match, line
    assert str(killed_run) in match[3].split(", ")
    assert int(match[1]) >= len(left) and float(match[2].replace(",", "")) >= size / 1e6 - 0.05
