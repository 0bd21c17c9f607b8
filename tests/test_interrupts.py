"""Ctrl-C and SIGTERM of every command, at many moments, with real processes and signals.

Each command runs in a process (and process group) of its own. A signal is sent from
outside, or by the process to itself from a hook placed at an exact moment (while the data
loads, in the middle of an epoch, while a checkpoint is written, while the worker pool
closes): ``os.kill(os.getpid(), sig)`` is a real signal, delivered as one from outside
would be, only at a moment a test can choose. Every interrupt must end the command with
exactly one true line on stderr and exit status 130 (SIGINT) or 143 (SIGTERM): no
traceback, no click "Aborted!", no resource_tracker warning, and no process, shared-memory
segment or temporary file left behind.
"""

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import tiny_config
from PIL import Image

from numpycnn.modelfile import load_model

RUNNER = textwrap.dedent(
    """
    import os, signal, sys
    hits = {}

    def hit(key):
        hits[key] = hits.get(key, 0) + 1
        return hits[key]

    def send(sig):
        os.kill(os.getpid(), sig)

    SIG = getattr(signal, os.environ["TEST_SIGNAL"])
    main_pid = os.getpid()
    """
)

FORBIDDEN = ("Traceback", "Aborted", "resource_tracker", "leaked", "Exception ignored")


class Commands:
    """Starts commands in process groups of their own; at the end kills whatever is left of
    those groups and removes any segment named after their processes, so that no test,
    passing or failing, leaves anything behind."""

    def __init__(self, tmp_path, mnist_dir):
        self.tmp_path, self.mnist_dir, self.started = tmp_path, mnist_dir, []

    def start(self, *args, hooks="", sig="SIGINT", data=True):
        code = (
            RUNNER
            + textwrap.dedent(hooks)
            + ("\nfrom numpycnn.cli.main import main\nmain(prog_name='numpycnn')\n")
        )
        extra = ["--data-dir", str(self.tmp_path / "data"), "--mirror", str(self.mnist_dir)]
        command = [sys.executable, "-c", code, *map(str, args), *(extra if data else [])]
        env = {**os.environ, "TEST_SIGNAL": sig, "COLUMNS": "200"}
        process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=self.tmp_path,
            start_new_session=True,
        )
        self.started.append(process)
        return process

    def finish(self, process, timeout=60):
        try:
            return process.communicate(timeout=timeout)
        finally:
            self.kill(process)

    def kill(self, process):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()

    def cleanup(self):
        for process in self.started:
            self.kill(process)
            for path in Path("/dev/shm").glob(f"numpycnn-{process.pid}-*"):
                path.unlink(missing_ok=True)


@pytest.fixture
def commands(tmp_path, mnist_dir):
    c = Commands(tmp_path, mnist_dir)
    yield c
    c.cleanup()


