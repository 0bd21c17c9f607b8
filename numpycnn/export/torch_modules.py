"""PyTorch interchange: a numpycnn network as the ``torch.nn.Sequential`` of the same layers
in the same order (``to_torch``; its ``state_dict`` is the ``--format torch`` file), and an
``nn.Sequential`` of such layers back as a numpycnn model (``from_torch``).

conv2d -> Conv2d, dense -> Linear, flatten -> Flatten, maxpool2d -> MaxPool2d, avgpool2d ->
AvgPool2d, relu -> ReLU, leaky_relu -> LeakyReLU, sigmoid -> Sigmoid, tanh -> Tanh,
softmax -> Softmax(dim=-1), batchnorm2d -> BatchNorm2d and batchnorm1d -> BatchNorm1d (with
the running statistics and batch count as their buffers), dropout -> Dropout. The modules
hold the weights only: the caller normalises the
pixels, ``(x - mean) / std``, and applies the loss's output function (softmax over the
logits for softmax_cross_entropy models), as PyTorch code conventionally does; the state_dict
keys stay "0.weight", "0.bias", ... PyTorch is imported on first use.
"""

from collections import OrderedDict

import numpy as np

from ..engine.model import MNIST_SHAPE, Sequential, build_layer
from .common import ExportError, output_function, parts_of, require
from .common import unsupported as _unsupported

WHAT = "PyTorch export"


def _torch():
    return require("torch", "PyTorch interchange", "pip install torch")


def _module_args(index, spec, in_shape):
    """(torch.nn class name, positional args, keyword args) of one layer."""
    kind = spec["type"]
    if kind == "conv2d":
        return (
            "Conv2d",
            (in_shape[0], spec["filters"], spec["kernel"]),
            {"stride": spec["stride"], "padding": spec["padding"]},
        )
    if kind == "dense":
        return "Linear", (in_shape[0], spec["units"]), {}
    if kind in ("maxpool2d", "avgpool2d"):
        name = "MaxPool2d" if kind == "maxpool2d" else "AvgPool2d"
        return name, (spec["size"],), {"stride": spec["stride"]}
    simple = {"flatten": "Flatten", "relu": "ReLU", "sigmoid": "Sigmoid", "tanh": "Tanh"}
    if kind in simple:
        return simple[kind], (), {}
    if kind == "leaky_relu":
        return "LeakyReLU", (spec["alpha"],), {}
    if kind == "softmax":
        return "Softmax", (), {"dim": -1}
    if kind in ("batchnorm2d", "batchnorm1d"):
        name = "BatchNorm2d" if kind == "batchnorm2d" else "BatchNorm1d"
        return name, (in_shape[0],), {"eps": spec["eps"], "momentum": spec["momentum"]}
    if kind == "dropout":
        return "Dropout", (spec["p"],), {}
    raise _unsupported(index, kind, WHAT)


def _specs_with_shapes(network):
    shape = network.input_shape
    for index, layer in enumerate(network.layers):
        yield index, layer, layer.spec(), shape
        shape = network.shapes[index]


def torch_source(model):
    """Python source of the equivalent ``nn.Sequential`` (to paste next to a state_dict)."""
    network = parts_of(model).network
    lines = []
    for index, _, spec, shape in _specs_with_shapes(network):
        name, args, kwargs = _module_args(index, spec, shape)
        text = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
        lines.append(f"    nn.{name}({text}),")
    return "nn.Sequential(\n" + "\n".join(lines) + "\n)"


def to_torch(model):
    """The ``torch.nn.Sequential`` of ``model`` (a ``numpycnn.Model``, model file path,
    ``ModelFile`` or engine ``Sequential``), in eval mode, with its weights, in its dtype."""
    torch = _torch()
    nn = torch.nn
    network = parts_of(model).network
    dtype = getattr(torch, str(network.dtype))
    modules = []
    for index, layer, spec, shape in _specs_with_shapes(network):
        name, args, kwargs = _module_args(index, spec, shape)
        cls = getattr(nn, name)
        if layer.params:  # no random initialisation: it would draw from torch's global RNG
            module = nn.utils.skip_init(cls, *args, **kwargs, dtype=dtype)
            with torch.no_grad():
                weight = layer.params["weight"].reshape(module.weight.shape)
                module.weight.copy_(torch.from_numpy(weight.copy()))
                module.bias.copy_(torch.from_numpy(layer.params["bias"].reshape(-1).copy()))
                for key, value in layer.state.items():  # batch norm's buffers
                    buffer = getattr(module, key)
                    buffer.copy_(torch.from_numpy(value.reshape(buffer.shape).copy()))
        else:
            module = cls(*args, **kwargs)
        modules.append(module)
    return nn.Sequential(*modules).eval()


