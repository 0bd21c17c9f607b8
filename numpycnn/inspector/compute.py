"""Inside a trained network, for one image: every layer's output, a unit's arithmetic, the
backward pass, the filters, and over the test set the confusion matrix and its images.

Everything is computed by the engine's own layers, on copies of them (``tracing``): any
number of inspections may run at once, and the model's parameters and ``flat_grads`` are
never touched. The pieces: ``tracing`` (the forward pass), ``backprop`` (the backward pass
and the softmax), ``arithmetic`` (a unit's sum), ``fields`` (receptive fields) and
``novelty`` (does the input look like a digit at all).

``Inspector`` is the one face: it holds a loaded model file and answers with plain
dicts of Python numbers and NumPy arrays, which the server turns into JSON and the CLI
into figures. Bad requests raise ``InspectionError`` (a ``ValueError``) naming the value
at fault. The module never prints.
"""

import copy
import math
import threading
from dataclasses import replace

import numpy as np

from ..data import Normalization
from .arithmetic import ACTIVATIONS, DENSE_TERMS, unit_arithmetic
from .backprop import NEGLIGIBLE, REFERENCE, backward, smallness, softmax_steps
from .fields import geometry, receptive_field
from .inputs import InputForm
from .tracing import InspectionError, Trace, class_index, layer_labels, trace, unit_index

__all__ = [
    "ACTIVATIONS",
    "DENSE_TERMS",
    "NEGLIGIBLE",
    "REFERENCE",
    "InspectionError",
    "Inspector",
    "Trace",
    "backward",
    "layer_labels",
    "softmax_steps",
    "trace",
    "unit_arithmetic",
]

