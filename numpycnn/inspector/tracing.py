"""One image's forward pass on copies of a model's layers, and the errors the inspector
raises.

A forward pass runs on shallow copies of the model's layers (the parameters are shared,
the caches are the copies' own, as ``Sequential.predict_proba`` does for threads), so any
number of inspections may run at once; the copies get their own gradient arrays, so a
backward pass through them never touches the model's parameters or ``flat_grads``.
"""

import copy
from dataclasses import dataclass

import numpy as np

__all__ = ["InspectionError", "Trace", "class_index", "layer_labels", "trace", "unit_index"]


class InspectionError(ValueError):
    """A request the inspector cannot answer: a class, layer or unit out of range, an
    input that is not a digit image. The message names the value at fault."""


def layer_labels(model):
    """One label per layer, its position from 1 and its kind (``"1-conv2d"``), as the
    training history names layers."""
    return [f"{i}-{layer.kind}" for i, layer in enumerate(model.layers, 1)]


@dataclass
class Trace:
    """One forward pass of one image: the input (1, C, H, W), every layer's output and
    the layer copies that hold the caches their ``backward`` needs."""

    model: object
    x: np.ndarray
    outputs: list
    layers: list

    @property
    def logits(self):
        """The last layer's output for the image (the scores the loss is taken on)."""
        return self.outputs[-1][0]

    @property
    def probabilities(self):
        return self.model.loss.probabilities(self.outputs[-1])[0]

    def input_of(self, index):
        """The array layer ``index`` (from 0) received."""
        return self.x if index == 0 else self.outputs[index - 1]


def _copy_layer(layer):
    """A shallow copy that shares the parameters but keeps its own caches and gradients."""
    twin = copy.copy(layer)
    twin.grads = {name: np.zeros_like(g) for name, g in layer.grads.items()}
    twin.needs_input_grad = True  # the input gradient is the saliency map
    twin.training = False  # inference: batch norm's running statistics, no dropout
    return twin


def trace(model, x):
    """The forward pass of ``x`` (one normalised image, (C, H, W) or (1, C, H, W))."""
    x = np.asarray(x, dtype=model.dtype)
    if x.shape == model.input_shape:
        x = x[None]
    if x.shape[1:] != model.input_shape or x.shape[0] != 1:
        raise InspectionError(
            f"expected one image of shape {model.input_shape}, got an array of shape {x.shape}"
        )
    layers = [_copy_layer(layer) for layer in model.layers]
    outputs, out = [], x
    for layer in layers:
        out = layer.forward(out)
        outputs.append(out)
    return Trace(model, x, outputs, layers)


def class_index(value, classes, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InspectionError(f"{what} must be an integer class index, got {value!r}")
    if not 0 <= value < classes:
        raise InspectionError(f"{what} {value} is out of range (0 to {classes - 1})")
    return int(value)


def unit_index(value, shape, label):
    """``value`` as a tuple index into a per-sample ``shape``; InspectionError if outside."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value
    ):
        raise InspectionError(f"unit must be a list of integers, got {value!r}")
    if len(value) != len(shape) or not all(0 <= v < n for v, n in zip(value, shape)):
        dims = "x".join(map(str, shape))
        raise InspectionError(f"unit {list(value)} is outside layer {label} (shape {dims})")
    return tuple(int(v) for v in value)
