"""ONNX export: a standard graph (opset 17) of the network, its weights and its input
normalisation, built with the ``onnx`` package's helpers (``pip install 'numpycnn[onnx]'``).

The graph takes ``pixels``: float32 (N, C, H, W), raw pixel values 0-255 with a light digit on
a dark background as in MNIST (what ``numpycnn.Model.predict_proba`` takes as arrays), and
its first two nodes normalise them as numpycnn does, ``(pixels - mean) / std`` with the
statistics of the model's training images. Its output ``probabilities`` (N, K) is what
``predict_proba`` returns: a softmax over the classes for softmax_cross_entropy models, the
last layer's output (a sigmoid layer's, in the zoo) for the others. N is dynamic.

The graph computes in float32, the type ONNX runtimes provide every operator in; a float64
model's weights are rounded to float32.
"""

import json

import numpy as np

from .. import __version__
from .common import (
    ExportError,
    classes,
    output_function,
    output_meaning,
    parts_of,
    require,
    stat_array,
    stat_text,
)
from .common import unsupported as _unsupported

OPSET = 17
INPUT, OUTPUT = "pixels", "probabilities"
WHAT = "ONNX export"


def _onnx():
    return require("onnx", WHAT, "pip install 'numpycnn[onnx]'")


def _layer_nodes(helper, index, spec, x, layer, const):
    """The nodes of one layer from input ``x``; returns (nodes, output name)."""
    kind = spec["type"]
    y = f"layer{index}_{kind}"
    if kind == "conv2d":
        w = const(f"layer{index}.weight", layer.params["weight"])
        b = const(f"layer{index}.bias", layer.params["bias"].reshape(-1))
        k, s, p = spec["kernel"], spec["stride"], spec["padding"]
        node = helper.make_node(
            "Conv", [x, w, b], [y], kernel_shape=[k, k], strides=[s, s], pads=[p, p, p, p]
        )
    elif kind in ("maxpool2d", "avgpool2d"):
        # No padding and floor rounding, so every window is whole: the mean over the window
        # is the same whether or not padding would count (count_include_pad is moot).
        op = "MaxPool" if kind == "maxpool2d" else "AveragePool"
        size, stride = spec["size"], spec["stride"]
        node = helper.make_node(op, [x], [y], kernel_shape=[size, size], strides=[stride, stride])
    elif kind == "flatten":  # C order over (C, H, W), as numpycnn and the reference flatten
        node = helper.make_node("Flatten", [x], [y], axis=1)
    elif kind == "dense":  # y = x @ W.T + b
        w = const(f"layer{index}.weight", layer.params["weight"])
        b = const(f"layer{index}.bias", layer.params["bias"].reshape(-1))
        node = helper.make_node("Gemm", [x, w, b], [y], transB=1)
    elif kind == "relu":
        node = helper.make_node("Relu", [x], [y])
    elif kind == "leaky_relu":
        node = helper.make_node("LeakyRelu", [x], [y], alpha=float(spec["alpha"]))
    elif kind == "sigmoid":
        node = helper.make_node("Sigmoid", [x], [y])
    elif kind == "tanh":
        node = helper.make_node("Tanh", [x], [y])
    elif kind == "softmax":  # numpycnn's softmax is over the last axis
        node = helper.make_node("Softmax", [x], [y], axis=-1)
    else:
        raise _unsupported(index, kind, WHAT)
    return [node], y


def to_onnx(model):
    """The ``onnx.ModelProto`` of ``model`` (a model file path, ``ModelFile`` or
    ``numpycnn.Model``), checked with ``onnx.checker`` (full check, with shape inference)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    parts = parts_of(model)
    net, norm = parts.network, parts.normalization
    if norm is None:
        raise ExportError("ONNX export needs the model's normalisation: pass a loaded model")
    initializers = []

    def const(name, array):
        initializers.append(numpy_helper.from_array(np.asarray(array, np.float32), name))
        return name

    nodes = [
        helper.make_node("Sub", [INPUT, const("norm.mean", stat_array(norm["mean"]))], ["centred"]),
        helper.make_node(
            "Div", ["centred", const("norm.std", stat_array(norm["std"]))], ["normalized"]
        ),
    ]
    x = "normalized"
    for index, layer in enumerate(net.layers):
        layer_nodes, x = _layer_nodes(helper, index, layer.spec(), x, layer, const)
        nodes += layer_nodes
    if output_function(net, WHAT) == "softmax":
        nodes.append(helper.make_node("Softmax", [x], [OUTPUT], axis=-1))
    else:
        nodes.append(helper.make_node("Identity", [x], [OUTPUT]))

    doc = (
        f"numpycnn {__version__} model. Input '{INPUT}': float32 (N, "
        f"{', '.join(map(str, net.input_shape))}), raw pixel values 0-255, light digit on dark "
        f"as in MNIST; the first nodes normalise them, (pixels - {stat_text(norm['mean'])}) / "
        f"{stat_text(norm['std'])} ({norm['strategy']} normalisation of the training images). "
        "Output "
        f"'{OUTPUT}': (N, {', '.join(map(str, net.output_shape))}), {output_meaning(net)}, "
        f"classes {', '.join(classes(net))}."
    )
    graph = helper.make_graph(
        nodes,
        "numpycnn",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", *net.input_shape])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", *net.output_shape])],
        initializers,
        doc_string=doc,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    proto = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="numpycnn",
        producer_version=__version__,
        doc_string=doc,
    )
    # The oldest IR version that carries this opset, so that older runtimes load the file.
    proto.ir_version = helper.find_min_ir_version_for(opsets)
    helper.set_model_props(
        proto,
        {
            "normalization": json.dumps(norm),
            "classes": json.dumps(classes(net)),
            "layers": json.dumps(net.specs()),
            "loss": net.loss.kind,
            "input_convention": "raw pixels 0-255, light digit on dark, normalised in-graph",
        },
    )
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the ONNX graph fails onnx.checker: {exc}") from None
    return proto


def to_bytes(model):
    return to_onnx(model).SerializeToString()