#: At most this many images are listed for one confusion-matrix cell.
CELL_LIMIT = 200
#: Test images the per-layer figures (``layer_figures``) are measured on: a default batch,
#: as layers.csv's are measured on the epoch's last batch.
FIGURE_IMAGES = 64
#: Longer per-batch cost histories are averaged in bins down to about this many points.
COST_POINTS = 2000


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

    ``test_set``: a callable returning the test (images uint8 (N, C, H, W) or, grey,
    (N, H, W), labels), called once, on the first request for the confusion matrix;
    ``train_set``: a callable returning MNIST's training images uint8 (N, 28, 28), called
    once, for the out-of-distribution cue (``ood``; ``warm`` prepares it ahead; None for
    other data, whose cue is not available); ``threads``: threads for the test-set
    predictions; ``name``: the model file's name, for display.

    An input image (``digit``) is uint8 (H, W) for a grey model and (C, H, W) for a colour
    one (``inputs.InputForm``); the class names are the model file's.
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
        self.form = InputForm(self.model.input_shape, getattr(saved, "data_source", None))
        names = list(getattr(saved, "class_names", None) or [])
        if len(names) != self.classes:
            names = [str(k) for k in range(self.classes)]
        self.class_names = names
        if train_set is None and not self.form.digits:
            self.novelty_error = (
                "no comparison with the training images: this cue is for MNIST-style digits"
            )
        self._test_set, self._threads = test_set, threads
        self._confusion, self._figures, self._lock = None, None, threading.Lock()

    def at(self, network, normalization):
        """This inspector with other parameters (a run's snapshot): ``network`` (an engine
        ``Sequential`` of the same architecture) and its ``Normalization``. It shares the
        test set, and judges whether an input looks like a digit (``ood``) by this
        inspector's model: a property of the input, not of a half-trained network."""
        other = copy.copy(self)
        other.saved = replace(self.saved, model=network, normalization=normalization.to_dict())
        other.model, other.norm = network, normalization
        other._confusion, other._figures, other._lock = None, None, threading.Lock()
        other.novelty = self.novelty
        return other

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
            "class_names": list(self.class_names),
            "data_source": dict(getattr(self.saved, "data_source", None) or {"dataset": "mnist"}),
            "input": {
                "channels": self.form.shape[0],
                "height": self.form.shape[1],
                "width": self.form.shape[2],
                "colour": self.form.colour,
                "digits": self.form.digits,
                "drawable": self.form.drawable,
                "preparation": self.form.describe(),
            },
            "num_params": int(model.num_params),
            "normalization": dict(self.saved.normalization),
            "metrics": _finite(self.saved.metrics) if self.saved.metrics else None,
            "layers": layers,
            "has_test_set": self._test_set is not None,
        }

    # ----- one image -----

    def digit(self, image=None, pixels=None, test_index=None, name=None):
        """The model's input image (uint8 (H, W) grey, (C, H, W) colour) from exactly one
        of: ``image``, the bytes of an image file (prepared as the model's data was:
        ``inputs.InputForm.prepare``; ``name``, the file's name, leads its error messages);
        ``pixels``, C x H x W levels 0-255 already in the input's form (row-major; 784 for
        an MNIST model); ``test_index``, a test image."""
        given = [v is not None for v in (image, pixels, test_index)]
        if sum(given) != 1:
            raise InspectionError(
                f"give exactly one of an image, {self.form.size} pixels or a test index"
            )
        if image is not None:
            return self.form.prepare(image, name or "uploaded image")
        if pixels is not None:
            return self.form.from_pixels(pixels)
        images, _ = self._test_arrays()
        if isinstance(test_index, bool) or not isinstance(test_index, (int, np.integer)):
            raise InspectionError(f"test index must be an integer, got {test_index!r}")
        if not 0 <= test_index < len(images):
            raise InspectionError(
                f"test index {test_index} is out of range (0 to {len(images) - 1})"
            )
        return np.array(images[test_index], dtype=np.uint8)

    def trace(self, digit):
        """The forward pass of an input image, normalised as the model's training was."""
        return trace(self.model, self.form.normalise(self.norm, digit)[0])

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
        """``unit_arithmetic`` of the traced image, with the ``field`` of the unit whose
        arithmetic it shows (for a ReLU clicked, the conv or dense unit before it)."""
        result = unit_arithmetic(tr, layer, unit)
        result["field"] = self.field(result["layer"], unit)
        return result

    def field(self, layer, unit):
        """``fields.receptive_field`` of ``unit`` in layer ``layer`` (from 0): the region
        of the input and of every earlier layer it depends on. Needs no image."""
        model = self.model
        if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)):
            raise InspectionError(f"layer must be an integer index, got {layer!r}")
        if not 0 <= layer < len(model.layers):
            raise InspectionError(f"layer {layer} is out of range (0 to {len(model.layers) - 1})")
        unit = unit_index(unit, model.shapes[layer], self.labels[layer])
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
            if self._novelty is None and self._train_set is not None and self.form.digits:
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
                images = self.form.images(images)
                self._test = (images, np.asarray(labels).astype(np.int64))
        return self._test

    def _scored(self):
        """Probabilities and predictions for the test set, computed once and cached."""
        images, labels = self._test_arrays()
        with self._lock:
            if self._confusion is None:
                x = self.form.normalise(self.norm, images)
                probs = self.model.predict_proba(x, threads=self._threads)
                predicted = probs.argmax(axis=1)
                matrix = confusion_matrix(labels, predicted, self.classes)
                self._confusion = (probs, predicted, matrix)
        return self._confusion

    def layer_figures(self, count=FIGURE_IMAGES):
        """layers.csv's figures at these parameters, measured on the first ``count`` test
        images: each layer's weight norm, the norm of the loss's weight gradient on them,
        and each ReLU's dead fraction (units that none of them activates), as
        ``training.layer_telemetry`` computes them, on a copy of the network. Cached."""
        from ..engine import Sequential
        from ..training import layer_telemetry

        images, labels = self._test_arrays()
        with self._lock:
            if self._figures is None:
                m = self.model
                net = Sequential(
                    m.specs(),
                    loss=m.loss.kind,
                    input_shape=m.input_shape,
                    dtype=m.dtype,
                    draw=False,
                )
                net.flat_params[...] = m.flat_params
                net.flat_state[...] = m.flat_state  # batch norm's running statistics
                x = self.form.normalise(self.norm, images[:count])
                net.loss_on(x, labels[:count])
                net.backward()
                self._figures = {"images": len(x), "layers": layer_telemetry(net, x)}
        return self._figures

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
        true = class_index(true, self.classes, "true class")
        predicted = class_index(predicted, self.classes, "predicted class")
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
