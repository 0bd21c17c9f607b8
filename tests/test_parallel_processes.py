"""The worker pool under fire, with real processes: a script trains through a pool while
the test kills one of its workers, or sends the script SIGTERM, SIGINT or SIGKILL. The
script must end promptly with one clear line, no worker may print a traceback, and no
process or shared-memory segment may outlive it."""

import glob
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

SCRIPT = textwrap.dedent(
    """
    import json, signal, sys
    import numpy as np
    from threadpoolctl import threadpool_limits
    from numpycnn.engine import reference_network
    from numpycnn.engine.optim import Adam
    from numpycnn.parallel import WorkerError, WorkerPool

    def main():
        method, handlers = sys.argv[1], sys.argv[2]
        stop = []
        if handlers == "cli":  # as a command line does: SIGTERM unwinds, so cleanup runs,
            signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
            # and the first Ctrl-C asks to stop between batches
            signal.signal(signal.SIGINT, lambda signum, frame: stop.append(signum))
        model, opt = reference_network(), Adam()
        rng = np.random.default_rng(0)
        x = rng.standard_normal((256, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 256)
        print("starting", flush=True)
        try:
            with threadpool_limits(1), WorkerPool(model, x, y, 2, method) as pool:
                print(json.dumps({"pids": pool.pids}), flush=True)
                while not stop:
                    pool.step(rng.integers(0, 256, 32))
                    opt.step(model.flat_params, model.flat_grads)
                pool.step(rng.integers(0, 256, 32))  # the workers are still there
                pool.predict(x)
                sys.exit("stopped between batches")
        except WorkerError as exc:
            sys.exit(f"Error: {exc}")
        except KeyboardInterrupt:
            sys.exit("interrupted")

    if __name__ == "__main__":
        main()
    """
)


def descendants(pid):
    """The pids of every process below ``pid`` (its children, theirs, ...)."""
    children = {}
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(stat) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.split("/")[2]))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def alive(pid):
    """Running (not gone and not a zombie waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def segments(pid):
    return glob.glob(f"/dev/shm/numpycnn-{pid}-*")


class Run:
    """The script, started in its own session (a terminal's Ctrl-C reaches the whole
    group), stepping through a pool of 2 workers."""

    def __init__(self, tmp_path, method, handlers="default"):
        script = tmp_path / "train_in_pool.py"
        script.write_text(SCRIPT)
        self.proc = subprocess.Popen(
            [sys.executable, str(script), method, handlers],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        assert self.proc.stdout.readline() == "starting\n", self.proc.communicate()[1]

    def started(self):
        """Wait for the pool to be up; note the processes and segments it made."""
        line = self.proc.stdout.readline()
        assert line, self.proc.communicate()[1]
        self.workers = json.loads(line)["pids"]
        time.sleep(0.3)  # let it step a little
        self.family = descendants(self.proc.pid)  # the helpers, the resource tracker, ...
        try:
            assert self.workers[0] == self.proc.pid  # worker 0 is the script itself
            assert set(self.workers[1:]) <= set(self.family)
            assert len(segments(self.proc.pid)) >= 2
        except AssertionError:  # a failing test leaves no training script running behind it
            self.kill_all()
            raise
        return self

    def finish(self, timeout=10):
        """Wait for the script's end: (exit code, stderr, seconds since asked)."""
        started = time.monotonic()
        try:
            _, stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_all()
            pytest.fail(f"the script did not end within {timeout} s")
        return self.proc.returncode, stderr, time.monotonic() - started

    def assert_nothing_left(self, within=5.0):
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            left = [p for p in self.family if alive(p)]
            if not left and not segments(self.proc.pid):
                return
            time.sleep(0.1)
        self.kill_all()
        pytest.fail(f"left behind: processes {left}, segments {segments(self.proc.pid)}")

    def kill_all(self):
        for pid in [self.proc.pid, *self.family]:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        for path in segments(self.proc.pid):
            os.unlink(path)


def assert_quiet(stderr, allowed=()):
    """Nothing on stderr but the allowed lines: no traceback, no leak warning."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert [line for line in lines if line not in allowed] == [], stderr


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_a_worker_killed_with_sigkill_ends_the_run_with_one_line(tmp_path, method):
    run = Run(tmp_path, method).started()
    os.kill(run.workers[1], signal.SIGKILL)
    code, stderr, seconds = run.finish()
    assert code == 1 and seconds < 5
    line = f"Error: worker 1 (pid {run.workers[1]}) was killed by signal 9 (SIGKILL)"
    assert_quiet(stderr, allowed=[line])
    run.assert_nothing_left()


@pytest.mark.parametrize(
    ("method", "handlers", "last_words"),
    [
        ("fork", "cli", "stopped between batches"),
        ("spawn", "cli", "stopped between batches"),
        ("fork", "default", "interrupted"),
    ],
    ids=["fork-handled", "spawn-handled", "fork-keyboardinterrupt"],
)
def test_sigint_to_the_group_reaches_only_the_main_process(tmp_path, method, handlers, last_words):
    """Ctrl-C in a terminal signals the whole group; the workers ignore it. With a handler
    the main process finishes its batch, steps once more and predicts; without one a
    KeyboardInterrupt may cut a request short, and the pool still closes cleanly."""
    run = Run(tmp_path, method, handlers).started()
    os.killpg(run.proc.pid, signal.SIGINT)
    code, stderr, seconds = run.finish()
    assert code == 1 and seconds < 5
    assert_quiet(stderr, allowed=[last_words])
    run.assert_nothing_left()


def test_sigterm_unwinding_closes_the_pool(tmp_path):
    run = Run(tmp_path, "fork", handlers="cli").started()
    os.kill(run.proc.pid, signal.SIGTERM)
    code, stderr, seconds = run.finish()
    assert code == 128 + signal.SIGTERM and seconds < 5
    assert_quiet(stderr)
    run.assert_nothing_left()


@pytest.mark.parametrize(
    ("method", "sig"),
    [("fork", signal.SIGKILL), ("spawn", signal.SIGTERM), ("forkserver", signal.SIGKILL)],
    ids=["fork-kill", "spawn-term", "forkserver-kill"],
)
def test_workers_and_segments_go_when_the_main_process_dies(tmp_path, method, sig):
    """No cleanup code runs in the main process: the workers notice their pipe close and
    exit, and the resource tracker unlinks what the dead owner registered (warning, rightly,
    that it found them leaked)."""
    run = Run(tmp_path, method).started()
    os.kill(run.proc.pid, sig)
    code, stderr, _ = run.finish()
    assert code == -sig
    assert "Traceback" not in stderr
    run.assert_nothing_left()


def test_ctrl_c_while_spawned_workers_start_up(tmp_path):
    """A spawned worker spends a while importing before it can ignore SIGINT: the pool
    holds the signal back from it until then, so the main process alone is interrupted."""
    run = Run(tmp_path, "spawn")
    time.sleep(0.05)
    run.family = descendants(run.proc.pid)  # the workers started so far, if any
    os.killpg(run.proc.pid, signal.SIGINT)
    code, stderr, seconds = run.finish()
    assert code == 1 and seconds < 10
    assert_quiet(stderr, allowed=["interrupted"])
    run.assert_nothing_left()
