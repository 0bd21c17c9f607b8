"""safetensors model files: every config and the 2018 reference round-trip through
numpycnn.load; the metadata is JSON strings; train, eval and predict use them like a pickle;
every way the file can be broken gets one line naming it; nothing is ever half-written."""

import json
import pickle
import sys

import numpy as np
import pytest
import safetensors
import safetensors.numpy
from cli_helpers import digit_files, error_line, fake_mnist, invoke, last_json, tiny_config
from shape_helpers import mnist_as
from test_export_common import CONFIGS, NORM, config_model, every_layer_model

import numpycnn
from numpycnn.export import export
from numpycnn.export import safetensors_file as sf
from numpycnn.modelfile import ModelFileError, load_model, save_model

METRICS = {"test_accuracy": 0.5, "epochs": 1}
CONFIG = {"training": {"epochs": 1}}


def assert_same(a, b):
    """Two numpycnn.Model-likes with the very same network, parameters and normalisation."""
    na, nb = a.network, b.network
    assert na.specs() == nb.specs() and na.loss.kind == nb.loss.kind
    assert na.dtype == nb.dtype and na.input_shape == nb.input_shape
    for p, q in zip(na.get_params(), nb.get_params()):
        assert p.dtype == q.dtype and p.shape == q.shape and np.array_equal(p, q)
    assert a.normalization == b.normalization


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config(path, tmp_path, mnist):
    model = config_model(path, mnist)
    out = tmp_path / "m.safetensors"
    save_model(out, model.network, model.normalization, [1.5, 0.5], CONFIG, METRICS)
    back = numpycnn.load(out)
    assert_same(back, model)
    assert back.metrics == METRICS and back.config == CONFIG
    images = mnist_as(mnist.test_images[:100], model.network.input_shape)
    np.testing.assert_array_equal(back.predict_proba(images), model.predict_proba(images))


def test_reference(reference_params_path, tmp_path, mnist):
    """The 2018 pickle as safetensors: the same float64 parameters, normalisation and cost
    history, the same predictions."""
    out = tmp_path / "reference.safetensors"
    export(reference_params_path, out)
    original, back = numpycnn.load(reference_params_path), numpycnn.load(out)
    assert_same(back, original)
    assert load_model(out).cost == load_model(reference_params_path).cost
    images = mnist.test_images[:1000]
    np.testing.assert_array_equal(back.predict(images), original.predict(images))


def test_metadata_and_tensors(tmp_path):
    model = every_layer_model("float64")
    out = tmp_path / "m.safetensors"
    save_model(
        out, model.network, model.normalization, [1.0], CONFIG, METRICS, history=[{"epoch": 1}]
    )
    with safetensors.safe_open(out, "np") as f:
        meta, keys = f.metadata(), set(f.keys())
        bias = f.get_tensor("0.bias")
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["format"] == "numpycnn-model" and meta["version"] == "1"
    assert meta["dtype"] == "float64" and meta["loss"] == "mean_squared_error"
    assert json.loads(meta["classes"]) == [str(d) for d in range(10)]
    assert json.loads(meta["normalization"]) == NORM.to_dict()
    assert json.loads(meta["layers"]) == model.network.specs()
    assert json.loads(meta["input_shape"]) == [1, 28, 28]
    assert json.loads(meta["metrics"]) == METRICS and json.loads(meta["config"]) == CONFIG
    assert json.loads(meta["history"]) == [{"epoch": 1}]
    assert keys == {"0.weight", "0.bias", "4.weight", "4.bias", "9.weight", "9.bias",
                    "11.weight", "11.bias"}  # fmt: skip
    assert bias.shape == (3,) and bias.dtype == np.float64


def test_tensors_load_into_the_torch_sequential(tmp_path):
    torch = pytest.importorskip("torch", reason="PyTorch not installed")
    import safetensors.torch

    model = every_layer_model()
    out = tmp_path / "m.safetensors"
    save_model(out, model.network, model.normalization)
    net = numpycnn.to_torch(model)
    state = safetensors.torch.load_file(out)
    net.load_state_dict(state)  # strict
    assert all(torch.equal(net.state_dict()[k], v) for k, v in state.items())