def group_alive(pgid):
    """The live processes of process group ``pgid`` (zombies excluded)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def assert_clean_end(process, stderr, code, tmp_path):
    """One line on stderr, the exit status, and nothing left: returns the line."""
    assert process.returncode == code, stderr
    for word in FORBIDDEN:
        assert word not in stderr, stderr
    # progress lines of a first download (one per file off a terminal) are not messages
    lines = [line for line in stderr.splitlines() if not line.startswith("downloading ")]
    assert len(lines) == 1, stderr
    deadline = time.monotonic() + 5
    while group_alive(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert group_alive(process.pid) == [], "a process of the command outlived it"
    assert list(Path("/dev/shm").glob(f"numpycnn-{process.pid}-*")) == []
    leftovers = [p for p in tmp_path.rglob(".*") if p.suffix in (".tmp", ".part")]
    assert leftovers == [], leftovers
    return lines[0]


def train_config(tmp_path, epochs=4):
    return tiny_config(tmp_path, epochs=epochs, limit=600, batch_size=50, params="p.pkl")


def checkpoint_position(last):
    state = load_model(last).checkpoint
    return int(state["epoch"]), int(state["batch"])


# ----- train -----

# hooks that send the test's signal at one moment of a training run
MOMENTS = {
    "loading the data": """
        import numpycnn.datasets.mnist
        load = numpycnn.datasets.mnist.load_mnist
        def hooked(*args, **kwargs):
            send(SIG)
            return load(*args, **kwargs)
        numpycnn.datasets.mnist.load_mnist = hooked
        """,
    "starting the workers": """
        import numpycnn.parallel
        start = numpycnn.parallel.WorkerPool._start
        def hooked(self, *args):
            send(SIG)
            return start(self, *args)
        numpycnn.parallel.WorkerPool._start = hooked
        """,
    "mid-epoch": """
        import numpycnn.parallel
        step = numpycnn.parallel.WorkerPool.step
        def hooked(self, *args):
            if hit("step") == 17:  # epoch 2 (12 batches an epoch), batch 5
                send(SIG)
            return step(self, *args)
        numpycnn.parallel.WorkerPool.step = hooked
        """,
    "writing a checkpoint": """
        import contextlib, numpycnn.modelfile
        write = numpycnn.modelfile.atomic_write
        @contextlib.contextmanager
        def hooked(name):
            with write(name) as f:
                yield f
                if str(name).endswith("last.pkl") and hit("last") == 1:  # epoch 1's last.pkl:
                    # written, not yet renamed
                    send(SIG)
        numpycnn.modelfile.atomic_write = hooked
        """,
}


@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("moment", list(MOMENTS))
def test_train_interrupted_at_any_moment_ends_with_one_true_line(commands, tmp_path, moment, sig):
    config = train_config(tmp_path)
    process = commands.start(
        "train", "-c", config, "--quiet", "--workers", 2, hooks=MOMENTS[moment], sig=sig
    )
    _, stderr = commands.finish(process)

    verb = "interrupted" if sig == "SIGINT" else "terminated"
    line = assert_clean_end(process, stderr, 130 if sig == "SIGINT" else 143, tmp_path)
    folder = tmp_path / "runs" / "tiny"
    last = folder / "last.pkl"
    if moment in ("loading the data", "starting the workers"):
        assert line == f"{verb} before training began: nothing to resume"
        assert not last.exists()
    else:  # the loop stops at the next batch and saves where it is
        assert line == (
            f"{verb}: checkpoint saved to {last}; continue with numpycnn train --resume {folder}"
        )
        expected = (1, 5) if moment == "mid-epoch" else (1, 0)  # (epochs done, batch)
        assert checkpoint_position(last) == expected
    assert not (tmp_path / "p.pkl").exists()


def test_train_interrupted_right_at_start(commands, tmp_path):
    """As soon as the command can catch signals (SIGTERM appears in /proc/PID/status's
    SigCgt): the signal is held until the command proper starts, then raised."""
    process = commands.start("train", "-c", train_config(tmp_path), "--quiet", hooks="")
    deadline = time.monotonic() + 30
    while True:
        status = Path(f"/proc/{process.pid}/status").read_text()
        caught = int(re.search(r"SigCgt:\s*([0-9a-f]+)", status)[1], 16)
        if caught & (1 << (signal.SIGTERM - 1)):
            break
        assert time.monotonic() < deadline
        time.sleep(0.001)
    process.send_signal(signal.SIGTERM)
    _, stderr = commands.finish(process)
    assert assert_clean_end(process, stderr, 143, tmp_path) == "terminated (SIGTERM)"


DOUBLE = {
    # the second Ctrl-C lands right after the stop's checkpoint is written (and renamed)
    "after the checkpoint": """
        import contextlib, numpycnn.modelfile, numpycnn.parallel
        step = numpycnn.parallel.WorkerPool.step
        def hooked_step(self, *args):
            if hit("step") == 17:
                send(SIG)
            return step(self, *args)
        numpycnn.parallel.WorkerPool.step = hooked_step
        write = numpycnn.modelfile.atomic_write
        @contextlib.contextmanager
        def hooked(name):
            with write(name) as f:
                yield f
            if str(name).endswith("last.pkl") and hit("last") == 2:  # the stop's checkpoint,
                # renamed into place
                send(SIG)
        numpycnn.modelfile.atomic_write = hooked
        """,
    # the second Ctrl-C lands while the worker pool unlinks its shared memory
    "while the pool closes": """
        import numpycnn.parallel
        step = numpycnn.parallel.WorkerPool.step
        def hooked_step(self, *args):
            if hit("step") == 17:
                send(SIG)
            return step(self, *args)
        numpycnn.parallel.WorkerPool.step = hooked_step
        release = numpycnn.parallel._release
        def hooked(shm, unlink):
            if os.getpid() == main_pid and hit("release") == 1:
                send(SIG)
            return release(shm, unlink)
        numpycnn.parallel._release = hooked
        """,
}


@pytest.mark.parametrize("moment", list(DOUBLE))
def test_a_second_ctrl_c_says_what_the_run_folder_holds(commands, tmp_path, moment):
    config = train_config(tmp_path)
    process = commands.start("train", "-c", config, "--quiet", "--workers", 2, hooks=DOUBLE[moment])
    _, stderr = commands.finish(process)

    line = assert_clean_end(process, stderr, 130, tmp_path)
    folder = tmp_path / "runs" / "tiny"
    last = folder / "last.pkl"
    epoch, batch = checkpoint_position(last)
    assert (epoch, batch) == (1, 5)  # the stop's checkpoint: it was written
    assert line == (
        f"interrupted again: stopped at once; continue from {last} (epoch 2, batch 5) with "
        f"numpycnn train --resume {folder}"
    )


def test_two_ctrl_c_from_outside_30_ms_apart(commands, tmp_path):
    process = commands.start("train", "-c", train_config(tmp_path, epochs=200), "--quiet")
    last = tmp_path / "runs" / "tiny" / "last.pkl"
    deadline = time.monotonic() + 60
    while not last.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGINT)
    time.sleep(0.03)
    process.send_signal(signal.SIGINT)
    _, stderr = commands.finish(process)

    line = assert_clean_end(process, stderr, 130, tmp_path)
    folder = last.parent
    epoch, batch = checkpoint_position(last)
    where = f"after epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"
    assert line in (
        f"interrupted: checkpoint saved to {last}; continue with numpycnn train --resume {folder}",
        f"interrupted again: stopped at once; continue from {last} ({where}) with numpycnn "
        f"train --resume {folder}",
    )


def test_sigterm_to_the_whole_process_group_saves_and_stops(commands, tmp_path):
    """As `kill -TERM -PGID`, a scheduler or a terminal's hang-up would: the helpers ignore
    it, so the command finishes its batch with them, saves and closes the pool."""
    process = commands.start("train", "-c", train_config(tmp_path, epochs=200), "--quiet")
    last = tmp_path / "runs" / "tiny" / "last.pkl"
    deadline = time.monotonic() + 60
    while not last.exists():
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    time.sleep(0.1)
    assert len(group_alive(process.pid)) >= 2  # the command, its helper (and its tracker)
    os.killpg(process.pid, signal.SIGTERM)
    _, stderr = commands.finish(process)

    line = assert_clean_end(process, stderr, 143, tmp_path)
    folder = last.parent
    assert line == (
        f"terminated: checkpoint saved to {last}; continue with numpycnn train --resume {folder}"
    )


# ----- eval and predict -----


@pytest.fixture
def model_file(tmp_path, mnist_dir):
    """A tiny trained model, and 130 digit images (enough for predict to use its workers)."""
    import numpycnn

    config = tiny_config(tmp_path, "model.yaml", limit=200, params="model.pkl", run_name="m")
    numpycnn.train(config, workers=1, data_dir=tmp_path / "data", mirrors=[str(mnist_dir)])
    digits = tmp_path / "digits"
    digits.mkdir()
    from cli_helpers import real_mnist

    for i, image in enumerate(real_mnist(str(mnist_dir)).test_images[:130]):
        Image.fromarray(image).save(digits / f"{i:03d}.png")
    return tmp_path / "model.pkl"


def eval_or_predict(command, model):
    if command == "eval":
        return ["eval", model, "--workers", 2], True
    return ["predict", model.parent / "digits", "--params", model, "--workers", 2], False


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_a_helper_killed_during_eval_or_predict_is_one_line(
    commands, tmp_path, model_file, command
):
    hooks = """
        import numpycnn.poolworker
        def dies(self, *args):
            os.kill(os.getpid(), signal.SIGKILL)  # the helper, in the middle of its share
        numpycnn.poolworker.Worker.predict = dies
        """
    args, data = eval_or_predict(command, model_file)
    process = commands.start(*args, hooks=hooks, data=data)
    _, stderr = commands.finish(process)

    line = assert_clean_end(process, stderr, 1, tmp_path)
    assert re.fullmatch(r"Error: worker 1 \(pid \d+\) was killed by signal 9 \(SIGKILL\)", line)


@pytest.mark.parametrize("to", ["process", "group"])
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_interrupted_mid_prediction(
    commands, tmp_path, model_file, command, sig, to, monkeypatch
):
    hooks = """
        import numpycnn.parallel
        predict = numpycnn.parallel.WorkerPool.predict_proba
        def hooked(self, *args):
            # the workers are started and their segments exist
            if os.environ["TEST_TO"] == "group":  # as a terminal's Ctrl-C does
                os.killpg(os.getpgid(0), SIG)
            else:
                send(SIG)
            return predict(self, *args)
        numpycnn.parallel.WorkerPool.predict_proba = hooked
        """
    monkeypatch.setenv("TEST_TO", to)  # read by the command's process, which inherits it
    args, data = eval_or_predict(command, model_file)
    process = commands.start(*args, hooks=hooks, sig=sig, data=data)
    _, stderr = commands.finish(process)

    code = 130 if sig == "SIGINT" else 143
    line = assert_clean_end(process, stderr, code, tmp_path)
    assert line == ("interrupted (SIGINT)" if sig == "SIGINT" else "terminated (SIGTERM)")


# ----- download and gradcheck -----


def test_download_interrupted_mid_file_removes_its_part(commands, tmp_path):
    hooks = """
        import numpycnn.data
        verify = numpycnn.data._verify
        def hooked(path, name):
            if hit("verify") == 1:  # the first file is copied, not yet renamed
                send(SIG)
            return verify(path, name)
        numpycnn.data._verify = hooked
        """
    process = commands.start("download", "--quiet", hooks=hooks)
    _, stderr = commands.finish(process)
    assert assert_clean_end(process, stderr, 130, tmp_path) == "interrupted (SIGINT)"
    assert list((tmp_path / "data" / "mnist").iterdir()) == []


def test_gradcheck_interrupted(commands, tmp_path):
    hooks = """
        import numpycnn.engine.gradcheck as g
        check = g.check_model
        def hooked(*args, **kwargs):
            send(SIG)
            return check(*args, **kwargs)
        g.check_model = hooked
        """
    process = commands.start("gradcheck", hooks=hooks, sig="SIGTERM", data=False)
    _, stderr = commands.finish(process)
    assert assert_clean_end(process, stderr, 143, tmp_path) == "terminated (SIGTERM)"


def test_a_json_summary_is_not_mixed_with_the_interrupt_line(commands, tmp_path):
    """--json prints nothing on stdout when the run is interrupted, the line on stderr."""
    process = commands.start(
        "train", "-c", train_config(tmp_path), "--json", "--workers", 2,
        hooks=MOMENTS["mid-epoch"],
    )  # fmt: skip
    stdout, stderr = commands.finish(process)
    assert assert_clean_end(process, stderr, 130, tmp_path).startswith("interrupted: checkpoint")
    with pytest.raises(json.JSONDecodeError):
        json.loads(stdout or "x")


def test_inspect_writing_figures_interrupted(commands, tmp_path, model_file):
    """inspect --save is a command like the others (its server's normal end is Ctrl-C: it
    says "stopped" and exits 0, tested with the server)."""
    pytest.importorskip("matplotlib")
    hooks = """
        import numpycnn.cli.inspect_figures as figures
        save = figures.save_figures
        def hooked(*args, **kwargs):
            for path in save(*args, **kwargs):
                send(SIG)  # after the first figure
                yield path
        figures.save_figures = hooked
        """
    process = commands.start(
        "inspect", model_file, "--save", tmp_path / "figures", hooks=hooks, data=False
    )
    stdout, stderr = commands.finish(process)
    assert assert_clean_end(process, stderr, 130, tmp_path) == "interrupted (SIGINT)"
