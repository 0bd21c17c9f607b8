"""Model files record the data a network was trained on and its class names (#16); files
without them (every file before, and the 2018 reference pickle) read as MNIST's digits."""

import pickle
from pathlib import Path

import numpy as np
import pytest

import numpycnn
from numpycnn.engine import Sequential
from numpycnn.engine.model import REFERENCE_LAYERS
from numpycnn.modelfile import ModelFileError, load_model, save_model

NORM = {"strategy": "standard", "mean": 100.0, "std": 50.0}
SOURCE = {"dataset": "folder", "path": "pets", "input_shape": [3, 8, 8], "seed": 0}
LAYERS = [
    {"type": "conv", "filters": 2, "kernel": 3},
    {"type": "relu"},
    {"type": "flatten"},
    {"type": "dense", "units": 3},
]
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference" / "escontrela-params.pkl"


def colour_net():
    return Sequential(LAYERS, input_shape=(3, 8, 8), seed=0)


@pytest.mark.parametrize("suffix", [".pkl", ".safetensors"])
def test_source_and_class_names_round_trip(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    save_model(path, colour_net(), NORM, data_source=SOURCE, class_names=["cat", "dog", "eel"])
    saved = load_model(path)
    assert saved.data_source == SOURCE
    assert saved.class_names == ["cat", "dog", "eel"]
    model = numpycnn.load(path)
    assert model.class_names == ["cat", "dog", "eel"]
    assert model.data_source == SOURCE


@pytest.mark.parametrize("suffix", [".pkl", ".safetensors"])
def test_a_file_without_them_is_mnist(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    save_model(path, Sequential(REFERENCE_LAYERS, seed=0), NORM)
    saved = load_model(path)
    assert saved.data_source == {"dataset": "mnist"}
    assert saved.class_names == [str(k) for k in range(10)]


@pytest.mark.skipif(not REFERENCE.exists(), reason="needs ../shared/reference")
def test_the_reference_pickle_is_mnist():
    model = numpycnn.load(REFERENCE)
    assert model.class_names == [str(k) for k in range(10)]
    assert model.data_source == {"dataset": "mnist"}


def test_class_names_must_match_the_class_scores(tmp_path):
    with pytest.raises(ModelFileError, match="class_names has 2 names but the network gives 3"):
        save_model(tmp_path / "m.pkl", colour_net(), NORM, class_names=["a", "b"])
    assert not (tmp_path / "m.pkl").exists()


@pytest.mark.parametrize(
    "data, message",
    [
        ([1, 2], "data must be a dict"),
        ({"source": "mnist"}, "data.source must be a dict"),
        ({"source": {"dataset": "x", "f": np.zeros(2)}}, "data.source must be plain data"),
        ({"class_names": [1, 2, 3]}, "data.class_names must be a list of strings"),
    ],
)
def test_a_bad_data_entry_is_one_line(tmp_path, data, message):
    path = tmp_path / "m.pkl"
    save_model(path, colour_net(), NORM)
    stored = pickle.loads(path.read_bytes())
    stored["data"] = data
    path.write_bytes(pickle.dumps(stored))
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(path)
    assert "\n" not in str(err.value)
