"""Model files: round trips, the reference's legacy pickle, refused code, and clear errors."""

import os
import pickle
import re
import subprocess

import numpy as np
import pytest

import numpycnn
from numpycnn import modelfile
from numpycnn.config import Config
from numpycnn.engine import Sequential, optim, reference_network
from numpycnn.modelfile import ModelFileError, load_model, save_model

NORMALIZATION = {"strategy": "standard", "mean": 33.3, "std": 78.6}
SMALL_LAYERS = [
    {"type": "conv2d", "filters": 2, "kernel": 3, "stride": 2},
    {"type": "leaky_relu", "alpha": 0.1},
    {"type": "flatten"},
    {"type": "dense", "units": 10, "init": "glorot_uniform"},
]


def small_model(dtype="float32", seed=1):
    return Sequential(SMALL_LAYERS, loss="mean_squared_error", dtype=dtype, seed=seed)


@pytest.fixture(scope="module")
def mnist_test_set(mnist):
    return mnist.test_images, mnist.test_labels


def checkpoint_after_a_step(model):
    """A checkpoint as a training loop keeps one: optimiser state, counters, RNG state."""
    adam = optim.Adam(lr=0.01)
    rng = np.random.default_rng(7)
    x = rng.standard_normal((4, 1, 28, 28)).astype(model.dtype)
    model.train_step(x, np.array([0, 1, 2, 3]), adam)
    return {
        "optimizer": {"name": "adam", **adam.state_dict()},
        "epoch": 1,
        "batch": np.int64(17),
        "rng": rng.bit_generator.state,
        "order": rng.permutation(100),
        "best": np.float32(0.5),
    }


def assert_same_model(a, b):
    assert a.specs() == b.specs()
    assert a.dtype == b.dtype and a.input_shape == b.input_shape
    assert a.loss.kind == b.loss.kind
    assert a.param_names == b.param_names
    for p, q in zip(a.get_params(), b.get_params()):
        assert p.dtype == q.dtype and p.shape == q.shape
        assert p.tobytes() == q.tobytes()


# ----- round trips -----


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_save_then_load_gives_the_same_model_and_companions(tmp_path, dtype):
    model = small_model(dtype)
    checkpoint = checkpoint_after_a_step(model)
    config = Config().to_dict()
    metrics = {"accuracy": 0.9731, "recall": [0.99, 0.98], "confusion": np.eye(10, dtype=int)}
    cost = [2.3, np.float32(1.5), 0.75]
    path = tmp_path / "model.pkl"
    save_model(path, model, NORMALIZATION, cost, config, metrics, checkpoint)

    loaded = load_model(path)
    assert_same_model(model, loaded.model)
    assert loaded.normalization == NORMALIZATION
    assert loaded.cost == [2.3, 1.5, 0.75]
    assert loaded.config == config and Config.from_dict(loaded.config) == Config()
    np.testing.assert_equal(loaded.metrics, metrics)
    np.testing.assert_equal(loaded.checkpoint, checkpoint)
    assert loaded.metadata["format"] == "numpycnn-model" and loaded.metadata["version"] == 1
    assert loaded.metadata["numpycnn_version"] == numpycnn.__version__
    x = np.random.default_rng(0).standard_normal((3, 1, 28, 28))
    assert np.array_equal(model.forward(x), loaded.model.forward(x))


def test_the_restored_rng_and_optimizer_continue_exactly(tmp_path):
    model = small_model()
    checkpoint = checkpoint_after_a_step(model)
    save_model(tmp_path / "m.pkl", model, NORMALIZATION, checkpoint=checkpoint)
    stored = load_model(tmp_path / "m.pkl").checkpoint
    rng = np.random.default_rng()
    rng.bit_generator.state = stored["rng"]
    expected = np.random.default_rng(7)
    expected.bit_generator.state = checkpoint["rng"]
    assert np.array_equal(rng.random(5), expected.random(5))
    adam = optim.Adam(lr=0.01)
    adam.load_state_dict(stored["optimizer"])
    assert adam.t == 1 and np.array_equal(adam.m, checkpoint["optimizer"]["m"])


