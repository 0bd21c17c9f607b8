"""Inside a trained network, for one image: every layer's output, a unit's arithmetic, the
backward pass, the filters, and over the test set the confusion matrix and its images.

Everything is computed by the engine's own layers: a forward pass runs on shallow copies
of the model's layers (the parameters are shared, the caches are the copies' own, as
``Sequential.predict_proba`` does for threads), so any number of inspections may run at
once, and the backward pass drives the copies' ``backward`` methods with an upstream
gradient of our choosing. The copies get their own gradient arrays: the model's
parameters and ``flat_grads`` are never touched.

``Inspector`` is the one face: it holds a loaded model file and answers with plain
dicts of Python numbers and NumPy arrays, which the server turns into JSON and the CLI
into figures. Bad requests raise ``InspectionError`` (a ``ValueError``) naming the value
at fault. The module never prints.
"""

import copy
import math
import threading
from dataclasses import dataclass

import numpy as np

from ..data import Normalization
from ..engine import losses
from ..imageprep import SIZE, decode_digit
from .fields import geometry, receptive_field

__all__ = [
    "NEGLIGIBLE",
    "InspectionError",
    "Inspector",
    "Trace",
    "layer_labels",
    "softmax_steps",
    "trace",
]

#: Activation layers: elementwise, so a unit of theirs is the unit of the layer before.
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
#: How many of a dense unit's terms ``unit`` lists, largest magnitude first.
DENSE_TERMS = 12
#: At most this many images are listed for one confusion-matrix cell.
CELL_LIMIT = 200
#: Longer per-batch cost histories are averaged in bins down to about this many points.
COST_POINTS = 2000
#: A gradient map is negligible when its largest |value| is below this fraction of the same
#: map's largest |value| for the class score of the same class (see ``backward``).
NEGLIGIBLE = 1e-6
#: What ``relative`` compares a gradient map with, in words (the page shows it).
REFERENCE = (
    "the same map's largest |gradient| for the score (logit) of the same class: backward "
    "passes are linear in the gradient at the output, and a class score's is 1"
)


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


def backward(tr, target=None, label=None):
    """The backward pass of one traced image, by the layers' own ``backward`` methods.

    Without ``label``: the gradient of the class score ``z[target]`` (the network's last
    output, the logits for a softmax loss), ``target`` defaulting to the predicted class.
    With ``label``: the gradient of the model's loss for that true label. Returns the
    quantity's description and value, the gradient reaching each layer's output, the
    input gradient (the saliency map), each layer's weight and bias gradients, and for
    every map its largest |value| beside the same map's for the score of the same class
    (``reference``): a loss of ~0 (a confident, correct image) gives a map ~1e-9 of it.
    """
    out = tr.outputs[-1]
    classes = out.shape[1]
    predicted = int(np.argmax(tr.logits))
    if label is not None:
        label = _class_index(label, classes, "label")
        loss = losses.get(tr.model.loss.kind)  # its own state, not the model's
        value = loss.forward(out, np.array([label]))
        quantity = {"kind": "loss", "label": label, "loss": tr.model.loss.kind, "value": value}
        scored = label
        # the reference first: the real pass below overwrites the copies' weight gradients
        reference = _max_abs(_run(tr, _one_hot_like(out, label)))
        result = _run(tr, loss.backward())
    else:
        target = predicted if target is None else _class_index(target, classes, "class")
        quantity = {"kind": "score", "class": target, "value": float(out[0, target])}
        scored = target
        result = _run(tr, _one_hot_like(out, target))
        reference = _max_abs(result)
    return {
        "quantity": quantity,
        "predicted": predicted,
        **result,
        "max_abs": _max_abs(result),
        "reference": reference,
        "reference_class": scored,
    }


def _one_hot_like(out, k):
    grad = np.zeros_like(out)
    grad[0, k] = 1
    return grad


def _run(tr, grad):
    """Drive the traced copies' ``backward`` from ``grad`` at the output."""
    reaching = [None] * len(tr.layers)
    for i in reversed(range(len(tr.layers))):
        reaching[i] = grad
        grad = tr.layers[i].backward(grad)
    return {
        "input": grad[0],
        "layers": [g[0] for g in reaching],
        "weights": [dict(layer.grads) for layer in tr.layers],
    }


