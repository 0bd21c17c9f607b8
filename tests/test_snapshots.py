"""Parameter snapshots in the run folder: which steps, what they hold, and a writer that
never holds up the training loop."""

import dataclasses
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import TINY_NETWORK, fake_mnist, real_mnist

import numpycnn
from numpycnn import runlog
from numpycnn.config import Config, DataConfig, OutputConfig, TrainingConfig
from numpycnn.data import Normalization
from numpycnn.engine import Sequential
from numpycnn.modelfile import load_model
from numpycnn.runs import RunFolderError


@pytest.mark.parametrize(
    "total, per_epoch",
    [(200, 200), (200, 50), (300, 6), (860 * 4, 860), (1000, 100), (5000, 5000),
     (12_000, 400), (20_000, 1000), (20_000, 20_000), (20_000, 400)],
)  # fmt: skip
def test_snapshot_steps_are_log_spaced_with_every_epoch_end(total, per_epoch):
    steps = runlog.snapshot_steps(total, per_epoch)

    assert steps == sorted(set(steps)) and steps[0] == 0 and steps[-1] == total
    assert set(range(per_epoch, total + 1, per_epoch)) <= set(steps)  # every epoch's end
    assert 40 <= len(steps) <= 80
    assert steps[:4] == [0, 1, 2, 3]  # dense at the start, where the network moves most
    # roughly even on a log scale: no gap wider than a factor 1.6 past the first ten steps
    assert max(b / a for a, b in zip(steps, steps[1:]) if a >= 10) <= 1.6
    # and no crowding late: at most a third of them in the last half of the run
    assert sum(s > total / 2 for s in steps) <= len(steps) / 3 + total // per_epoch / 2


def test_a_short_run_keeps_every_step_and_the_default_run_stays_small():
    assert runlog.snapshot_steps(30, 10) == list(range(31))
    assert runlog.snapshot_steps(0, 10) == [0]
    default = runlog.snapshot_steps(4 * 860, 860)  # the default recipe: 55,000 images, batch 64
    assert len(default) * 105_634 * 4 < 20e6  # its float32 snapshots, under 20 MB


@pytest.fixture
def loader(monkeypatch, mnist_dir):
    return fake_mnist(monkeypatch, mnist_dir, test_limit=2000)


def tiny(tmp_path, **output):
    return Config(
        network=tuple(TINY_NETWORK),
        data=DataConfig(limit=600, validation=100, data_dir=str(tmp_path / "data")),
        training=TrainingConfig(epochs=2, batch_size=20, seed=4),
        output=OutputConfig(params=str(tmp_path / "p.pkl"), runs_dir=str(tmp_path / "runs"),
                            **output),
    )  # fmt: skip


def test_snapshots_hold_the_parameters_of_their_steps(tmp_path, loader, mnist_dir):
    config = tiny(tmp_path, save_epochs=True)
    result = numpycnn.train(config, workers=1)
    folder = result.folder.path
    snaps = runlog.list_snapshots(folder)

    assert [s.step for s in snaps] == runlog.snapshot_steps(60, 30)
    assert [s.epoch for s in snaps] == [s.step / 30 for s in snaps]
    times = [s.time for s in snaps]
    assert times[0] == 0.0 and times == sorted(times)
    # step 0 is the initialisation drawn from the seed
    t = config.training
    init = Sequential(config.network, loss=t.loss, init=t.init, dtype=t.dtype, seed=t.seed)
    first = runlog.load_snapshot(folder, 0).network.flat_params
    np.testing.assert_array_equal(first, init.flat_params)
    assert first.dtype == np.float32
    # an epoch's end is that epoch's checkpoint
    np.testing.assert_array_equal(
        runlog.load_snapshot(folder, 30).network.flat_params,
        load_model(folder / "epoch-001.pkl").model.flat_params,
    )
    # the last step is the final model: the same predictions on the test images
    last, final = runlog.load_snapshot(folder, 60), numpycnn.load(tmp_path / "p.pkl")
    test = real_mnist(mnist_dir).test_images
    np.testing.assert_array_equal(last.predict_proba(test), final.predict_proba(test))
    assert last.normalization == final.normalization
    # the one before differs from the last (they are copies, not views)
    before = runlog.load_snapshot(folder, snaps[-2].step).network.flat_params
    assert not np.array_equal(before, last.network.flat_params)
    assert not list((folder / "snapshots").glob(".*"))  # no temporary file left


def test_snapshots_off_keeps_the_log_only(tmp_path, loader):
    result = numpycnn.train(tiny(tmp_path, snapshots=False), workers=1)
    folder = result.folder.path

    assert runlog.list_snapshots(folder) == []
    assert not (folder / "snapshots").exists()
    view = runlog.read_run(folder)
    assert view["state"] == "finished" and view["per_batch"]["step"] == list(range(1, 61))
    with pytest.raises(RunFolderError, match="no snapshot at step 0"):
        runlog.load_snapshot(folder, 0)