def test_found_by_content_whatever_its_name(tmp_path):
    model = every_layer_model()
    save_model(tmp_path / "m.safetensors", model.network, model.normalization)
    (tmp_path / "m.bin").write_bytes((tmp_path / "m.safetensors").read_bytes())
    assert_same(numpycnn.load(tmp_path / "m.bin"), model)


def test_checkpoints_stay_pickles(tmp_path):
    model = every_layer_model()
    with pytest.raises(ModelFileError, match=r"c\.safetensors: cannot save: a training checkpoint"):
        save_model(tmp_path / "c.safetensors", model.network, NORM, checkpoint={"epoch": 1})
    assert list(tmp_path.iterdir()) == []


def test_a_failed_save_leaves_the_old_file(tmp_path):
    model = every_layer_model()
    out = tmp_path / "m.safetensors"
    save_model(out, model.network, NORM)
    before = out.read_bytes()
    with pytest.raises(ModelFileError, match=r"m\.safetensors: .*metadata 'config'.*not JSON"):
        save_model(out, model.network, NORM, config={"x": object()})
    with pytest.raises(ModelFileError, match=r"m\.safetensors: cannot save: normalization must"):
        save_model(out, model.network, {"strategy": "odd"})
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]


# ----- broken files -----


def good_file(tmp_path):
    model = every_layer_model()
    out = tmp_path / "good.safetensors"
    save_model(out, model.network, NORM)
    return out.read_bytes()


def rewritten(data, tensors=None, metadata=None):
    """The file ``data`` with its tensors and metadata changed by the given functions."""
    with_meta = sf._header(data)["__metadata__"]
    arrays = safetensors.numpy.load(data)
    if tensors:
        tensors(arrays)
    if metadata:
        metadata(with_meta)
    return safetensors.numpy.save(arrays, metadata=with_meta)


def drop(key):
    return lambda d: d.pop(key)


def put(key, value):
    return lambda d: d.__setitem__(key, value)