def state_dict(model):
    """The ``state_dict`` of ``to_torch(model)``: keys "0.weight", "0.bias", ..."""
    return OrderedDict((k, v.detach().clone()) for k, v in to_torch(model).state_dict().items())


def to_bytes(model):
    """The ``torch.save`` file of ``state_dict(model)``; ``torch.load(f, weights_only=True)``
    reads it back."""
    import io

    torch = _torch()
    buffer = io.BytesIO()
    torch.save(state_dict(model), buffer)
    return buffer.getvalue()


# ----- from PyTorch -----


def _pair(index, module, attr):
    """An int from a module's int-or-square-pair attribute; ExportError otherwise."""
    value = getattr(module, attr)
    if isinstance(value, tuple | list):
        if len(set(value)) != 1:
            raise _refused(index, module, f"{attr}={tuple(value)} (numpycnn's are square)")
        value = value[0]
    return int(value)


def _refused(index, module, why):
    return ExportError(f"module {index} ({type(module).__name__}): unsupported {why}")


def _spec_of(index, module, shape, nn):
    """The numpycnn layer spec of one torch module at per-sample input ``shape``."""
    kind = type(module)
    if kind is nn.Conv2d:
        k = _pair(index, module, "kernel_size")
        padding = module.padding
        if padding == "valid":
            padding = 0
        elif padding == "same":
            if k % 2 == 0:
                raise _refused(index, module, "padding='same' with an even kernel (asymmetric)")
            padding = k // 2
        else:
            padding = _pair(index, module, "padding")
        if _pair(index, module, "dilation") != 1:
            raise _refused(index, module, f"dilation={module.dilation}")
        if module.groups != 1:
            raise _refused(index, module, f"groups={module.groups}")
        if module.padding_mode != "zeros":
            raise _refused(index, module, f"padding_mode={module.padding_mode!r}")
        if len(shape) != 3 or module.in_channels != shape[0]:
            raise _refused(index, module, f"in_channels={module.in_channels} for input {shape}")
        s = _pair(index, module, "stride")
        return {"type": "conv2d", "filters": module.out_channels, "kernel": k, "stride": s,
                "padding": padding}  # fmt: skip
    if kind is nn.Linear:
        if shape != (module.in_features,):
            raise _refused(index, module, f"in_features={module.in_features} for input {shape}")
        return {"type": "dense", "units": module.out_features}
    if kind in (nn.MaxPool2d, nn.AvgPool2d):
        if _pair(index, module, "padding") != 0:
            raise _refused(index, module, f"padding={module.padding}")
        if module.ceil_mode:
            raise _refused(index, module, "ceil_mode=True")
        if kind is nn.MaxPool2d and (_pair(index, module, "dilation") != 1):
            raise _refused(index, module, f"dilation={module.dilation}")
        if kind is nn.MaxPool2d and module.return_indices:
            raise _refused(index, module, "return_indices=True")
        if kind is nn.AvgPool2d and module.divisor_override is not None:
            raise _refused(index, module, f"divisor_override={module.divisor_override}")
        size = _pair(index, module, "kernel_size")
        stride = size if module.stride is None else _pair(index, module, "stride")
        return {"type": "maxpool2d" if kind is nn.MaxPool2d else "avgpool2d", "size": size,
                "stride": stride}  # fmt: skip
    if kind is nn.Flatten:
        if module.start_dim != 1 or module.end_dim != -1:
            raise _refused(index, module, f"start_dim={module.start_dim}, end_dim={module.end_dim}")
        return {"type": "flatten"}
    if kind is nn.LeakyReLU:
        return {"type": "leaky_relu", "alpha": float(module.negative_slope)}
    if kind is nn.Softmax:
        if module.dim not in (-1, len(shape)):
            raise _refused(index, module, f"dim={module.dim} (numpycnn's is over the last axis)")
        return {"type": "softmax"}
    simple = {nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Tanh: "tanh"}
    if kind in simple:
        return {"type": simple[kind]}
    if kind in (nn.BatchNorm2d, nn.BatchNorm1d):
        if not (module.affine and module.track_running_stats):
            raise _refused(index, module, "affine=False or track_running_stats=False")
        if module.num_features != shape[0]:
            raise _refused(index, module, f"num_features={module.num_features} for {shape}")
        name = "batchnorm2d" if kind is nn.BatchNorm2d else "batchnorm1d"
        return {"type": name, "momentum": module.momentum, "eps": float(module.eps)}
    if kind is nn.Dropout:
        return {"type": "dropout", "p": float(module.p)}
    raise ExportError(
        f"module {index} ({kind.__name__}): not a layer numpycnn has (it takes Conv2d, Linear, "
        "Flatten, MaxPool2d, AvgPool2d, ReLU, LeakyReLU, Sigmoid, Tanh, Softmax, BatchNorm2d, "
        "BatchNorm1d, Dropout)"
    )


