"""Receptive fields: which part of the input, and of the layer before, a unit depends on.

A layer's geometry says how a region of its output maps to a region of its input: a conv
or pool window of ``kernel`` x ``kernel`` at ``stride``, shifted by ``padding``; an
activation acts element by element; a flatten unit is one element of the map it came from
(C order); a dense unit or a softmax reads all of its input. Walking a unit's region back
layer by layer gives its receptive field on every earlier layer and on the input.

A region is one half-open ``[start, stop)`` range per dimension of a layer's per-sample
shape, clipped to it (a conv window in the padding reaches beyond the map; the clipped
range is what the image holds). Regions are boxes: for a range of flat indices (only
whole layers, from a dense unit) the box is that of the elements they unravel to.

Pure geometry: it needs the layers' settings, never their values.
"""

import numpy as np

__all__ = ["geometry", "input_region", "receptive_field"]


def geometry(layer, input_shape):
    """How ``layer`` maps its input to its output, for the page to walk regions itself."""
    kind = layer.kind
    if kind == "conv2d":
        return {
            "kind": "window",
            "kernel": layer.kernel,
            "stride": layer.stride,
            "padding": layer.padding,
            "channels": "all",  # each filter reads every input channel
        }
    if kind in ("maxpool2d", "avgpool2d"):
        return {
            "kind": "window",
            "kernel": layer.size,
            "stride": layer.stride,
            "padding": 0,
            "channels": "same",  # each channel is pooled on its own
        }
    if kind == "flatten":
        return {"kind": "flatten", "from": [int(n) for n in input_shape]}
    if kind == "dense":
        return {"kind": "dense"}
    if kind == "softmax":
        return {"kind": "all"}  # each output depends on every input of its sample
    return {"kind": "elementwise"}


def _window(start, stop, geom, size):
    """The input range that outputs ``[start, stop)`` of a window layer read, clipped."""
    k, s, p = geom["kernel"], geom["stride"], geom["padding"]
    lo, hi = start * s - p, (stop - 1) * s - p + k
    return [max(0, lo), min(size, hi)]


def input_region(geom, input_shape, ranges):
    """The region of a layer's input (shape ``input_shape``) that the region ``ranges`` of
    its output depends on."""
    kind = geom["kind"]
    if kind == "elementwise":
        return [list(r) for r in ranges]
    if kind == "window":
        c, h, w = input_shape
        (c0, c1), (r0, r1), (q0, q1) = ranges
        channels = [0, c] if geom["channels"] == "all" else [c0, c1]
        return [channels, _window(r0, r1, geom, h), _window(q0, q1, geom, w)]
    if kind == "flatten":
        (a, b) = ranges[0]
        coords = np.unravel_index(np.arange(a, b), tuple(input_shape))
        return [[int(v.min()), int(v.max()) + 1] for v in coords]
    return [[0, int(n)] for n in input_shape]  # dense, softmax: all of it


def receptive_field(model, labels, index, unit):
    """The receptive field of ``unit`` (a tuple index into layer ``index``'s per-sample
    output) on every earlier layer's output and on the input.

    Returns ``chain``, one entry per layer from ``index`` down to 0: the region of that
    layer's input the unit depends on (``of``: whose output that is, ``"input"`` for the
    first); ``previous`` (the first of them: the layer just before) and ``input`` (the
    last: the image). A conv unit also gets its ``filter`` and ``kernel`` (F's weights);
    a flatten unit the index ``from`` which it was copied.
    """
    shapes = [tuple(model.input_shape), *map(tuple, model.shapes)]
    ranges = [[int(u), int(u) + 1] for u in unit]
    chain = []
    for i in range(index, -1, -1):
        layer = model.layers[i]
        ranges = input_region(geometry(layer, shapes[i]), shapes[i], ranges)
        chain.append(
            {
                "layer": i - 1 if i else None,
                "of": labels[i - 1] if i else "input",
                "shape": list(shapes[i]),
                "ranges": ranges,
            }
        )
    result = {
        "layer": int(index),
        "label": labels[index],
        "unit": [int(u) for u in unit],
        "previous": chain[0],
        "input": chain[-1],
        "chain": chain,
    }
    layer = model.layers[index]
    if layer.kind == "conv2d":
        result["filter"] = int(unit[0])
        result["kernel"] = layer.params["weight"][unit[0]]
    if layer.kind == "flatten":
        result["from"] = [int(v) for v in np.unravel_index(unit[0], shapes[index])]
    return result