def test_a_writer_that_falls_behind_drops_snapshots_and_never_blocks(tmp_path, monkeypatch):
    """The writer stuck on its first file: the loop's calls return at once, the snapshots
    that find the queue full are dropped and counted, and the last step's still lands."""
    monkeypatch.setattr(runlog, "QUEUE_BYTES", 1)  # a queue of two copies
    model = Sequential(TINY_NETWORK, seed=1)
    trainer = SimpleNamespace(
        model=model, batches_per_epoch=10, total_steps=10, epochs=1, epoch=0, batch=0,
        optimizer=SimpleNamespace(lr=0.1),
    )  # fmt: skip
    entered, release = threading.Event(), threading.Event()
    write = runlog.Recorder._write_snapshot

    def stuck(self, step, params, seconds):
        entered.set()
        assert release.wait(30)
        write(self, step, params, seconds)

    monkeypatch.setattr(runlog.Recorder, "_write_snapshot", stuck)
    (tmp_path / "run").mkdir()
    norm = Normalization("unit", 0.0, 255.0)
    expected = {0: model.flat_params.copy()}
    with runlog.Recorder(tmp_path / "run", trainer, norm) as recorder:
        assert entered.wait(30)  # step 0's copy is in the writer's hands

        def steps():
            for batch in range(1, 10):
                trainer.batch = batch
                model.flat_params += 1  # as an optimiser step would
                expected[batch] = model.flat_params.copy()
                recorder.on_batch(trainer, 0.5, 0.25)

        loop = threading.Thread(target=steps, daemon=True)
        loop.start()
        try:
            loop.join(30)
            assert not loop.is_alive(), "the training loop waited for the writer"
            assert recorder.dropped == 7  # steps 1 and 2 wait in the queue; 3 to 9 dropped
        finally:
            release.set()
        trainer.batch = 10
        model.flat_params += 1
        expected[10] = model.flat_params.copy()
        recorder.on_batch(trainer, 0.5, 0.25)
        recorder.end("finished")

    snaps = runlog.list_snapshots(tmp_path / "run")
    assert [s.step for s in snaps] == [0, 1, 2, 10]
    for snap in snaps:  # each holds its own step's parameters
        np.testing.assert_array_equal(np.load(snap.path)["params"], expected[snap.step])
    assert runlog.read_status(tmp_path / "run")["snapshots_dropped"] == 7
    assert len(runlog._steps_rows(tmp_path / "run" / runlog.STEPS)) == 10  # no row dropped


def test_a_log_that_cannot_be_written_ends_the_log_not_the_run(tmp_path):
    class FullDisk:
        def write(self, text):
            raise OSError(28, "No space left on device")

        def close(self):
            pass

    model = Sequential(TINY_NETWORK, seed=1)
    trainer = SimpleNamespace(
        model=model, batches_per_epoch=5, total_steps=5, epochs=1, epoch=0, batch=1,
        optimizer=SimpleNamespace(lr=0.1),
    )  # fmt: skip
    (tmp_path / "run").mkdir()
    with runlog.Recorder(tmp_path / "run", trainer, Normalization("unit", 0.0, 255.0)) as rec:
        rec._log = FullDisk()
        rec.on_batch(trainer, 0.5, 0.25)  # no error: the run goes on
        trainer.batch = 2
        rec.on_batch(trainer, 0.5, 0.25)
        rec.end("finished")
    assert runlog.read_status(tmp_path / "run")["state"] == "finished"
    assert [s.step for s in runlog.list_snapshots(tmp_path / "run")] == [1, 2]


def test_a_batchnorm_networks_snapshot_keeps_its_running_statistics(tmp_path, loader, mnist_dir):
    network = (
        {"type": "conv2d", "filters": 2, "kernel": 5, "stride": 1, "padding": 0},
        {"type": "batchnorm2d", "momentum": 0.1, "eps": 1e-5},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "dense", "units": 10},
    )
    config = dataclasses.replace(tiny(tmp_path), network=network)
    result = numpycnn.train(config, workers=1)
    last = runlog.load_snapshot(result.folder.path, 60)
    final = numpycnn.load(tmp_path / "p.pkl")
    np.testing.assert_array_equal(last.network.flat_state, final.network.flat_state)
    assert last.network.flat_state[-1] == 60  # the batch count: every step's statistics
    test = real_mnist(mnist_dir).test_images[:500]
    np.testing.assert_array_equal(last.predict_proba(test), final.predict_proba(test))