def _max_abs(result):
    """The largest |value| of every map of a backward pass (plain floats, so that a later
    pass over the same copies cannot change them)."""
    return {
        "input": float(np.abs(result["input"]).max()),
        "layers": [float(np.abs(g).max()) for g in result["layers"]],
        "weights": [{k: float(np.abs(g).max()) for k, g in w.items()} for w in result["weights"]],
    }


def smallness(value, reference):
    """(relative size, negligible) of a map whose largest |value| is ``value`` against its
    reference's; a map of zeros is negligible, a reference of zeros gives no ratio."""
    relative = value / reference if reference > 0 else None
    negligible = value == 0 or (relative is not None and relative < NEGLIGIBLE)
    return relative, bool(negligible)


def softmax_steps(tr):
    """The softmax of the traced image's logits, step by step, as the engine computes it
    (``activations.softmax``): the largest logit m, z - m, e^(z - m), their sum, and each
    exp over the sum. None when the network does not end in a softmax (its loss or its
    last layer)."""
    model = tr.model
    if model.layers[-1].kind == "softmax":
        z = tr.input_of(len(model.layers) - 1)
    elif model.loss.kind == "softmax_cross_entropy":
        z = tr.outputs[-1]
    else:
        return None
    m = z.max(axis=-1, keepdims=True)
    shifted = z - m
    e = np.exp(shifted)
    total = e.sum(axis=-1, keepdims=True)
    p = e / total
    return {
        "logits": z[0].tolist(),
        "max": float(m[0, 0]),
        "shifted": shifted[0].tolist(),
        "exp": e[0].tolist(),
        "sum": float(total[0, 0]),
        "probabilities": p[0].tolist(),
    }


def _class_index(value, classes, what):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InspectionError(f"{what} must be an integer class index, got {value!r}")
    if not 0 <= value < classes:
        raise InspectionError(f"{what} {value} is out of range (0 to {classes - 1})")
    return int(value)


def _unit_index(value, shape, label):
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


def unit_arithmetic(tr, index, unit):
    """How layer ``index`` (from 0) computed one unit of its output, in numbers.

    A conv unit: its C x K x K receptive field, the kernel, their products, the sum, the
    bias and the pre-activation. A max-pool unit: its window and which input won. A dense
    unit: its largest terms. A unit of an activation layer: the arithmetic of the layer
    before it, then the activation. Recomputed in float64 from the layer's input and
    parameters, with the engine's own output beside it (``output``) and their difference.
    """
    layers = tr.model.layers
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise InspectionError(f"layer must be an integer index, got {index!r}")
    if not 0 <= index < len(layers):
        raise InspectionError(f"layer {index} is out of range (0 to {len(layers) - 1})")
    labels = layer_labels(tr.model)
    unit = _unit_index(unit, tr.outputs[index].shape[1:], labels[index])
    kind = layers[index].kind
    if kind in ACTIVATIONS and index > 0 and layers[index - 1].kind in ("conv2d", "dense"):
        result = _unit(tr, index - 1, unit, labels)
        result["activation"] = _activation(tr, index, unit, labels)
        result["clicked"] = {"layer": int(index), "label": labels[index]}
        return result
    result = _unit(tr, index, unit, labels)
    nxt = index + 1
    if nxt < len(layers) and layers[nxt].kind in ACTIVATIONS and kind in ("conv2d", "dense"):
        result["activation"] = _activation(tr, nxt, unit, labels)
    result["clicked"] = {"layer": int(index), "label": labels[index]}
    return result


def _activation(tr, index, unit, labels):
    layer = tr.model.layers[index]
    return {
        "layer": int(index),
        "label": labels[index],
        "kind": layer.kind,
        "input": float(tr.input_of(index)[(0, *unit)]),
        "output": float(tr.outputs[index][(0, *unit)]),
    }


def _source(labels, index):
    return "input" if index == 0 else labels[index - 1]