BROKEN = {
    "empty": (lambda b: b"", r"truncated safetensors file \(0 bytes"),
    "header cut": (
        lambda b: b[:40],
        r"truncated or corrupt safetensors file \(a [\d,]+-byte header",
    ),
    "data cut": (lambda b: b[:-7], r"truncated safetensors file \(its tensors end at byte"),
    "garbage header": (
        lambda b: b[:8] + b"{" + b"x" * (len(b) - 9),
        r"corrupt safetensors header \(not JSON",
    ),
    "no metadata": (
        lambda b: safetensors.numpy.save({"w": np.zeros(2, np.float32)}),
        r"a safetensors file without numpycnn metadata",
    ),
    "other format": (
        lambda b: rewritten(b, metadata=put("format", "pt")),
        r"not a numpycnn model file \(metadata format 'pt'\)",
    ),
    "newer version": (
        lambda b: rewritten(b, metadata=put("version", "9")),
        r"unsupported model file version '9'",
    ),
    "missing key": (
        lambda b: rewritten(b, metadata=drop("layers")),
        r"metadata: missing key layers",
    ),
    "bad json": (
        lambda b: rewritten(b, metadata=put("normalization", "{mean")),
        r"metadata 'normalization': not valid JSON",
    ),
    "bad layers": (
        lambda b: rewritten(b, metadata=put("layers", '[{"type": "lstm"}]')),
        r"metadata: cannot rebuild the network: unknown layer type 'lstm'",
    ),
    "bad normalization": (
        lambda b: rewritten(b, metadata=put("normalization", '{"mean": 1}')),
        r"normalization must be",
    ),
    "missing tensor": (
        lambda b: rewritten(b, tensors=drop("9.weight")),
        r"missing tensor '9\.weight' \(layer 9, dense\)",
    ),
    "wrong shape": (
        lambda b: rewritten(b, tensors=put("0.weight", np.zeros((3, 1, 2, 2), np.float32))),
        r"tensor '0\.weight' has shape \(3, 1, 2, 2\); layer 0 \(conv2d\) needs "
        r"\(3, 1, 3, 3\)",
    ),
    "wrong dtype": (
        lambda b: rewritten(b, tensors=put("0.bias", np.zeros(3, np.float64))),
        r"tensor '0\.bias' is float64; the model's dtype is float32",
    ),
    "extra tensor": (
        lambda b: rewritten(b, tensors=put("optimizer.m", np.zeros(2, np.float32))),
        r"unexpected tensor 'optimizer\.m'",
    ),
    "a pickle": (lambda b: pickle.dumps({"format": "numpycnn-model"}), r"(truncated|corrupt)"),
    # a few kB that describe a network of 10**10 parameters: refused before it is built
    "huge network": (
        lambda b: rewritten(
            b,
            metadata=put("layers", '[{"type": "flatten"}, {"type": "dense", "units": 10000000}]'),
        ),
        r"metadata: the network it describes has 7,850,000,000 parameters, more than the "
        r"file's [\d,]+ bytes can hold",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_broken_files(case, tmp_path):
    make, message = BROKEN[case]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(make(good_file(tmp_path)))
    with pytest.raises(ModelFileError, match=rf"^{tmp_path}/bad\.safetensors: {message}"):
        load_model(bad)


def test_broken_file_in_eval_is_one_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(good_file(tmp_path)[:-7])
    line = error_line(invoke("eval", bad))
    assert line.startswith(f"{bad}: truncated safetensors file")


# ----- the commands -----


def test_train_eval_predict(tmp_path, mnist_dir, mnist, monkeypatch):
    """train --out x.safetensors writes one; eval and predict read it like the pickle."""
    fake_mnist(monkeypatch, mnist_dir, test_limit=500)
    config = tiny_config(tmp_path, limit=300)
    out = tmp_path / "tiny.safetensors"
    result = invoke("train", "-c", config, "--out", out, "-q", "--workers", 1)
    assert result.exit_code == 0, result.output
    assert sf.is_safetensors("no-suffix", out.read_bytes())  # a safetensors file by content
    saved = load_model(out)
    last = load_model(tmp_path / "runs" / "tiny" / "last.pkl")  # checkpoints stay pickles
    assert all(
        np.array_equal(p, q) for p, q in zip(saved.model.get_params(), last.model.get_params())
    )
    assert saved.metrics["test_total"] == 500 and len(saved.history) == 1
    assert saved.config == last.config and saved.cost == last.cost

    from_pkl = last_json(invoke("eval", tmp_path / "runs" / "tiny" / "last.pkl", "--json"))
    from_st = last_json(invoke("eval", out, "--json"))
    assert (
        from_st["accuracy"] == from_pkl["accuracy"]
        and from_st["confusion"] == from_pkl["confusion"]
    )

    paths, _ = digit_files(tmp_path, mnist, 3)
    a = last_json(invoke("predict", "--params", out, "--json", *paths))
    b = last_json(
        invoke("predict", "--params", tmp_path / "runs" / "tiny" / "last.pkl", "--json", *paths)
    )
    assert a == b


def test_without_the_safetensors_package(tmp_path, monkeypatch):
    """Pickles load without it; a safetensors file says what is missing, in one line."""
    model = every_layer_model()
    save_model(tmp_path / "m.pkl", model.network, NORM)
    save_model(tmp_path / "m.safetensors", model.network, NORM)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    assert_same(numpycnn.load(tmp_path / "m.pkl"), model)
    with pytest.raises(ModelFileError, match=r"m\.safetensors: a safetensors model file needs the"):
        load_model(tmp_path / "m.safetensors")


@pytest.mark.parametrize("name", ["tiny.onnx", "tiny.pt", "tiny.PTH"])
def test_train_refuses_an_export_format_before_training(tmp_path, mnist_dir, monkeypatch, name):
    """train --out x.onnx would write a pickle under an ONNX name: refused before any run
    folder exists, pointing to numpycnn export."""
    fake_mnist(monkeypatch, mnist_dir, test_limit=100)
    config = tiny_config(tmp_path, limit=100)
    line = error_line(invoke("train", "-c", config, "--out", tmp_path / name, "-q"))
    assert "train writes numpycnn model files (.pkl or .safetensors)" in line
    assert f"numpycnn export MODEL {name}" in line
    assert not (tmp_path / name).exists() and not (tmp_path / "runs").exists()