def from_torch(module, normalization, *, loss="softmax_cross_entropy", input_shape=MNIST_SHAPE):
    """A ``numpycnn.Model`` computing what the ``torch.nn.Sequential`` ``module`` computes.

    ``normalization``: how the pixels (0-255) are normalised before ``module`` sees them: a
    ``numpycnn.data.Normalization``, a dict {strategy, mean, std}, or a pair (mean, std) in
    pixel units (torchvision's ``ToTensor`` then ``Normalize(m, s)`` is (255*m, 255*s)).
    ``loss`` names what the output means (softmax_cross_entropy: ``module`` gives logits).
    ``input_shape``: one sample's (C, H, W). The dtype is the module's (float32 or float64).
    Raises ExportError naming the first module numpycnn has no equal of.
    """
    torch = _torch()
    nn = torch.nn
    from ..api import Model
    from ..data import Normalization

    if type(module) is not nn.Sequential:
        raise ExportError(f"expected a torch.nn.Sequential, got {type(module).__name__}")
    children = list(module)
    if not children:
        raise ExportError("the torch.nn.Sequential is empty")
    if loss == "softmax_cross_entropy" and type(children[-1]) is nn.Softmax:
        raise ExportError(
            f"module {len(children) - 1} (Softmax): softmax_cross_entropy models end in logits "
            "and numpycnn applies the softmax: pass the module without its last Softmax"
        )
    params = list(module.parameters())
    dtypes = {p.dtype for p in params}
    if len(dtypes) > 1 or (
        dtypes and str(params[0].dtype) not in ("torch.float32", "torch.float64")
    ):
        raise ExportError(
            f"parameters must all be float32 or float64, got {sorted(map(str, dtypes))}"
        )
    dtype = str(params[0].dtype).removeprefix("torch.") if params else "float32"

    specs, shape = [], tuple(input_shape)
    for index, child in enumerate(children):
        spec = _spec_of(index, child, shape, nn)
        try:
            shape = build_layer(spec).output_shape(shape)
        except ValueError as exc:
            raise ExportError(f"module {index} ({type(child).__name__}): {exc}") from None
        specs.append(spec)
    try:
        network = Sequential(specs, loss=loss, input_shape=input_shape, dtype=dtype)
    except ValueError as exc:
        raise ExportError(str(exc)) from None
    output_function(network, "from_torch")
    for index, child in enumerate(children):
        layer = network.layers[index]
        if "weight" in layer.params:
            weight = child.weight.detach().cpu().numpy()
            bias = np.zeros(weight.shape[0], weight.dtype)
            if child.bias is not None:
                bias = child.bias.detach().cpu().numpy()
            layer.params["weight"][...] = weight.reshape(layer.params["weight"].shape)
            layer.params["bias"][...] = bias.reshape(-1, 1)
        for key, value in layer.state.items():  # batch norm's running statistics
            value[...] = getattr(child, key).detach().cpu().numpy().reshape(value.shape)

    if isinstance(normalization, tuple | list) and len(normalization) == 2:
        mean, std = map(float, normalization)
        strategy = "unit" if (mean, std) == (0.0, 255.0) else "standard"
        normalization = Normalization(strategy, mean, std)
    elif isinstance(normalization, dict):
        normalization = Normalization.from_dict(normalization)
    elif not isinstance(normalization, Normalization):
        raise ExportError(
            "normalization must be a Normalization, a dict {strategy, mean, std} or a pair "
            f"(mean, std), got {normalization!r}"
        )
    return Model(network, normalization)