def _unit(tr, index, unit, labels):
    layer = tr.model.layers[index]
    x = tr.input_of(index)[0].astype(np.float64)
    engine = float(tr.outputs[index][(0, *unit)])
    base = {
        "layer": int(index),
        "label": labels[index],
        "kind": layer.kind,
        "unit": list(unit),
        "source": _source(labels, index),
        "output": engine,
        "activation": None,
    }
    if layer.kind == "conv2d":
        f, i, j = unit
        k, s, p = layer.kernel, layer.stride, layer.padding
        xp = np.pad(x, ((0, 0), (p, p), (p, p)))
        patch = xp[:, i * s : i * s + k, j * s : j * s + k]
        kernel = layer.params["weight"][f].astype(np.float64)
        products = patch * kernel
        total = float(products.sum())
        bias = float(layer.params["bias"][f, 0])
        pre = total + bias
        return {
            **base,
            # the window in the unpadded input's coordinates (negative or beyond: padding)
            "rows": [i * s - p, i * s - p + k],
            "cols": [j * s - p, j * s - p + k],
            "patch": patch,
            "kernel": kernel,
            "products": products,
            "channel_sums": products.sum(axis=(1, 2)),
            "sum": total,
            "bias": bias,
            "preactivation": pre,
            "difference": pre - engine,
        }
    if layer.kind in ("maxpool2d", "avgpool2d"):
        c, i, j = unit
        size, s = layer.size, layer.stride
        window = x[c, i * s : i * s + size, j * s : j * s + size]
        result = {**base, "rows": [i * s, i * s + size], "cols": [j * s, j * s + size]}
        if layer.kind == "maxpool2d":
            # the first maximum in row-major order, as the engine routes the gradient
            u, v = divmod(int(np.argmax(window)), size)
            value = float(window[u, v])
            return {
                **result,
                "window": window,
                "winner": [u, v],
                "winner_position": [c, i * s + u, j * s + v],
                "value": value,
                "difference": value - engine,
            }
        mean = float(window.mean())
        return {**result, "window": window, "value": mean, "difference": mean - engine}
    if layer.kind == "dense":
        (k,) = unit
        w = layer.params["weight"][k].astype(np.float64)
        terms = x * w
        order = np.argsort(-np.abs(terms), kind="stable")[:DENSE_TERMS]
        shape = tr.input_of(index - 1).shape[1:] if index > 0 else tr.x.shape[1:]
        flat_from = shape if index > 0 and tr.model.layers[index - 1].kind == "flatten" else None
        total = float(terms.sum())
        bias = float(layer.params["bias"][k, 0])
        pre = total + bias
        listed = []
        for n in order:
            entry = {"index": int(n), "x": float(x[n]), "w": float(w[n]), "product": terms[n]}
            if flat_from is not None and len(flat_from) > 1:
                entry["from"] = [int(v) for v in np.unravel_index(n, flat_from)]
            listed.append(entry)
        return {
            **base,
            "terms": [{**t, "product": float(t["product"])} for t in listed],
            "count": int(x.size),
            "sum": total,
            "rest": total - float(terms[order].sum()),
            "bias": bias,
            "preactivation": pre,
            "difference": pre - engine,
        }
    if layer.kind == "flatten":
        source = [int(v) for v in np.unravel_index(unit[0], x.shape)]
        value = float(x[tuple(source)])
        return {**base, "from": source, "value": value, "difference": value - engine}
    # an activation or softmax with nothing linear before it: input and output
    return {**base, "input": float(x[unit]), "difference": 0.0}


def confusion_matrix(labels, predicted, classes=10):
    """confusion[t, p]: the images of true class t predicted as p (as training.evaluate)."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predicted)), 1)
    return matrix


def _finite(value):
    """``value`` (a history entry) with NumPy scalars as Python numbers and NaN as None."""
    if isinstance(value, dict):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)


def binned(values, points=COST_POINTS):
    """``values`` averaged in equal bins down to at most about ``points``: (bin, means)."""
    values = np.asarray(values, dtype=np.float64)
    every = max(1, math.ceil(values.size / points))
    if every == 1:
        return 1, values
    n = values.size // every * every
    means = values[:n].reshape(-1, every).mean(axis=1)
    if n < values.size:
        means = np.append(means, values[n:].mean())
    return every, means


class Inspector:
    """A loaded model file (``modelfile.ModelFile``), ready to be looked inside.

    ``test_set``: a callable returning the test (images uint8 (N, 28, 28), labels), called
    once, on the first request for the confusion matrix; ``train_set``: a callable
    returning the training images uint8 (N, 28, 28), called once, for the
    out-of-distribution cue (``ood``; ``warm`` prepares it ahead); ``threads``: threads for
    the test-set predictions; ``name``: the model file's name, for display.
    """

    def __init__(self, saved, test_set=None, threads=1, name="", train_set=None):
        self.saved = saved
        self._train_set, self._novelty, self._novelty_lock = train_set, None, threading.Lock()
        self.novelty_error = "no comparison with the training digits: started without them"
        self.model = saved.model
        self.norm = Normalization.from_dict(saved.normalization)
        self.name = str(name)
        self.labels = layer_labels(self.model)
        self.classes = int(self.model.output_shape[0])
        self._test_set, self._threads = test_set, threads
        self._confusion, self._lock = None, threading.Lock()

    # ----- the model -----

    def summary(self):
        """The network layer by layer, with shapes and parameter counts."""
        model, shape, layers = self.model, self.model.input_shape, []
        for i, layer in enumerate(model.layers):
            out = model.shapes[i]
            layers.append(
                {
                    "index": i,
                    "label": self.labels[i],
                    "kind": layer.kind,
                    "spec": layer.spec(),
                    "input_shape": list(shape),
                    "output_shape": list(out),
                    "params": int(sum(p.size for p in layer.params.values())),
                    "geometry": geometry(layer, shape),
                }
            )
            shape = out
        meta = self.saved.metadata
        return {
            "name": self.name,
            "format": meta.get("format"),
            "dtype": str(model.dtype),
            "loss": model.loss.kind,
            "input_shape": list(model.input_shape),
            "classes": self.classes,
            "num_params": int(model.num_params),
            "normalization": dict(self.saved.normalization),
            "metrics": _finite(self.saved.metrics) if self.saved.metrics else None,
            "layers": layers,
            "has_test_set": self._test_set is not None,
        }

    # ----- one image -----

    def digit(self, image=None, pixels=None, test_index=None, name=None):
        """The 28x28 uint8 MNIST-form digit from exactly one of: ``image``, the bytes of an
        image file (prepared as ``numpycnn predict`` prepares it; ``name``, the file's name,
        leads its error messages); ``pixels``, 784 grey levels 0-255 already in MNIST form
        (row-major); ``test_index``, a test image."""
        given = [v is not None for v in (image, pixels, test_index)]
        if sum(given) != 1:
            raise InspectionError("give exactly one of an image, 784 pixels or a test index")
        if image is not None:
            return decode_digit(image, name or "uploaded image")
        if pixels is not None:
            a = np.asarray(pixels)
            if a.size != SIZE * SIZE or a.dtype.kind not in "iuf":
                raise InspectionError(f"pixels must be {SIZE * SIZE} numbers 0-255")
            if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 255):
                raise InspectionError("pixels must be numbers from 0 to 255")
            return np.rint(a).astype(np.uint8).reshape(SIZE, SIZE)
        images, _ = self._test_arrays()
        if isinstance(test_index, bool) or not isinstance(test_index, (int, np.integer)):
            raise InspectionError(f"test index must be an integer, got {test_index!r}")
        if not 0 <= test_index < len(images):
            raise InspectionError(
                f"test index {test_index} is out of range (0 to {len(images) - 1})"
            )
        return np.array(images[test_index], dtype=np.uint8)

    def trace(self, digit):
        """The forward pass of a 28x28 uint8 digit, normalised as the model's training was."""
        return trace(self.model, self.norm.norm(digit)[0])

    def test_label(self, test_index):
        """The true label of test image ``test_index`` (checked as ``digit`` checks it)."""
        self.digit(test_index=test_index)
        return int(self._test_arrays()[1][test_index])

    def predict(self, digit):
        """The digit's class probabilities and predicted class."""
        tr = self.trace(digit)
        return {"probabilities": tr.probabilities, "predicted": int(np.argmax(tr.logits))}

    def softmax(self, tr):
        """``softmax_steps`` of the traced image: logits -> exp -> normalise."""
        return softmax_steps(tr)

    def activations(self, tr):
        """Every layer's output for the traced image, with its label, shape and range."""
        return [
            {
                "index": i,
                "label": self.labels[i],
                "kind": self.model.layers[i].kind,
                "shape": list(out.shape[1:]),
                "min": float(out.min()),
                "max": float(out.max()),
                "values": out[0],
            }
            for i, out in enumerate(tr.outputs)
        ]

    def backward(self, tr, target=None, label=None, true_label=None):
        """``backward`` of the traced image (see the module function), with each layer's
        gradient described for display: label, range, largest |value| and whether it is
        negligible, and conv filters' weight gradients; the saliency map and gradient x
        input. ``true_label``: the image's known label (a test image's); when the image is
        misclassified and neither ``target`` nor ``label`` is given, Q is the loss for it."""
        predicted = int(np.argmax(tr.logits))
        if target is not None or label is not None:
            reason = "requested"
        elif true_label is not None and predicted != true_label:
            label, reason = true_label, "the true label of a misclassified test image"
        else:
            reason = "the predicted class"
        result = backward(tr, target, label)
        result["quantity"]["reason"] = reason
        biggest, reference = result["max_abs"], result["reference"]
        layers = []
        for i, (g, grads) in enumerate(zip(result["layers"], result["weights"])):
            relative, negligible = smallness(biggest["layers"][i], reference["layers"][i])
            entry = {
                "index": i,
                "label": self.labels[i],
                "kind": self.model.layers[i].kind,
                "shape": list(g.shape),
                "min": float(g.min()),
                "max": float(g.max()),
                "max_abs": biggest["layers"][i],
                "relative": relative,
                "negligible": negligible,
                "values": g,
            }
            if "weight" in grads:
                w = grads["weight"]
                entry["weight_grad_norm"] = float(np.linalg.norm(w))
                entry["bias_grad"] = grads["bias"][:, 0]
                w_big, w_ref = biggest["weights"][i]["weight"], reference["weights"][i]["weight"]
                entry["weight_grad_max_abs"] = w_big
                rel, neg = smallness(w_big, w_ref)
                entry["weight_grad_relative"], entry["weight_grad_negligible"] = rel, neg
                if self.model.layers[i].kind == "conv2d":
                    entry["weight_grad"] = w
                    entry["weight_grad_range"] = [float(w.min()), float(w.max())]
            layers.append(entry)
        x = result["input"]
        times = x * tr.x[0]  # gradient x input: each pixel's first-order share of Q
        relative, negligible = smallness(biggest["input"], reference["input"])
        return {
            "quantity": result["quantity"],
            "predicted": predicted,
            "input": x,
            "input_range": [float(x.min()), float(x.max())],
            "input_max_abs": biggest["input"],
            "input_relative": relative,
            "input_negligible": negligible,
            "input_times_gradient": times,
            "input_times_gradient_range": [float(times.min()), float(times.max())],
            "input_times_gradient_sum": float(times.sum(dtype=np.float64)),
            "negligible_below": NEGLIGIBLE,
            "reference": REFERENCE,
            "reference_class": result["reference_class"],
            "layers": layers,
        }

    def unit(self, tr, layer, unit):
        """``unit_arithmetic`` of the traced image, with the clicked unit's ``field``."""
        result = unit_arithmetic(tr, layer, unit)
        result["field"] = self.field(layer, unit)
        return result

    def field(self, layer, unit):
        """``fields.receptive_field`` of ``unit`` in layer ``layer`` (from 0): the region
        of the input and of every earlier layer it depends on. Needs no image."""
        model = self.model
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise InspectionError(f"layer must be an integer index, got {layer!r}")
        if not 0 <= layer < len(model.layers):
            raise InspectionError(f"layer {layer} is out of range (0 to {len(model.layers) - 1})")
        unit = _unit_index(unit, model.shapes[layer], self.labels[layer])
        return receptive_field(model, self.labels, int(layer), unit)

    # ----- the whole model -----

    def filters(self):
        """Every conv layer's kernels (F, C, K, K) and biases, with their value range."""
        out = []
        for i, layer in enumerate(self.model.layers):
            if layer.kind != "conv2d":
                continue
            w = layer.params["weight"]
            out.append(
                {
                    "index": i,
                    "label": self.labels[i],
                    "shape": list(w.shape),
                    "weight": w,
                    "bias": layer.params["bias"][:, 0],
                    "min": float(w.min()),
                    "max": float(w.max()),
                }
            )
        return out

    def history(self):
        """The per-batch cost (binned when long) and the per-epoch history, if any."""
        every, cost = binned(self.saved.cost)
        return {
            "batches": len(self.saved.cost),
            "cost_every": every,
            "cost": [float(c) if math.isfinite(c) else None for c in cost],
            "loss": self.model.loss.kind,
            "epochs": _finite(self.saved.history),
            "metrics": _finite(self.saved.metrics) if self.saved.metrics else None,
        }

    # ----- does it look like a digit? -----

    def novelty(self):
        """The ``novelty.Novelty`` of this model, built on the first call that finds the
        training images (their features take a second or two); None without them, with
        the reason in ``novelty_error``. A failure to read them (files not downloaded yet)
        is tried again on the next call."""
        with self._novelty_lock:
            if self._novelty is None and self._train_set is not None:
                from ..data import DataError
                from .novelty import Novelty

                try:
                    train = np.asarray(self._train_set())
                    test, _ = self._test_arrays()
                    self._novelty = Novelty(self.model, self.norm, train, test)
                except DataError as exc:
                    self.novelty_error = f"no comparison with the training digits: {exc}"
        return self._novelty

    def warm(self):
        """Prepare what the first requests would otherwise wait for (the novelty sample)."""
        self.novelty()

    def ood(self, digit):
        """Whether the digit looks like the training digits at all (``Novelty.judge``), or
        ``{"flag": None, "text": why not}`` without the MNIST training images."""
        novelty = self.novelty()
        if novelty is None:
            return {"flag": None, "text": self.novelty_error}
        return novelty.judge(digit)

    # ----- the test set -----

    def _test_arrays(self):
        if self._test_set is None:
            raise InspectionError("no test set: this inspector was started without one")
        with self._lock:
            if not hasattr(self, "_test"):
                images, labels = self._test_set()
                self._test = (np.asarray(images), np.asarray(labels).astype(np.int64))
        return self._test

    def _scored(self):
        """Probabilities and predictions for the test set, computed once and cached."""
        images, labels = self._test_arrays()
        with self._lock:
            if self._confusion is None:
                probs = self.model.predict_proba(self.norm.norm(images), threads=self._threads)
                predicted = probs.argmax(axis=1)
                matrix = confusion_matrix(labels, predicted, self.classes)
                self._confusion = (probs, predicted, matrix)
        return self._confusion

    def confusion(self):
        """The test set's confusion matrix (rows: true class, columns: predicted)."""
        _, labels = self._test_arrays()
        _, _, matrix = self._scored()
        correct = int(np.trace(matrix))
        return {
            "matrix": matrix,
            "total": int(labels.size),
            "correct": correct,
            "accuracy": correct / max(int(labels.size), 1),
        }

    def confusion_cell(self, true, predicted, limit=CELL_LIMIT):
        """The test images of true class ``true`` predicted as ``predicted``, most
        confident first (by the predicted class's probability), at most ``limit``."""
        true = _class_index(true, self.classes, "true class")
        predicted = _class_index(predicted, self.classes, "predicted class")
        images, labels = self._test_arrays()
        probs, pred, _ = self._scored()
        idx = np.flatnonzero((labels == true) & (pred == predicted))
        idx = idx[np.argsort(-probs[idx, predicted], kind="stable")]
        shown = idx[: max(0, int(limit))]
        return {
            "true": true,
            "predicted": predicted,
            "count": int(idx.size),
            "indices": [int(i) for i in shown],
            "probabilities": [float(probs[i, predicted]) for i in shown],
            "images": images[shown],
        }