def test_a_file_without_checkpoint_loads_with_none_and_objects_with_to_dict_are_stored(tmp_path):
    class Normalization:
        def to_dict(self):
            return {"strategy": "unit", "mean": 0, "std": 255}

    save_model(tmp_path / "m.pkl", small_model(), Normalization(), config=Config())
    loaded = load_model(tmp_path / "m.pkl")
    assert loaded.checkpoint is None and loaded.metrics is None and loaded.cost == []
    assert loaded.normalization == {"strategy": "unit", "mean": 0.0, "std": 255.0}
    assert loaded.config == Config().to_dict()


# ----- the reference's legacy pickle -----


def test_the_reference_pickle_loads_as_the_reference_network(reference_params_path):
    loaded = load_model(reference_params_path)
    assert loaded.model.specs() == reference_network().specs()
    assert loaded.model.dtype == np.float64
    assert loaded.normalization == {"strategy": "reference", "mean": 33.0, "std": 78.0}
    assert len(loaded.cost) == 3126 and all(isinstance(c, float) for c in loaded.cost)
    with open(reference_params_path, "rb") as f:
        params, cost = pickle.load(f)  # the trusted original, for comparison
    for p, q in zip(params, loaded.model.get_params()):
        assert p.tobytes() == q.tobytes()
    assert loaded.cost == [float(c) for c in cost]


def test_the_reference_parameters_score_9840_on_the_test_set(reference_params_path, mnist_test_set):
    images, labels = mnist_test_set
    model = load_model(reference_params_path).model
    x = (images.astype(np.float64) - 33.0) / 78.0
    assert int((model.predict(x) == labels).sum()) == 9840


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_legacy_pickles_load_at_every_protocol(tmp_path, protocol):
    reference = reference_network(dtype="float64", seed=3)
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps([reference.get_params(), [np.float64(2.3)]], protocol))
    loaded = load_model(path)
    assert_same_model(reference, loaded.model)
    assert loaded.cost == [2.3]
    assert loaded.metadata["format"] == modelfile.LEGACY_FORMAT


# ----- code in the file is refused, never run -----


def malicious_payload(marker, kind):
    """An object whose unpickling would create ``marker`` through ``kind``."""
    calls = {
        "open": (open, (str(marker), "w")),
        "os.system": (os.system, (f"touch {marker}",)),
        "eval": (eval, (f"open({str(marker)!r}, 'w')",)),
        "subprocess.Popen": (subprocess.Popen, (["touch", str(marker)],)),
    }

    class Payload:
        def __reduce__(self):
            return calls[kind]

    return Payload()


@pytest.mark.parametrize("kind", ["open", "os.system", "eval", "subprocess.Popen"])
def test_a_malicious_pickle_is_refused_and_not_run(tmp_path, kind):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    model = small_model()
    stored = {
        "format": "numpycnn-model",
        "version": 1,
        "numpycnn_version": "0",
        "layers": model.specs(),
        "loss": "mean_squared_error",
        "input_shape": [1, 28, 28],
        "dtype": "float32",
        "params": model.get_params(),
        "cost": [],
        "normalization": NORMALIZATION,
        "config": None,
        "metrics": {"x": malicious_payload(marker, kind)},
    }
    path.write_bytes(pickle.dumps(stored, protocol=2))
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(path))}: refused global") as info:
        load_model(path)
    refused = info.value.args[0].split("'")[1]
    assert refused.rsplit(".", 1)[-1] in {"open", "system", "eval", "Popen"}
    assert not marker.exists()


def test_saving_an_object_the_loader_would_refuse_fails_before_writing(tmp_path):
    path = tmp_path / "m.pkl"
    checkpoint = {"rng": np.random.default_rng(0)}  # a Generator, not its state dict
    with pytest.raises(ModelFileError, match="cannot save: refused global"):
        save_model(path, small_model(), NORMALIZATION, checkpoint=checkpoint)
    assert list(tmp_path.iterdir()) == []


# ----- errors -----


@pytest.fixture
def saved(tmp_path):
    path = tmp_path / "model.pkl"
    save_model(path, small_model(), NORMALIZATION, [1.0, 0.5])
    return path


