"""What every export format needs: the model's parts, its classes, the meaning of its output,
optional packages imported on first use, and the one error type of the package."""

import importlib
import os
from dataclasses import dataclass, field

import numpy as np

from ..engine.model import Sequential


class ExportError(ValueError):
    """A model that cannot be exported (or imported) as asked; the message names the file,
    layer or setting at fault."""


#: loss -> the function that turns the network's last output into what ``predict_proba``
#: returns (``Loss.probabilities``): softmax for the fused softmax + cross-entropy, the
#: output itself for the others (their networks end in their own sigmoid layer, if any).
OUTPUT_FUNCTIONS = {
    "softmax_cross_entropy": "softmax",
    "binary_cross_entropy": None,
    "mean_squared_error": None,
    "half_sum_squared_error": None,
    "mean_absolute_error": None,
}


@dataclass
class Parts:
    """A model as the exporters see it: the network, the normalisation of its input pixels
    (plain {strategy, mean, std}) and what a model file records besides."""

    network: Sequential
    normalization: dict | None
    config: dict | None = None
    metrics: dict | None = None
    cost: list = field(default_factory=list)
    history: list = field(default_factory=list)


def parts_of(model):
    """``Parts`` of a model file path, a ``modelfile.ModelFile``, a ``numpycnn.Model`` (what
    ``numpycnn.load`` returns) or a bare engine ``Sequential`` (no normalisation)."""
    from ..modelfile import ModelFile, load_model

    if isinstance(model, Parts):
        return model
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    if isinstance(model, ModelFile):
        return Parts(
            model.model,
            dict(model.normalization),
            model.config,
            model.metrics,
            list(model.cost),
            list(model.history),
        )
    if isinstance(model, Sequential):
        return Parts(model, None)
    network, norm = getattr(model, "network", None), getattr(model, "normalization", None)
    if isinstance(network, Sequential) and norm is not None:
        norm = norm.to_dict() if hasattr(norm, "to_dict") else dict(norm)
        return Parts(
            network,
            norm,
            getattr(model, "config", None),
            getattr(model, "metrics", None),
            history=list(getattr(model, "history", ()) or ()),
        )
    raise TypeError(
        "expected a model file path, a ModelFile, a numpycnn.Model or an engine Sequential, "
        f"got {type(model).__name__}"
    )


def stat_text(value):
    """A normalisation statistic as text: '33.3184', or '[125.3, 123, 113.9]' per channel."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}"


def stat_array(value):
    """A normalisation statistic as float32 broadcasting over (N, C, H, W): a scalar, or
    (1, C, 1, 1) for one value per channel."""
    array = np.asarray(value, np.float32)
    return array.reshape(1, -1, 1, 1) if array.ndim else array


def classes(network):
    """The names of the network's output classes: the digits "0" to "9" for MNIST."""
    return [str(k) for k in range(network.output_shape[-1])]


def output_function(network, what):
    """The output function of the network's loss (see OUTPUT_FUNCTIONS)."""
    kind = getattr(network.loss, "kind", None)
    if kind not in OUTPUT_FUNCTIONS:
        raise ExportError(
            f"loss {kind or type(network.loss).__name__!r}: {what} knows no output function for it"
        )
    return OUTPUT_FUNCTIONS[kind]


def output_meaning(network):
    """How the exported output relates to numpycnn's ``predict_proba``, in words."""
    if output_function(network, "export") == "softmax":
        return "class probabilities (softmax over the classes)"
    return f"class scores (the last layer's output, as numpycnn's {network.loss.kind} reads it)"


def require(module, what, install):
    """Import an optional package, or raise a one-line ExportError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{what} needs the {module} package: {install}") from None


def unsupported(index, kind, what):
    return ExportError(f"layer {index} ({kind}): {what} has no equivalent of this layer type")
