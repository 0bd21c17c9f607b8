"""The Python API: ``numpycnn.train`` and ``numpycnn.load``, as a notebook would use them."""

import json

import numpy as np
import pytest
from cli_helpers import TINY_NETWORK, digit_files, invoke, real_mnist, same_params, tiny_config

import numpycnn
from numpycnn import data
from numpycnn.config import Config, DataConfig, OutputConfig, TrainingConfig
from numpycnn.imageprep import load_digit
from numpycnn.modelfile import load_model


@pytest.fixture(autouse=True)
def offline(monkeypatch, mnist_dir):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(data.MIRROR_ENV, str(mnist_dir))


def test_train_from_a_file_equals_the_cli(tmp_path):
    config = tiny_config(tmp_path, epochs=2, limit=300, validation=100)
    result = numpycnn.train(config, out=tmp_path / "api.pkl", data_dir=tmp_path / "data")

    assert result.finished and result.folder.path == tmp_path / "runs" / "tiny"
    assert [s.epoch for s in result.history] == [1, 2]
    assert result.params == tmp_path / "api.pkl"
    assert result.metrics["test_accuracy"] > 0.3

    cli = invoke("train", "-c", config, "--out", tmp_path / "cli.pkl", "-q",
                 "--data-dir", tmp_path / "data")  # fmt: skip
    assert cli.exit_code == 0, cli.output
    assert same_params(tmp_path / "api.pkl", tmp_path / "cli.pkl")
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny", "tiny-2"]
    for a, b in zip(result.model.get_params(), load_model(tmp_path / "cli.pkl").model.get_params()):
        np.testing.assert_array_equal(a, b)


def test_train_from_a_config_object_with_callbacks_and_a_stop(tmp_path):
    config = Config(
        network=tuple(TINY_NETWORK),
        data=DataConfig(limit=400, data_dir=str(tmp_path / "data")),
        training=TrainingConfig(epochs=3, batch_size=40, seed=5),
        output=OutputConfig(params=str(tmp_path / "p.pkl"), runs_dir=str(tmp_path / "runs")),
    )
    events = []
    callbacks = numpycnn.Callbacks(
        on_start=lambda start: events.append(("start", start.folder.path.name)),
        on_batch=lambda t, loss, acc: events.append(("batch", t.batch)),
        on_epoch=lambda t, stats, folder: events.append(("epoch", stats.epoch)),
        should_stop=lambda: sum(e[0] == "batch" for e in events) >= 15,
    )
    stopped = numpycnn.train(config, callbacks=callbacks)

    assert not stopped.finished and stopped.params is None and stopped.metrics is None
    assert events[0] == ("start", "train")  # a Config names its run "train" by default
    assert ("epoch", 1) in events and ("epoch", 2) not in events
    assert load_model(stopped.checkpoint).checkpoint["batch"] == 5  # 15 batches = 1.5 epochs

    resumed = numpycnn.train(resume=stopped.folder.path)
    straight = numpycnn.train(config, name="straight", out=tmp_path / "straight.pkl")
    assert resumed.finished and resumed.folder.path == stopped.folder.path
    assert same_params(tmp_path / "p.pkl", tmp_path / "straight.pkl")
    assert [s.train_loss for s in resumed.history] == [s.train_loss for s in straight.history]


def test_resume_refuses_settings_that_would_change_the_run(tmp_path):
    with pytest.raises(ValueError, match="batch_size, seed cannot be given with resume"):
        numpycnn.train(resume=tmp_path, batch_size=8, seed=2)
    with pytest.raises(TypeError, match="config must be a path, a Config or None"):
        numpycnn.train(42)


def test_load_predicts_arrays_and_image_files(tmp_path, mnist_dir, reference_params_path):
    model = numpycnn.load(reference_params_path)  # the 2018 reference's own parameters
    mnist = real_mnist(mnist_dir)

    # raw MNIST pixels, one image or a batch
    labels = model.predict(mnist.test_images[:200])
    assert (labels == mnist.test_labels[:200]).mean() > 0.95
    assert model.predict(mnist.test_images[0]).tolist() == [labels[0]]
    probs = model.predict_proba(mnist.test_images[:5])
    assert probs.shape == (5, 10) and np.allclose(probs.sum(axis=1), 1)

    # image files, prepared as `numpycnn predict` prepares them
    paths, _ = digit_files(tmp_path, mnist, 5)
    expected = model.network.predict(model.normalization.norm(np.stack(
        [load_digit(p) for p in paths])))  # fmt: skip
    assert model.predict(paths).tolist() == expected.tolist()
    assert model.predict(str(paths[0])).tolist() == expected[:1].tolist()
    result = invoke("predict", "--params", reference_params_path, "--json", *paths)
    assert [r["digit"] for r in json.loads(result.stdout)] == expected.tolist()
    assert "105,634 parameters" in repr(model)


def test_load_keeps_the_history_of_a_trained_file(tmp_path):
    config = tiny_config(tmp_path, epochs=2, limit=200, validation=50)
    numpycnn.train(config, data_dir=tmp_path / "data")
    model = numpycnn.load(tmp_path / "out.pkl")
    assert [h["epoch"] for h in model.history] == [1, 2]
    assert {"val_loss", "lr", "images_per_second", "layers"} <= set(model.history[0])
    assert model.metrics["epochs"] == 2
    with pytest.raises(ValueError, match="expected image files or pixel arrays"):
        model.predict(np.array(["x"], dtype=object))