def load_error(path):
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def rewrite(path, drop=(), **changes):
    """Rewrite the model file at ``path`` with some keys changed or dropped."""
    with open(path, "rb") as f:
        stored = pickle.load(f)
    stored.update(changes)
    for key in drop:
        del stored[key]
    path.write_bytes(pickle.dumps(stored))
    return path


def test_broken_files_are_clear_errors(tmp_path, saved):
    assert "no such file" in load_error(tmp_path / "absent.pkl")
    assert "cannot read" in load_error(tmp_path)
    (tmp_path / "empty.pkl").write_bytes(b"")
    assert "empty file" in load_error(tmp_path / "empty.pkl")
    (tmp_path / "garbage.pkl").write_bytes(b"this is not a pickle at all")
    assert "not a valid pickle" in load_error(tmp_path / "garbage.pkl")
    data = saved.read_bytes()
    for cut in (len(data) // 2, len(data) - 1, 20):
        (tmp_path / "cut.pkl").write_bytes(data[:cut])
        assert "truncated" in load_error(tmp_path / "cut.pkl")
    (tmp_path / "list.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    assert "not a numpycnn model file" in load_error(tmp_path / "list.pkl")


@pytest.mark.parametrize(
    "changes, fragment",
    [
        ({"format": "other-model"}, "not a numpycnn model file (format 'other-model')"),
        ({"version": 2}, "unsupported model file version 2 (this numpycnn reads version 1)"),
        ({"drop": ["params", "cost"]}, "missing keys params, cost"),
        ({"layers": [{"type": "conv3d"}]}, "cannot rebuild the network: unknown layer type"),
        ({"dtype": "float16"}, "cannot rebuild the network: dtype must be one of"),
        ({"normalization": {"strategy": "standard", "mean": 0}}, "normalization must be"),
        ({"cost": ["high"]}, "cost must be a list of numbers"),
        ({"metrics": [0.5]}, "metrics must be a dict or None, got list"),
        ({"checkpoint": "epoch 3"}, "checkpoint must be a dict or None, got str"),
    ],
)
def test_bad_contents_name_the_key_at_fault(saved, changes, fragment):
    assert fragment in load_error(rewrite(saved, **changes))


def test_bad_parameters_are_named(saved):
    params = small_model().get_params()
    message = load_error(rewrite(saved, params=params[:-1]))
    assert "params: expected 4 arrays (f1, w2, b1, b2), got 3" in message
    wrong = [params[0], params[1][:, :5], params[2], params[3]]
    assert "parameter w2: expected shape (10, 338), got (10, 5)" in load_error(
        rewrite(saved, params=wrong)
    )
    text = [params[0], params[1], params[2], "b2"]
    assert "parameter b2: expected a real NumPy array" in load_error(rewrite(saved, params=text))


# ----- atomic writes -----


def test_a_failed_save_leaves_the_old_file_intact_and_no_temporary_file(
    tmp_path, saved, monkeypatch
):
    before = saved.read_bytes()

    def fail(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile.os, "fsync", fail)  # after the bytes went to the temp file
    with pytest.raises(ModelFileError, match="cannot write: No space left on device"):
        save_model(saved, reference_network(), NORMALIZATION)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pkl"]


def test_an_interrupted_save_leaves_no_temporary_file(tmp_path, saved, monkeypatch):
    before = saved.read_bytes()

    def interrupt(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(modelfile.os, "replace", interrupt)
    with pytest.raises(KeyboardInterrupt):
        save_model(saved, reference_network(), NORMALIZATION)
    assert saved.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pkl"]


def test_saving_into_a_missing_directory_is_a_clear_error(tmp_path):
    path = tmp_path / "absent" / "m.pkl"
    with pytest.raises(ModelFileError, match=f"^{re.escape(str(path))}: cannot write"):
        save_model(path, small_model(), NORMALIZATION)


def test_saving_replaces_an_existing_file(saved):
    model = small_model(seed=9)
    save_model(saved, model, NORMALIZATION)
    assert_same_model(model, load_model(saved).model)
