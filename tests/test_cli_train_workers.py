"""Training on worker processes: determinism and exact resume with 2 workers, and what a
run survives (a worker killed, SIGTERM, Ctrl-C) with real processes, leaving nothing behind."""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import fake_mnist, invoke, same_params, tiny_config, write_config

import numpycnn
from numpycnn import data
from numpycnn.modelfile import load_model


@pytest.fixture(autouse=True)
def offline(monkeypatch, mnist_dir):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.MIRROR_ENV, str(mnist_dir))


def segments(pid):
    """The shared-memory segments of process ``pid`` (the pool names them after its owner)."""
    return {p.name for p in Path("/dev/shm").glob(f"numpycnn-{pid}-*")}


def children(pid):
    """The pids of the direct children of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def is_worker(pid):
    try:
        return b"resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text(
    ).split()[2]  # fmt: skip


def test_two_workers_are_deterministic_and_resume_exactly(tmp_path):
    config = tiny_config(tmp_path, epochs=3, limit=600, validation=100, batch_size=40)
    a = numpycnn.train(config, workers=2, name="a", out=tmp_path / "a.pkl")
    b = numpycnn.train(config, workers=2, name="b", out=tmp_path / "b.pkl")
    assert a.metrics["workers"] == 2 and load_model(a.params).metrics["workers"] == 2
    assert same_params(a.params, b.params)  # bit for bit, run after run

    calls = iter(range(10**6))
    stopped = numpycnn.train(
        config,
        workers=2,
        name="c",
        callbacks=numpycnn.Callbacks(should_stop=lambda: next(calls) >= 22),
    )
    assert not stopped.finished
    resumed = numpycnn.train(resume=stopped.folder.path, workers=2, out=tmp_path / "c.pkl")
    assert same_params(a.params, resumed.params)
    assert [s.train_loss for s in resumed.history] == [s.train_loss for s in a.history]

    # one worker differs from two only in the summation order of the share gradients
    one = numpycnn.train(config, workers=1, name="one", out=tmp_path / "one.pkl")
    for p1, p2 in zip(one.model.get_params(), a.model.get_params()):
        np.testing.assert_allclose(p1, p2, rtol=1e-3, atol=1e-4)
    assert segments(os.getpid()) == set()


def test_one_worker_trains_without_a_pool(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir)

    def no_pool(*args, **kwargs):
        raise AssertionError("a pool was started for --workers 1")

    monkeypatch.setattr("numpycnn.parallel.WorkerPool", no_pool)
    result = invoke("train", "-c", tiny_config(tmp_path, limit=100), "--workers", 1)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith(", 1 worker")


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset is not installed")
def test_one_cpu_means_one_worker(tmp_path, mnist_dir):
    config = tiny_config(tmp_path, limit=100)
    child = subprocess.run(
        ["taskset", "-c", "0", sys.executable, "-m", "numpycnn.cli.main", "train", "-c",
         str(config), "--data-dir", str(tmp_path / "data")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert child.returncode == 0, child.stderr
    assert child.stdout.splitlines()[1].endswith(", 1 worker")


def start_training(tmp_path, mnist_dir, epochs=50):
    config = tiny_config(tmp_path, epochs=epochs, limit=3000, batch_size=20, params="p.pkl")
    (tmp_path / "p.pkl").write_bytes(b"the user's earlier model")
    command = [
        sys.executable, "-m", "numpycnn.cli.main", "train", "-c", str(config), "--quiet",
        "--workers", "2", "--data-dir", str(tmp_path / "data"), "--mirror", str(mnist_dir),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    last = tmp_path / "runs" / "tiny" / "last.pkl"
    deadline = time.monotonic() + 90
    while not last.exists():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no checkpoint after 90 s"
        time.sleep(0.02)
    time.sleep(0.3)  # into the next epoch
    helpers = [pid for pid in children(process.pid) if is_worker(pid)]
    assert len(helpers) == 1, helpers  # worker 0 is the command itself, worker 1 its helper
    return process, helpers, last


def finish(process, timeout=15):
    started = time.monotonic()
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return stdout, stderr, time.monotonic() - started


def assert_nothing_left(tmp_path, process, workers, last):
    deadline = time.monotonic() + 5
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(w) for w in workers), "a worker outlived the command"
    assert segments(process.pid) == set(), segments(process.pid)
    assert (tmp_path / "p.pkl").read_bytes() == b"the user's earlier model"
    assert load_model(last).checkpoint["epoch"] >= 1  # the last completed checkpoint is whole


def test_a_worker_killed_mid_epoch_ends_the_command_with_one_line(tmp_path, mnist_dir):
    process, helpers, last = start_training(tmp_path, mnist_dir)
    os.kill(helpers[0], signal.SIGKILL)
    stdout, stderr, took = finish(process)

    assert process.returncode == 1 and took < 10
    assert "Traceback" not in stderr
    (line,) = stderr.splitlines()
    folder = re.escape(str(last.parent))
    assert re.fullmatch(
        rf"Error: worker 1 \(pid {helpers[0]}\) was killed by signal 9 \(SIGKILL\): training "
        rf"stopped; continue from {folder}/last.pkl \(after epoch \d+\) with numpycnn train "
        rf"--resume {folder}",
        line,
    ), line
    assert_nothing_left(tmp_path, process, helpers, last)


def test_sigterm_saves_stops_and_exits_143(tmp_path, mnist_dir):
    """SIGTERM stops between batches and saves, as a first Ctrl-C does (a scheduler's
    SIGTERM before a SIGKILL should not lose the epoch), and exits 128 + 15."""
    process, workers, last = start_training(tmp_path, mnist_dir)
    process.send_signal(signal.SIGTERM)
    stdout, stderr, took = finish(process)

    assert process.returncode == 143 and took < 10
    assert stderr.splitlines() == [
        f"terminated: checkpoint saved to {last}; continue with numpycnn train --resume "
        f"{last.parent}"
    ]
    assert_nothing_left(tmp_path, process, workers, last)


def test_ctrl_c_with_workers_saves_stops_and_leaves_nothing(tmp_path, mnist_dir):
    process, workers, last = start_training(tmp_path, mnist_dir)
    process.send_signal(signal.SIGINT)
    stdout, stderr, took = finish(process)

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1].startswith("interrupted: checkpoint saved to ")
    assert_nothing_left(tmp_path, process, workers, last)
    assert load_model(last).checkpoint["epoch"] < 50  # stopped mid-run, resumable


BN_NETWORK = [
    {"type": "conv2d", "filters": 4, "kernel": 5},
    {"type": "maxpool2d", "size": 2},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 16},
    {"type": "batchnorm1d"},
    {"type": "relu"},
    {"type": "dropout", "p": 0.2},
    {"type": "dense", "units": 10},
]


def test_batchnorm_and_dropout_on_two_workers_resume_exactly(tmp_path):
    """A stopped run of a batch-norm and dropout network on 2 workers resumes bit for bit:
    parameters, running statistics (in the pool's shared memory meanwhile) and losses."""
    config = write_config(
        tmp_path / "bn.yaml",
        network=BN_NETWORK,
        data={"limit": 600, "validation": 100},
        training={"epochs": 2, "batch_size": 40, "seed": 3, "optimizer": {"name": "adam"}},
        output={"runs_dir": str(tmp_path / "runs"), "snapshots": False},
    )
    whole = numpycnn.train(config, workers=2, name="whole", out=tmp_path / "whole.pkl")
    calls = iter(range(10**6))
    stopped = numpycnn.train(
        config,
        workers=2,
        name="stopped",
        callbacks=numpycnn.Callbacks(should_stop=lambda: next(calls) >= 20),
    )
    assert not stopped.finished
    resumed = numpycnn.train(resume=stopped.folder.path, workers=2, out=tmp_path / "r.pkl")
    assert same_params(whole.params, resumed.params)
    a, b = load_model(whole.params).model, load_model(resumed.params).model
    np.testing.assert_array_equal(a.flat_state, b.flat_state)
    assert a.flat_state[8] == 30  # the first batch norm's batch count: 2 epochs of 15
    assert [s.train_loss for s in resumed.history] == [s.train_loss for s in whole.history]
    assert segments(os.getpid()) == set()
