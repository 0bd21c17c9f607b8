"""Reading a run as it trains: steps.csv, status.json and the state a reader derives, for
runs that finish, stop, fail, resume, or are killed (a real process)."""

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import TINY_NETWORK, fake_mnist, tiny_config

import numpycnn
from numpycnn import runlog
from numpycnn.config import (
    Config,
    ConfigError,
    DataConfig,
    OutputConfig,
    TrainingConfig,
    load_config,
)
from numpycnn.runs import RunFolderError
from numpycnn.training import Diverged


@pytest.fixture
def loader(monkeypatch, mnist_dir):
    return fake_mnist(monkeypatch, mnist_dir, test_limit=500)


def tiny(tmp_path, epochs=3, optimizer=None, **output):
    training = TrainingConfig(epochs=epochs, batch_size=20, seed=7)
    if optimizer is not None:
        training = Config.from_dict(
            {"training": {"epochs": epochs, "batch_size": 20, "optimizer": optimizer}}
        ).training
    return Config(
        network=tuple(TINY_NETWORK),
        data=DataConfig(limit=400, validation=100, data_dir=str(tmp_path / "data")),
        training=training,
        output=OutputConfig(params=str(tmp_path / "p.pkl"), runs_dir=str(tmp_path / "runs"),
                            **output),
    )  # fmt: skip


def lr_of(result, step):
    """The rate the run's schedule gives step ``step`` (from 0)."""
    t = result.config.training
    return t.make_schedule().lr(step, t.optimizer.hyperparameters["lr"], 20, 60)


def without_times(folder):
    """steps.csv's lines without the seconds column."""
    lines = (folder / runlog.STEPS).read_text().splitlines()
    return [line.rsplit(",", 1)[0] for line in lines]


def test_a_finished_run_reads_back_as_it_trained(tmp_path, loader):
    result = numpycnn.train(tiny(tmp_path), workers=1)
    folder = result.folder.path
    view = runlog.read_run(folder)

    assert view["state"] == "finished" and view["error"] is None
    assert view["step"] == view["total_steps"] == 60 and view["steps_per_epoch"] == 20
    batches = view["per_batch"]
    assert batches["step"] == list(range(1, 61))
    assert batches["epoch"] == [1] * 20 + [2] * 20 + [3] * 20
    assert batches["batch"] == list(range(1, 21)) * 3
    cost = numpycnn.modelfile.load_model(folder / "last.pkl").cost
    np.testing.assert_allclose(batches["loss"], cost, rtol=1e-8)
    # the rate of step k (from 0) is logged on row k + 1
    assert batches["lr"] == pytest.approx([lr_of(result, k) for k in range(60)], rel=1e-8)
    assert batches["seconds"] == sorted(batches["seconds"])
    epochs = view["per_epoch"]
    assert epochs["epoch"] == [1, 2, 3]
    assert epochs["val_accuracy"] == pytest.approx([s.val_accuracy for s in result.history])
    # the running accuracy at an epoch's last batch is that epoch's train accuracy
    ends = [batches["accuracy"][i] for i in (19, 39, 59)]
    assert ends == pytest.approx([s.train_accuracy for s in result.history])
    # since: only what came after
    later = runlog.read_run(folder, since=55)["per_batch"]
    assert later["step"] == [56, 57, 58, 59, 60]


def test_resume_keeps_the_log_and_snapshots_of_an_uninterrupted_run(tmp_path, loader):
    config = tiny(tmp_path)
    done = []
    stop = numpycnn.Callbacks(
        on_batch=lambda t, loss, acc: done.append(1), should_stop=lambda: len(done) >= 33
    )
    stopped = numpycnn.train(config, callbacks=stop, workers=1, name="stopped")
    folder = stopped.folder.path
    assert runlog.read_run(folder)["state"] == "stopped"
    # as if a second signal had cut the run short after last.pkl: later rows, a torn line,
    # a later snapshot and a writer's temporary file
    with open(folder / runlog.STEPS, "a") as f:
        f.write("34,2,14,9.9,0.5,0.003,1.0\n35,2,15,9.9,0.5,0.003,1.1\n36,2,1")
    snaps = folder / runlog.SNAPSHOTS
    shutil.copy(snaps / "step-0000033.npz", snaps / "step-0000040.npz")
    (snaps / ".step-0000041.npz.0123456789ab.tmp").write_bytes(b"half")
    assert runlog.read_run(folder)["per_batch"]["step"][-1] == 35  # the torn line left out

    resumed = numpycnn.train(resume=folder, workers=1)
    straight = numpycnn.train(config, workers=1, name="straight", out=tmp_path / "s.pkl")

    assert resumed.finished and runlog.read_run(folder)["state"] == "finished"
    assert without_times(folder) == without_times(straight.folder.path)
    seconds = runlog.read_run(folder)["per_batch"]["seconds"]
    assert seconds == sorted(seconds)  # the clock continues across the resume
    mine, theirs = runlog.list_snapshots(folder), runlog.list_snapshots(straight.folder.path)
    assert [s.step for s in mine] == [s.step for s in theirs] == runlog.snapshot_steps(60, 20)
    for a, b in zip(mine, theirs):
        np.testing.assert_array_equal(np.load(a.path)["params"], np.load(b.path)["params"])
    assert sorted(p.name for p in snaps.iterdir()) == [s.path.name for s in mine]

    # resuming from an earlier checkpoint branches a new folder with the history up to it
    branch = numpycnn.train(resume=folder / "best.pkl", workers=1, out=tmp_path / "b.pkl")
    assert branch.folder.path != folder
    assert without_times(branch.folder.path) == without_times(folder)
    assert [s.step for s in runlog.list_snapshots(branch.folder.path)] == [s.step for s in mine]


