"""The backward pass of one unit and of one weight, in numbers.

For a quantity Q (a class score or the loss for a label; ``backprop.backward`` drives the
layers' own ``backward`` methods from it), a unit's gradient dQ/da is recomputed in float64
from the gradient of the layer it feeds, by that layer's rule: the sum over the units it
feeds of their gradient times the weight (dense, conv), the ReLU's mask, max pooling's
routing to the first maximum, the softmax's Jacobian, or at the output p - y. A weight's
gradient dQ/dw is the sum over positions of input times output gradient. Every number comes
with the engine's own value and their difference, as ``arithmetic`` does for the forward
pass, and with the rule's name in the papers (``papers.EQUATIONS``).
"""

import numpy as np

from .arithmetic import ACTIVATIONS
from .backprop import backward
from .papers import EQUATIONS
from .tracing import InspectionError, layer_labels, unit_index

__all__ = ["TERMS", "answer", "unit_backward", "weight_backward"]

#: How many terms of a sum are listed, largest magnitude first (the rest are summed).
TERMS = 12
LINEAR = ("conv2d", "dense")


def _layer_index(model, index):
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise InspectionError(f"layer must be an integer index, got {index!r}")
    if not 0 <= index < len(model.layers):
        raise InspectionError(f"layer {index} is out of range (0 to {len(model.layers) - 1})")
    return int(index)


def _agree(value, engine):
    return {"value": float(value), "engine": float(engine), "difference": float(value - engine)}


def _listed(terms, keys):
    """The sum of ``terms`` (float64 array) and its ``TERMS`` largest by magnitude, each
    with its coordinates from ``keys(n)`` (a dict)."""
    flat = terms.ravel()
    order = np.argsort(-np.abs(flat), kind="stable")[:TERMS]
    total = float(flat.sum())
    return {
        "terms": [{**keys(int(n)), "product": float(flat[n])} for n in order],
        "count": int(flat.size),
        "rest": total - float(flat[order].sum()),
        "sum": total,
    }


def unit_backward(tr, index, unit, target=None, label=None):
    """dQ/da for ``unit`` of layer ``index``'s output, in numbers: one step per rule on the
    way from the layer it feeds. A conv or dense unit followed by an activation (or an
    activation clicked after one) shows both steps: the sum over the units the activation
    feeds, then the activation's derivative, as the forward view shows the sum then the
    activation."""
    model = tr.model
    index = _layer_index(model, index)
    labels = layer_labels(model)
    unit = unit_index(unit, tr.outputs[index].shape[1:], labels[index])
    result = backward(tr, target, label)
    layers, kind = model.layers, model.layers[index].kind
    if kind in ACTIVATIONS and index > 0 and layers[index - 1].kind in LINEAR:
        chain = [index, index - 1]
    elif kind in LINEAR and index + 1 < len(layers) and layers[index + 1].kind in ACTIVATIONS:
        chain = [index + 1, index]
    else:
        chain = [index]
    return {
        "quantity": result["quantity"],
        "clicked": {"layer": index, "label": labels[index]},
        "unit": list(unit),
        "steps": [_step(tr, result, i, unit, labels) for i in chain],
        "equations": EQUATIONS,
    }


def _step(tr, result, i, unit, labels):
    """How dQ/d(output of layer i)[unit] follows from the gradient of what it feeds."""
    model = tr.model
    engine = float(result["layers"][i][unit])
    base = {
        "layer": i,
        "label": labels[i],
        "unit": list(unit),
        "a": float(tr.outputs[i][(0, *unit)]),
    }
    if i == len(model.layers) - 1:
        details, value = _start(tr, result["quantity"], unit[0])
        return {**base, **details, **_agree(value, engine)}
    nxt = model.layers[i + 1]
    g = result["layers"][i + 1].astype(np.float64)  # dQ/d(next layer's output)
    a = tr.outputs[i][0].astype(np.float64)
    base["feeds"] = labels[i + 1]
    kind = nxt.kind
    if kind == "dense":
        w = nxt.params["weight"].astype(np.float64)[:, unit[0]]
        terms = g * w
        listed = _listed(terms, lambda k: {"unit": k, "grad": float(g[k]), "w": float(w[k])})
        rule, details = "dense_input", listed
        value = listed["sum"]
    elif kind == "conv2d":
        rule, details = "conv_input", _conv_input(nxt, g, unit)
        value = details["sum"]
    elif kind == "maxpool2d":
        rule, details = "maxpool", _pool_input(nxt, g, a, unit, first_max=True)
        value = details["sum"]
    elif kind == "avgpool2d":
        rule, details = "avgpool", _pool_input(nxt, g, a, unit, first_max=False)
        value = details["sum"]
    elif kind == "flatten":
        n = int(np.ravel_multi_index(unit, a.shape))
        rule, details, value = "flatten", {"to": n, "grad": float(g[n])}, g[n]
    elif kind in ACTIVATIONS:
        z, dy = a[unit], g[unit]
        slope = _slope(nxt, z)
        rule = kind
        details = {"z": float(z), "grad": float(dy), "slope": float(slope)}
        if kind == "relu":
            details["active"] = bool(z > 0)
        value = dy * slope
    elif kind == "softmax":
        p = _softmax64(a)
        mean = float((g * p).sum())
        (k,) = unit
        rule = "softmax"
        details = {"p": float(p[k]), "grad": float(g[k]), "weighted_mean": mean}
        value = p[k] * (g[k] - mean)
    else:  # a layer this view does not know: say so rather than guess
        raise InspectionError(f"no backward arithmetic for layer kind {kind!r}")
    return {**base, "rule": rule, **details, **_agree(value, engine)}


def _slope(layer, z):
    """The activation's derivative at its input z (float64)."""
    if layer.kind == "relu":
        return 1.0 if z > 0 else 0.0
    if layer.kind == "leaky_relu":
        return 1.0 if z > 0 else layer.alpha
    if layer.kind == "sigmoid":
        s = 1.0 / (1.0 + np.exp(-z))
        return s * (1.0 - s)
    t = np.tanh(z)
    return 1.0 - t * t


def _softmax64(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def _start(tr, quantity, k):
    """(details, dQ/dz_k) at the network's output: 1 or 0 for a class score, p - y for the
    softmax cross-entropy loss, the loss's own derivative for the others (one image: N = 1)."""
    out = tr.outputs[-1][0].astype(np.float64)
    if quantity["kind"] == "score":
        c = quantity["class"]
        return {"rule": "score", "class": c}, 1.0 if k == c else 0.0
    y = np.zeros_like(out)
    y[quantity["label"]] = 1.0
    kind = tr.model.loss.kind
    if kind == "softmax_cross_entropy":
        p = _softmax64(out)
        return {"rule": "softmax_cross_entropy", "p": float(p[k]), "y": float(y[k])}, p[k] - y[k]
    n = out.size
    d = out[k] - y[k]
    if kind == "mean_squared_error":
        value, formula = 2 * d / n, f"2 (out − y) / {n}"
    elif kind == "half_sum_squared_error":
        value, formula = d, "out − y"
    elif kind == "mean_absolute_error":
        value, formula = np.sign(d) / n, f"sign(out − y) / {n}"
    elif kind == "binary_cross_entropy":
        eps = np.finfo(tr.model.dtype).eps
        q = min(max(out[k], eps), 1 - eps)
        value, formula = (q - y[k]) / (q * (1 - q)) / n, f"(p − y) / (p (1 − p)) / {n}"
    else:
        raise InspectionError(f"no backward arithmetic for the loss {kind!r}")
    details = {
        "rule": "loss",
        "loss": kind,
        "formula": formula,
        "out": float(out[k]),
        "y": float(y[k]),
    }
    return details, value


def _conv_input(layer, g, unit):
    """dQ/da[c, y, x] for the input of a conv layer: over the output positions (f, i, j)
    whose window covers (y, x), dQ/dz[f, i, j] times the kernel weight that read it."""
    c, y, x = unit
    k, s, p = layer.kernel, layer.stride, layer.padding
    w = layer.params["weight"].astype(np.float64)
    F, H, W = g.shape
    rows = [(i, y + p - i * s) for i in range(H) if 0 <= y + p - i * s < k]
    cols = [(j, x + p - j * s) for j in range(W) if 0 <= x + p - j * s < k]
    entries = [
        (f, i, j, u, v, g[f, i, j], w[f, c, u, v])
        for f in range(F)
        for i, u in rows
        for j, v in cols
    ]
    terms = np.array([e[5] * e[6] for e in entries], dtype=np.float64)

    def keys(n):
        f, i, j, u, v, gr, wt = entries[n]
        return {"output": [f, i, j], "kernel": [f, c, u, v], "grad": float(gr), "w": float(wt)}

    return _listed(terms, keys)


def _pool_input(layer, g, a, unit, first_max):
    """dQ/da[c, y, x] for the input of a pooling layer: over the windows that contain it,
    the window's gradient where it is the first maximum (max) or divided by the window's
    size (average)."""
    c, y, x = unit
    size, s = layer.size, layer.stride
    _, H, W = g.shape
    windows, total = [], 0.0
    for i in range(H):
        for j in range(W):
            if not (i * s <= y < i * s + size and j * s <= x < j * s + size):
                continue
            window = a[c, i * s : i * s + size, j * s : j * s + size]
            if first_max:
                u, v = divmod(int(np.argmax(window)), size)  # the first maximum in row order
                share = 1.0 if (u, v) == (y - i * s, x - j * s) else 0.0
                entry = {"winner": [c, i * s + u, j * s + v], "won": bool(share)}
            else:
                share = 1.0 / (size * size)
                entry = {}
            total += share * g[c, i, j]
            windows.append(
                {"output": [c, i, j], "grad": float(g[c, i, j]), "share": share, **entry}
            )
    return {"windows": windows, "sum": total}


def weight_backward(tr, index, param, weight, target=None, label=None):
    """dQ/dw for one parameter of layer ``index``: ``param`` "weight" or "bias", ``weight``
    its index (conv weight [f, c, u, v], dense weight [k, n], a bias [f]). A conv weight's
    gradient is the sum over output positions of the input it read there times the output's
    gradient; a dense weight's is one product."""
    model = tr.model
    index = _layer_index(model, index)
    labels = layer_labels(model)
    layer = model.layers[index]
    if layer.kind not in LINEAR:
        raise InspectionError(f"layer {labels[index]} has no weights")
    if param not in ("weight", "bias"):
        raise InspectionError(f"param must be 'weight' or 'bias', got {param!r:.40}")
    shape = layer.params[param].shape if param == "weight" else layer.params["bias"].shape[:1]
    weight = unit_index(weight, shape, f"{labels[index]} {param}")
    result = backward(tr, target, label)
    g = result["layers"][index].astype(np.float64)  # dQ/dz at this layer's output
    x = tr.input_of(index)[0].astype(np.float64)
    engine = result["weights"][index][param][weight if param == "weight" else (weight[0], 0)]
    base = {
        "quantity": result["quantity"],
        "layer": index,
        "label": labels[index],
        "param": param,
        "index": list(weight),
        "w": float(layer.params[param][weight if param == "weight" else (weight[0], 0)]),
        "equations": EQUATIONS,
    }
    if layer.kind == "conv2d" and param == "weight":
        f, c, u, v = weight
        s, p = layer.stride, layer.padding
        xp = np.pad(x, ((0, 0), (p, p), (p, p)))
        _, H, W = g.shape
        inputs = xp[c, u : u + s * (H - 1) + 1 : s, v : v + s * (W - 1) + 1 : s]
        terms = inputs * g[f]
        listed = _listed(
            terms,
            lambda n: {
                "position": [int(q) for q in divmod(n, W)],
                "input": [c, divmod(n, W)[0] * s + u - p, divmod(n, W)[1] * s + v - p],
                "x": float(inputs.flat[n]),
                "grad": float(g[f].flat[n]),
            },
        )
        return {**base, "rule": "conv_weight", **listed, **_agree(listed["sum"], engine)}
    if layer.kind == "conv2d":
        (f,) = weight
        listed = _listed(g[f], lambda n: {"position": [int(q) for q in divmod(n, g.shape[2])]})
        return {**base, "rule": "conv_bias", **listed, **_agree(listed["sum"], engine)}
    if param == "weight":
        k, n = weight
        value = x[n] * g[k]
        return {
            **base,
            "rule": "dense_weight",
            "x": float(x[n]),
            "grad": float(g[k]),
            **_agree(value, engine),
        }
    (k,) = weight
    return {**base, "rule": "dense_bias", "grad": float(g[k]), **_agree(g[k], engine)}


def _optional_class(body, key):
    value = body.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise InspectionError(f"'{key}' must be an integer, got {value!r:.40}")
    return value


def answer(tr, body):
    """The answer to one ``/api/unit_backward`` request ``body`` for the traced image: with
    ``weight`` ({layer, param, index}) that weight's dQ/dw, else ``unit`` of ``layer``'s
    dQ/da; Q is ``class``'s score or the loss for ``label`` (default: the predicted class)."""
    target, label = _optional_class(body, "class"), _optional_class(body, "label")
    if target is not None and label is not None:
        raise InspectionError("give 'class' (a score) or 'label' (the loss), not both")
    weight = body.get("weight")
    if weight is not None:
        if not isinstance(weight, dict):
            raise InspectionError("'weight' must be an object {layer, param, index}")
        param = weight.get("param", "weight")
        return weight_backward(tr, weight.get("layer"), param, weight.get("index"), target, label)
    if "layer" not in body or "unit" not in body:
        raise InspectionError("give 'layer' (an index from 0) and 'unit' (a list), or 'weight'")
    return unit_backward(tr, body["layer"], body["unit"], target, label)
