"""ONNX export, with onnxruntime as the oracle: every config's network, a network of every
layer type (float32 and float64), and the 2018 reference on all 10,000 test images."""

import sys

import numpy as np
import pytest
from shape_helpers import mnist_as
from test_export_common import (
    CONFIGS,
    COUNT,
    assert_agrees,
    config_model,
    every_layer_model,
)

import numpycnn
from numpycnn.export import ExportError, export, to_onnx

onnx = pytest.importorskip("onnx", reason="onnx not installed: pip install 'numpycnn[onnx]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed")


def run(path, images):
    """onnxruntime's output for raw uint8 images (N, 28, 28) or (N, C, H, W), as float32
    (N, C, H, W)."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    x = images[:, None] if images.ndim == 3 else images
    return session.run(None, {name: x.astype(np.float32)})[0]


def check_graph(path, model):
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    # the normalisation is the graph's first two nodes, with the model's statistics
    first, second = proto.graph.node[:2]
    assert (first.op_type, second.op_type) == ("Sub", "Div")
    init = {t.name: onnx.numpy_helper.to_array(t) for t in proto.graph.initializer}
    assert init[first.input[1]] == np.float32(model.normalization.mean)
    assert init[second.input[1]] == np.float32(model.normalization.std)
    (x,) = proto.graph.input
    dims = (
        x.type.tensor_type.elem_type,
        [d.dim_param or d.dim_value for d in x.type.tensor_type.shape.dim],
    )
    assert dims == (onnx.TensorProto.FLOAT, ["N", *model.network.input_shape])
    assert "raw pixel values 0-255" in proto.graph.doc_string
    return proto


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_config(path, tmp_path, mnist):
    model = config_model(path, mnist)
    out = tmp_path / "model.onnx"
    export(model, out)
    proto = check_graph(out, model)
    ops = [n.op_type for n in proto.graph.node]
    softmax_at_end = model.network.loss.kind == "softmax_cross_entropy"
    assert (ops[-1] == "Softmax") == softmax_at_end
    images = mnist_as(mnist.test_images[:COUNT], model.network.input_shape)
    assert_agrees(run(out, images), model.predict_proba(images))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_layer_type(dtype, tmp_path, mnist):
    model = every_layer_model(dtype)
    out = tmp_path / "every.onnx"
    export(model, out)
    ops = [n.op_type for n in check_graph(out, model).graph.node]
    assert ops == ["Sub", "Div", "Conv", "LeakyRelu", "AveragePool", "Tanh", "Conv", "Relu",
                   "MaxPool", "Sigmoid", "Flatten", "Gemm", "Relu", "Gemm", "Softmax",
                   "Identity"]  # fmt: skip
    images = mnist.test_images[:COUNT]
    assert_agrees(run(out, images), model.predict_proba(images))


def test_batch_size_is_dynamic(tmp_path, mnist):
    model = every_layer_model()
    out = tmp_path / "m.onnx"
    export(model, out)
    for n in (1, 7):
        images = mnist.test_images[:n]
        assert run(out, images).shape == (n, 10)


def test_reference_on_all_test_images(reference_params_path, tmp_path, mnist):
    """The 2018 parameters (float64) through onnxruntime (float32): the same class for all
    10,000 test images, probabilities within 1e-5."""
    model = numpycnn.load(reference_params_path)
    out = tmp_path / "reference.onnx"
    export(reference_params_path, out)
    check_graph(out, model)
    got = run(out, mnist.test_images)
    expected = model.predict_proba(mnist.test_images, threads=2)
    assert float(np.abs(got - expected).max()) <= 1e-5
    np.testing.assert_array_equal(got.argmax(1), expected.argmax(1))
    assert int((got.argmax(1) == mnist.test_labels).sum()) == 9840


def test_metadata(tmp_path):
    model = every_layer_model()
    proto = to_onnx(model)
    props = {p.key: p.value for p in proto.metadata_props}
    assert props["classes"] == '["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]'
    assert '"mean": 33.3184' in props["normalization"] and props["loss"] == "mean_squared_error"
    assert proto.producer_name == "numpycnn"


def test_without_onnx(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(
        ExportError, match=r"needs the onnx package: pip install 'numpycnn\[onnx\]'"
    ):
        export(every_layer_model(), tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []
