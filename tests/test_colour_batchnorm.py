"""Later features reach earlier ones: a colour folder (#16) trained by a network with batch
norm and dropout (#20) on two worker processes, then evaluated, predicted by class name and
exported to every format (#19), each export predicting as the model file does."""

import json

import numpy as np
import pytest
import yaml
from cli_helpers import invoke, last_json
from PIL import Image

import numpycnn
from numpycnn.modelfile import load_model

COLOURS = {"amber": (220, 160, 30), "navy": (30, 40, 120), "teal": (30, 150, 150)}
NETWORK = [
    {"type": "conv2d", "filters": 6, "kernel": 3, "padding": 1},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2, "stride": 2},
    {"type": "flatten"},
    {"type": "dropout", "p": 0.2},
    {"type": "dense", "units": 16},
    {"type": "batchnorm1d"},
    {"type": "relu"},
    {"type": "dense", "units": 3},
]


@pytest.fixture
def trained(tmp_path, monkeypatch):
    """A model trained on a colour folder (JPEG and PNG, varied sizes) with 2 workers."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(1)
    for name, colour in COLOURS.items():
        (tmp_path / "swatches" / name).mkdir(parents=True)
        for i in range(30):
            h, w = rng.integers(10, 30, 2)
            pixels = rng.normal(colour, 30, (h, w, 3)).clip(0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(
                tmp_path / "swatches" / name / f"{i}.{'png jpg'.split()[i % 2]}"
            )
    config = {
        "network": NETWORK,
        "data": {"dataset": "folder", "path": "swatches", "input_shape": [3, 12, 12],
                 "validation": 8, "augment": {"flip": True}},
        "training": {"epochs": 3, "batch_size": 16, "seed": 0,
                     "optimizer": {"name": "adam", "lr": 0.01}},
        "output": {"runs_dir": "runs"},
    }  # fmt: skip
    (tmp_path / "swatches.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    result = invoke("train", "-c", "swatches.yaml", "--workers", 2, "-q")
    assert result.exit_code == 0, result.output
    return tmp_path / "swatches.pkl"


def test_a_batch_norm_colour_model_evaluates_predicts_and_exports(trained, tmp_path):
    saved = load_model(trained)
    assert saved.class_names == sorted(COLOURS)
    # the running statistics moved from their start (means 0, variances 1)
    fresh = numpycnn.engine.Sequential(NETWORK, input_shape=(3, 12, 12))
    assert saved.model.flat_state.size == fresh.flat_state.size > 0
    assert not np.allclose(saved.model.flat_state, fresh.flat_state, atol=1e-3)

    report = last_json(invoke("eval", trained, "--json", "-q"))
    assert list(report["per_class"]) == sorted(COLOURS) and report["accuracy"] >= 0.9

    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((20, 31, 3), COLOURS["teal"], np.uint8)).save(photo)
    (row,) = last_json(invoke("predict", "--params", trained, photo, "--json"))
    assert row["class"] == "teal"

    model = numpycnn.load(trained)
    pixels = np.stack(
        [np.full((3, 12, 12), np.reshape(c, (3, 1, 1)), np.uint8) for c in COLOURS.values()]
    )
    expected = model.predict_proba(pixels)
    assert model.predict_names(pixels) == list(COLOURS)

    for suffix in (".safetensors", ".onnx", ".pt"):
        out = tmp_path / f"swatches{suffix}"
        result = invoke("export", trained, out)
        assert result.exit_code == 0, result.output
    again = numpycnn.load(tmp_path / "swatches.safetensors")
    np.testing.assert_array_equal(again.predict_proba(pixels), expected)
    assert again.class_names == sorted(COLOURS)

    onnx = pytest.importorskip("onnx")
    props = {p.key: p.value for p in onnx.load(tmp_path / "swatches.onnx").metadata_props}
    assert json.loads(props["classes"]) == sorted(COLOURS)

    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(tmp_path / "swatches.onnx"))
    (onnx_probs,) = session.run(None, {session.get_inputs()[0].name: pixels.astype(np.float32)})
    np.testing.assert_allclose(onnx_probs, expected, atol=1e-5)

    torch = pytest.importorskip("torch")
    net = numpycnn.to_torch(model).double().eval()
    x = torch.from_numpy(model.normalization.norm(pixels).astype(np.float64))
    with torch.no_grad():
        torch_probs = torch.softmax(net(x), dim=1).numpy()
    np.testing.assert_allclose(torch_probs, expected, atol=1e-6)
