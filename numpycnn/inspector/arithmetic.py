"""How a layer computed one unit of its output, in numbers, recomputed in float64 from the
layer's input and parameters beside the engine's own value."""

import numpy as np

from .tracing import InspectionError, layer_labels, unit_index

__all__ = ["ACTIVATIONS", "DENSE_TERMS", "unit_arithmetic"]

#: Activation layers: elementwise, so a unit of theirs is the unit of the layer before.
ACTIVATIONS = ("relu", "leaky_relu", "sigmoid", "tanh")
#: How many of a dense unit's terms ``unit`` lists, largest magnitude first.
DENSE_TERMS = 12
#: Layers whose unit an activation right after them shows with its own arithmetic.
AFFINE = ("conv2d", "dense", "batchnorm2d", "batchnorm1d")


def unit_arithmetic(tr, index, unit):
    """How layer ``index`` (from 0) computed one unit of its output, in numbers.

    A conv unit: its C x K x K receptive field, the kernel, their products, the sum, the
    bias and the pre-activation. A max-pool unit: its window and which input won. A dense
    unit: its largest terms. A batch-norm unit: (x - mean) / sqrt(var + eps) * gamma + beta
    with the running statistics of its channel (inference). A dropout unit: its input,
    passed through (inference). A unit of an activation layer: the arithmetic of the layer
    before it, then the activation. Recomputed in float64 from the layer's input and
    parameters, with the engine's own output beside it (``output``) and their difference.
    """
    layers = tr.model.layers
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)):
        raise InspectionError(f"layer must be an integer index, got {index!r}")
    if not 0 <= index < len(layers):
        raise InspectionError(f"layer {index} is out of range (0 to {len(layers) - 1})")
    labels = layer_labels(tr.model)
    unit = unit_index(unit, tr.outputs[index].shape[1:], labels[index])
    kind = layers[index].kind
    if kind in ACTIVATIONS and index > 0 and layers[index - 1].kind in AFFINE:
        result = _unit(tr, index - 1, unit, labels)
        result["activation"] = _activation(tr, index, unit, labels)
        result["clicked"] = {"layer": int(index), "label": labels[index]}
        return result
    result = _unit(tr, index, unit, labels)
    nxt = index + 1
    if nxt < len(layers) and layers[nxt].kind in ACTIVATIONS and kind in AFFINE:
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
    if layer.kind in ("batchnorm2d", "batchnorm1d"):
        return {**base, **_batchnorm(layer, float(x[unit]), unit[0], engine)}
    if layer.kind == "dropout":  # inference: the identity
        value = float(x[unit])
        return {**base, "input": value, "value": value, "difference": value - engine}
    if layer.kind == "flatten":
        source = [int(v) for v in np.unravel_index(unit[0], x.shape)]
        value = float(x[tuple(source)])
        return {**base, "from": source, "value": value, "difference": value - engine}
    # an activation or softmax with nothing linear before it: input and output
    return {**base, "input": float(x[unit]), "difference": 0.0}


def _batchnorm(layer, value, channel, engine):
    """One batch-norm unit at inference, in float64: its channel's running statistics,
    the normalised input, then the scale and shift."""
    mean = float(layer.state["running_mean"][channel])
    var = float(layer.state["running_var"][channel])
    gamma = float(layer.params["weight"][channel, 0])
    beta = float(layer.params["bias"][channel, 0])
    std = float(np.sqrt(var + layer.eps))
    normalized = (value - mean) / std
    out = normalized * gamma + beta
    return {
        "channel": int(channel),
        "input": value,
        "mean": mean,
        "var": var,
        "eps": layer.eps,
        "std": std,
        "normalized": normalized,
        "gamma": gamma,
        "beta": beta,
        "value": out,
        "preactivation": out,
        "difference": out - engine,
    }
