"""Numerical gradient checks by central differences, in float64.

The error reported for each parameter tensor (and the input, for single layers) is the
relative error of the gradient as a whole, ||analytic - numeric|| / max(||analytic||,
||numeric||), over the entries checked: robust where single entries are near zero, and 0
when both are exactly zero.

ReLU and max pooling have kinks, where a finite difference is no derivative. Each step
+-h is therefore taken only if it leaves every layer's discrete choices (``switches``:
ReLU masks, max positions) as they were; otherwise the step shrinks tenfold, down to
``h * 1e-3``, and an entry that still straddles a kink is left out and counted.
"""

from dataclasses import dataclass, field

import numpy as np

from .model import Sequential

#: Gradient norms below this count as zero: a bias just before batch norm has a gradient
#: that is zero in exact arithmetic, and both its analytic value (~1e-17) and its central
#: difference (rounding of the loss over 2h, ~1e-11) are noise, whose relative error is 1.
ZERO_NORM = 1e-8


def relative_error(analytic, numeric):
    a, n = np.ravel(analytic), np.ravel(numeric)
    scale = max(np.linalg.norm(a), np.linalg.norm(n))
    if scale < ZERO_NORM:
        return 0.0
    return float(np.linalg.norm(a - n) / scale)


@dataclass
class Result:
    """Per tensor: relative error, entries checked, entries skipped at a kink."""

    errors: dict = field(default_factory=dict)
    checked: dict = field(default_factory=dict)
    skipped: dict = field(default_factory=dict)

    @property
    def max_error(self):
        return max(self.errors.values(), default=0.0)

    def passed(self, tolerance=1e-6):
        return self.max_error <= tolerance


def _switches(layers):
    return [s.copy() for layer in layers for s in layer.switches()]


def _same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def _check_tensor(result, name, loss, layers, analytic, array, indices, h):
    """Compare ``analytic`` (flat) with central differences of ``loss`` at ``indices``."""
    loss()
    base = _switches(layers)
    flat = array.reshape(-1)  # a view: every array checked here is contiguous
    kept, numeric = [], []
    for idx in indices:
        old, step = flat[idx], h
        while step >= h * 1e-3:
            flat[idx] = old + step
            plus = loss()
            clean = _same(_switches(layers), base)
            flat[idx] = old - step
            minus = loss()
            clean = clean and _same(_switches(layers), base)
            flat[idx] = old
            if clean:
                kept.append(idx)
                numeric.append((plus - minus) / (2 * step))
                break
            step /= 10
    result.errors[name] = relative_error(np.ravel(analytic)[kept], numeric)
    result.checked[name] = len(kept)
    result.skipped[name] = len(indices) - len(kept)


def _sample(size, samples, rng):
    if samples is None or samples >= size:
        return np.arange(size)
    return np.sort(rng.choice(size, samples, replace=False))


def check_model(model, x, labels, samples=50, h=1e-5, seed=0):
    """Gradient check of a float64 model's loss on one batch; returns a ``Result``.

    ``samples`` entries per parameter tensor are chosen at random (by ``seed``); None
    checks every entry.
    """
    if model.dtype != np.float64:
        raise ValueError("gradient checks need a float64 model (dtype='float64')")
    # training mode (batch statistics, dropout on) with the masks of one fixed step
    model.train()
    model.set_step(seed, 0)
    rng = np.random.default_rng(seed)
    model.loss_on(x, labels)
    model.backward()
    analytic = [g.copy() for g in model.grads]

    def loss():
        return model.loss_on(x, labels)[0]

    result = Result()
    for name, param, grad in zip(model.param_names, model.params, analytic):
        idx = _sample(param.size, samples, rng)
        _check_tensor(result, name, loss, model.layers, grad, param, idx, h)
    return result


def check_layer(layer, input_shape, samples=None, h=1e-5, seed=0):
    """Gradient check of one layer on random data: "input" and each parameter.

    ``input_shape`` includes the batch, e.g. (2, 3, 7, 7). The layer sees a random input
    and the scalar loss sum(out * R) for a fixed random R, so dL/dout = R.
    """
    rng = np.random.default_rng(seed)
    model = Sequential([layer], loss=None, input_shape=input_shape[1:], dtype="float64", seed=seed)
    layer.needs_input_grad = True
    for p in model.params:  # random biases too, so that they matter
        p[...] = rng.standard_normal(p.shape)
    x = rng.standard_normal(input_shape)
    r = rng.standard_normal((input_shape[0],) + model.output_shape)

    def loss():
        return float((layer.forward(x) * r).sum())

    loss()
    dx = layer.backward(r)
    grads = {key: g.copy() for key, g in layer.grads.items()}
    result = Result()
    _check_tensor(result, "input", loss, [layer], dx, x, _sample(x.size, samples, rng), h)
    for key, p in layer.params.items():
        _check_tensor(result, key, loss, [layer], grads[key], p, _sample(p.size, samples, rng), h)
    return result


def check_loss(loss, z, labels, h=1e-5):
    """Relative error of dL/dz for a loss object on outputs ``z`` (float64) and labels."""
    z = np.array(z, dtype=np.float64)
    loss.forward(z, labels)
    analytic = loss.backward()
    result = Result()
    _check_tensor(
        result, "output", lambda: loss.forward(z, labels), [], analytic, z, np.arange(z.size), h
    )
    return result.errors["output"]
