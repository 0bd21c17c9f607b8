"""The backward pass of one traced image, by the layers' own ``backward`` methods, and the
softmax step by step.

The copies in a ``tracing.Trace`` are driven from an upstream gradient of our choosing:
a class score's (one-hot) or the model's loss for a label. Every map's largest |value| is
set beside the same map's for the class score of the same class, so that a page can say
when a gradient is negligible (the loss of a confident, correct image is ~0, and so is
every gradient it sends back).
"""

import numpy as np

from ..engine import losses
from .tracing import class_index

__all__ = ["NEGLIGIBLE", "REFERENCE", "backward", "smallness", "softmax_steps"]

#: A gradient map is negligible when its largest |value| is below this fraction of the same
#: map's largest |value| for the class score of the same class (see ``backward``).
NEGLIGIBLE = 1e-6
#: What ``relative`` compares a gradient map with, in words (the page shows it).
REFERENCE = (
    "the same map's largest |gradient| for the score (logit) of the same class: backward "
    "passes are linear in the gradient at the output, and a class score's is 1"
)


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
        label = class_index(label, classes, "label")
        loss = losses.get(tr.model.loss.kind)  # its own state, not the model's
        value = loss.forward(out, np.array([label]))
        quantity = {"kind": "loss", "label": label, "loss": tr.model.loss.kind, "value": value}
        scored = label
        # the reference first: the real pass below overwrites the copies' weight gradients
        reference = _max_abs(_run(tr, _one_hot_like(out, label)))
        result = _run(tr, loss.backward())
    else:
        target = predicted if target is None else class_index(target, classes, "class")
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