def test_a_failed_run_says_why(tmp_path, loader):
    config = tiny(tmp_path, optimizer={"name": "sgd", "lr": 1e12})
    with pytest.raises(Diverged):
        numpycnn.train(config, workers=1)
    view = runlog.read_run(tmp_path / "runs" / "train")
    assert view["state"] == "failed"
    assert view["error"].startswith("the loss became nan at epoch 1, batch ")


def test_old_run_folders_and_broken_files_still_open(tmp_path, loader):
    result = numpycnn.train(tiny(tmp_path, epochs=1), workers=1)
    folder = result.folder.path
    # a folder from before this existed: no log, no status, no snapshots
    for name in (runlog.STEPS, runlog.STATUS):
        (folder / name).unlink()
    shutil.rmtree(folder / runlog.SNAPSHOTS)
    view = runlog.read_run(folder)
    assert view["state"] == "finished"  # results.csv holds every planned epoch
    assert view["per_batch"]["step"] == [] and view["per_epoch"]["epoch"] == [1]
    assert runlog.list_snapshots(folder) == []
    # a snapshot file that is not one is left out, not an error
    (folder / runlog.SNAPSHOTS).mkdir()
    (folder / runlog.SNAPSHOTS / "step-0000005.npz").write_bytes(b"not a zip")
    assert runlog.list_snapshots(folder) == []
    with pytest.raises(RunFolderError, match="step-0000005.npz: cannot read the snapshot"):
        runlog.load_snapshot(folder, 5)
    with pytest.raises(RunFolderError, match="not a run folder"):
        runlog.read_run(tmp_path)


def test_output_snapshots_is_validated(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("output: {snapshots: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: output.snapshots: expected true or false"):
        load_config(bad)
    ini = tmp_path / "off.ini"
    ini.write_text("[output]\nsnapshots = false\n")
    assert load_config(ini).output.snapshots is False


def wait_for(condition, what, process, timeout=60):
    """Poll ``condition`` until true; fail if ``process`` ended or ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"no {what} after {timeout} s"
        time.sleep(0.02)


def test_a_reader_follows_a_real_training_and_sees_it_killed(tmp_path, mnist_dir):
    config = tiny_config(tmp_path, epochs=20, limit=20_000, batch_size=10)
    folder = tmp_path / "runs" / "tiny"
    command = [
        sys.executable, "-m", "numpycnn.cli.main", "train", "-c", str(config), "--quiet",
        "--workers", "1", "--data-dir", str(tmp_path / "data"), "--mirror", str(mnist_dir),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: (folder / runlog.STEPS).exists(), "steps.csv", process)
        wait_for(lambda: runlog.read_run(folder)["step"], "logged step", process)
        first = runlog.read_run(folder)
        assert first["state"] == "running" and first["pid"] == process.pid
        assert first["total_steps"] == 40_000
        wait_for(lambda: runlog.read_run(folder)["step"] > first["step"], "growth", process)
        second = runlog.read_run(folder, since=first["step"])
        assert second["per_batch"]["step"][0] == first["step"] + 1
        for snap in runlog.list_snapshots(folder):  # whole files, even while written
            assert np.load(snap.path)["params"].shape == (1490,)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert runlog.read_status(folder)["state"] == "running"  # what the killed process left
    view = runlog.read_run(folder)
    assert view["state"] == "crashed"
    assert view["step"] < view["total_steps"]


def test_a_killed_process_not_yet_reaped_or_a_reused_pid_is_not_the_run():
    from numpycnn.procinfo import alive, start_time

    me = os.getpid()
    assert alive(me, start_time(me)) and alive(me, None)
    assert not alive(me, start_time(me) + 1)  # another process under the same pid
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        started = start_time(child.pid)
        assert alive(child.pid, started)
        child.kill()
        deadline = time.monotonic() + 30
        while alive(child.pid, started):  # a zombie until reaped below
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert child.poll() is not None  # reaped only now: it was a zombie just before
    finally:
        child.kill()
        child.wait()
    assert not alive(child.pid, started) and not alive(None, None)
