"""The inspector on a colour model (#16): a network trained on a folder of RGB pictures
with its own class names, served for real on 127.0.0.1 and by the CLI, checked against the
engine and the folder source's own decoding."""

import numpy as np
import pytest
from cli_helpers import invoke
from colour_model import CLASSES, SHAPE, colour_model
from PIL import Image
from test_inspect_api import array, image_body, png_bytes, request, serving
from test_inspect_cli import start

from numpycnn.data import Normalization
from numpycnn.datasets.images import load_image
from numpycnn.inspector import Inspector
from numpycnn.inspector.sources import data_loaders
from numpycnn.modelfile import load_model


@pytest.fixture(scope="module")
def colour(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("colour")
    path, ds, source = colour_model(tmp)
    return path, ds, tmp


def engine_probabilities(saved, images):
    """The probabilities the engine gives uint8 images (N, 3, H, W), normalised by the
    model file's (per-channel) statistics."""
    return saved.model.predict_proba(Normalization.from_dict(saved.normalization).norm(images))


def test_a_colour_model_takes_a_file_and_a_test_image_with_its_class_names(colour):
    path, ds, tmp = colour
    saved = load_model(path)
    test_set, train_set = data_loaders(saved.data_source, tmp / "data")
    assert train_set is None  # the out-of-distribution cue is for MNIST digits
    with serving(Inspector(saved, test_set=test_set, name=path.name)) as (url, _):
        status, model = request(url + "/api/model")
        assert status == 200 and model["class_names"] == list(CLASSES)
        assert model["input"]["channels"] == 3 and model["input"]["colour"]
        assert not model["input"]["drawable"] and model["input_shape"] == list(SHAPE)

        # a file of another size and aspect: prepared as the folder source prepares it
        file = tmp / "pictures" / "sky" / "3.png"
        wide = Image.open(file).resize((60, 30))
        (tmp / "wide.png").write_bytes(png_bytes(wide))
        expected = load_image(tmp / "wide.png", SHAPE)
        status, r = request(url + "/api/inspect", {**image_body(png_bytes(wide)), "name": "w.png"})
        assert status == 200, r
        assert np.array_equal(array(r["digit"]), expected)
        assert r["probabilities"] == engine_probabilities(saved, expected[None])[0].tolist()
        assert array(r["input"]).shape == SHAPE
        assert array(r["backward"]["input"]).shape == SHAPE
        assert r["activations"][0]["shape"] == [4, 16, 16]  # every channel of the first layer
        assert r["ood"]["flag"] is None and "MNIST-style digits" in r["ood"]["text"]

        # a test image by its index: its true label, as the folder source split it
        status, t = request(url + "/api/predict", {"test_index": 1})
        assert status == 200 and t["true_label"] == int(ds.test_labels[1])
        assert np.array_equal(array(t["digit"]), ds.test_images[1])
        assert t["probabilities"] == engine_probabilities(saved, ds.test_images[1:2])[0].tolist()

        # the confusion matrix over the folder's own test split, and a cell's images
        status, cm = request(url + "/api/confusion")
        predicted = engine_probabilities(saved, ds.test_images).argmax(axis=1)
        expected_matrix = np.zeros((3, 3), dtype=int)
        np.add.at(expected_matrix, (ds.test_labels, predicted), 1)
        assert status == 200 and np.array_equal(array(cm["matrix"]), expected_matrix)
        status, cell = request(url + "/api/confusion/cell?true=0&predicted=0")
        assert status == 200 and array(cell["images"]).shape[1:] == SHAPE

        # pixels are C x H x W values; a grey-sized list is refused by name
        pixels = expected.reshape(-1).tolist()
        status, p = request(url + "/api/predict", {"pixels": pixels})
        assert status == 200 and p["probabilities"] == r["probabilities"]
        status, bad = request(url + "/api/predict", {"pixels": [0] * 784})
        assert status == 400 and bad["error"] == "pixels must be 768 numbers 0-255"


def test_save_draws_the_colour_input_its_names_and_an_rgb_filter_column(colour, tmp_path):
    path, _, tmp = colour
    out = tmp_path / "figures"
    image = tmp / "pictures" / "apple" / "1.png"
    result = invoke("inspect", path, "--image", image, "--save", out, "--data-dir", tmp / "data")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["activations.png", "filters.png", "input.png", "saliency.png"]
    for name in names:
        assert Image.open(out / name).size[0] > 300


def test_the_cli_serves_the_colour_models_own_test_split(colour):
    path, ds, tmp = colour
    proc, line = start(path, "--data-dir", tmp / "data")
    try:
        url = line.split(" at ")[1].split()[0].rstrip("/")
        status, cm = request(url + "/api/confusion")
        assert status == 200 and cm["total"] == len(ds.test_labels)
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
