"""Batch normalisation (Ioffe and Szegedy, 2015) and dropout (Srivastava et al., 2014).

Both behave differently in training and in evaluation (``layer.training``, set for the
whole network by ``Sequential.train`` / ``eval``), as PyTorch's ``BatchNorm2d``,
``BatchNorm1d`` and ``Dropout`` do.

Batch norm keeps *state* besides its parameters: the running mean and variance (and the
count of batches that updated them) live in the model's flat state buffer, which the
optimiser never sees, and go into checkpoints and model files.
"""

import numpy as np

from .kernels import to_chwn, to_nchw
from .layers import Layer


def _number_in(name, value, span):
    """``value`` as a float if it is a number in ``span`` ('[0, 1)', '(0, 1]', '[0, 1]')."""
    ok = isinstance(value, (int, float, np.floating)) and not isinstance(value, bool)
    low, high = (float(v) for v in span[1:-1].split(","))
    above = ok and (value >= low if span[0] == "[" else value > low)
    below = ok and (value <= high if span[-1] == "]" else value < high)
    if not (above and below):
        raise ValueError(f"{name} must be a number in {span}, got {value!r}")
    return float(value)


def _sums(u, v):
    """Per row of the (C, M) arrays: sum(u) and sum(u * v), by BLAS and SIMD dot products
    in the arrays' dtype, returned in float64 (for the statistics' arithmetic)."""
    ones = np.ones(u.shape[1], dtype=u.dtype)
    return (u @ ones).astype(np.float64), np.einsum("ij,ij->i", u, v).astype(np.float64)


class _BatchNorm(Layer):
    """y = gamma * xhat + beta, xhat = (x - mean) / sqrt(var + eps), per channel.

    Training: mean and (biased) var of the batch, over every axis but the channel's; the
    running statistics move towards them, ``r = (1 - momentum) * r + momentum * batch``,
    with the *unbiased* variance (var * m / (m - 1)) for the running one, as PyTorch does;
    ``momentum`` None makes them the plain average of all batches so far. Evaluation:
    the running statistics instead of the batch's.

    Backward in training (m values per channel, dy = dL/dy, sums over the m values):
        dbeta  = sum(dy),  dgamma = sum(dy * xhat)
        dxhat  = gamma * dy
        dvar   = sum(dxhat * (x - mean)) * -1/2 (var + eps)^-3/2
        dmean  = -sum(dxhat) / sqrt(var + eps)      (the dvar term's sum(x - mean) is 0)
        dx     = dxhat / sqrt(var + eps) + dvar * 2 (x - mean) / m + dmean / m
    which, with (x - mean) = xhat * sqrt(var + eps), collapses to
        dx = gamma / sqrt(var + eps) * (dy - sum(dy) / m - xhat * sum(dy * xhat) / m).
    In evaluation the statistics are constants: dx = gamma / sqrt(var + eps) * dy.

    Computed as y = a x + b and dx = a dy + c x + d with per-channel a, b, c, d, from the
    input (kept, not copied) and the sums sum(x), sum(x^2), sum(dy), sum(dy x), taken by
    dot products in the layer's dtype and combined in float64. In float32 the variance
    sum(x^2)/m - mean^2 loses about two of float32's seven digits per factor of 10 between
    a channel's mean and its standard deviation (PyTorch's CPU kernel takes two passes
    instead); after a convolution the two are of one order. The gradient checks and
    parity tests run in float64.

    ``sync``: None, or a callable that turns this worker's per-channel partial sums into
    the whole batch's (see ``parallel``): sync(parts, forward=True) with rows count, sum(x),
    sum(x^2); sync(parts, forward=False) with sum(dy), sum(dy * xhat), in this worker's
    scale. So every worker count gives the same statistics up to rounding.
    """

    channel_dims = None  # per-sample dimensions of the input

    def __init__(self, momentum=0.1, eps=1e-5):
        super().__init__()
        if momentum is not None:
            momentum = _number_in("momentum", momentum, "[0, 1]")
        self.momentum = momentum
        self.eps = _number_in("eps", eps, "(0, 1]")
        self.state = {}
        self.sync = None  # whole-batch sums across workers (parallel.WorkerPool)
        self.track_running = True  # a helper worker leaves the shared state to worker 0

    def param_shapes(self, input_shape):
        self._check_shape(input_shape)
        c = input_shape[0]
        return {"weight": (c, 1), "bias": (c, 1)}

    def state_shapes(self, input_shape):
        c = input_shape[0]
        return {"running_mean": (c,), "running_var": (c,), "num_batches_tracked": (1,)}

    def reset_state(self):
        self.state["running_mean"][...] = 0
        self.state["running_var"][...] = 1
        self.state["num_batches_tracked"][...] = 0

    def reset_parameters(self):
        self.params["weight"][...] = 1
        self.params["bias"][...] = 0

    def _check_shape(self, input_shape):
        if len(input_shape) != self.channel_dims:
            want = "channels x height x width" if self.channel_dims == 3 else "a flat input"
            raise ValueError(f"{self.kind} needs {want}, got shape {tuple(input_shape)}")

    # (C, M) views: every value of channel c in row c
    def _columns(self, x):
        if x.ndim == 4:
            return to_chwn(x).reshape(x.shape[1], -1)
        return x.T

    def _restore(self, z, like):
        if like.ndim == 4:
            n, c, h, w = like.shape
            return to_nchw(z.reshape(c, h, w, n))
        return z.T

    def forward(self, x):
        z = self._columns(x)
        if not self.training:
            mean = self.state["running_mean"].astype(np.float64)
            var = self.state["running_var"].astype(np.float64)
        else:
            parts = np.stack([np.full(len(z), z.shape[1], np.float64), *_sums(z, z)])
            if self.sync is not None:
                parts = self.sync(parts, forward=True)
            m = parts[0]
            mean = parts[1] / m
            var = np.maximum(parts[2] / m - mean * mean, 0.0)
            if self.track_running:
                self._update_running(mean, var, m)
            self._m = m
        self._z, self._mean = z, mean
        self._inv_std = 1.0 / np.sqrt(var + self.eps)
        # y = gamma * (z - mean) * inv_std + beta = a * z + b: two passes over the batch;
        # backward recomputes what it needs of xhat from z (kept, not copied)
        a = self.params["weight"][:, 0] * self._inv_std
        b = self.params["bias"][:, 0] - a * mean
        out = np.multiply(z, a.astype(z.dtype)[:, None])
        out += b.astype(z.dtype)[:, None]
        return self._restore(out, x)

    def _update_running(self, mean, var, m):
        s = self.state
        s["num_batches_tracked"] += 1
        f = self.momentum
        if f is None:  # cumulative average over the batches so far
            f = 1.0 / float(s["num_batches_tracked"][0])
        unbiased = var * (m / np.maximum(m - 1, 1))
        s["running_mean"][...] = (1 - f) * s["running_mean"] + f * mean
        s["running_var"][...] = (1 - f) * s["running_var"] + f * unbiased

    def backward(self, grad):
        g = self._columns(grad)
        z, mean, inv_std = self._z, self._mean, self._inv_std
        sum_g, sum_gz = _sums(g, z)
        # sum(dy * xhat) = (sum(dy * z) - mean * sum(dy)) * inv_std
        sums = np.stack([sum_g, (sum_gz - mean * sum_g) * inv_std])
        self.grads["bias"][:, 0] = sums[0]
        self.grads["weight"][:, 0] = sums[1]
        if not self.needs_input_grad:
            return None
        a = self.params["weight"][:, 0] * inv_std  # gamma / sqrt(var + eps)
        dx = np.multiply(g, a.astype(g.dtype)[:, None])
        if not self.training:  # constant statistics (the inspector's saliency)
            return self._restore(dx, grad)
        if self.sync is not None:
            sums = self.sync(sums, forward=False)
        mean_g, mean_gx = sums[0] / self._m, sums[1] / self._m
        # dx = a * (dy - mean_g - xhat * mean_gx), xhat = (z - mean) * inv_std:
        # dx = a * dy + c * z + d, per channel
        c = -a * inv_std * mean_gx
        d = -a * mean_g - c * mean
        dx += z * c.astype(g.dtype)[:, None]
        dx += d.astype(g.dtype)[:, None]
        return self._restore(dx, grad)

    def spec(self):
        return {"type": self.kind, "momentum": self.momentum, "eps": self.eps}


class BatchNorm2D(_BatchNorm):
    """Batch norm after a convolution: statistics per channel over images and positions
    (PyTorch's ``BatchNorm2d``)."""

    kind = "batchnorm2d"
    channel_dims = 3


class BatchNorm1D(_BatchNorm):
    """Batch norm after a dense layer: statistics per feature over the images (PyTorch's
    ``BatchNorm1d`` on (N, C) input)."""

    kind = "batchnorm1d"
    channel_dims = 1


class Dropout(Layer):
    """Inverted dropout: in training each value is kept with probability 1 - p and scaled
    by 1 / (1 - p), so that evaluation, which passes x through, needs no rescaling.

    The mask is a function of the training seed, the step, the layer's position and the
    image's position in the batch (``Sequential.set_step``): the same run, resumed or not,
    and any worker count draw the same masks (a worker draws the whole batch's and keeps
    its rows). Backward routes the gradient through the same mask.
    """

    kind = "dropout"

    def __init__(self, p=0.5):
        super().__init__()
        self.p = _number_in("p", p, "[0, 1)")
        self.index = 0  # position in the network, set by the model
        self.key = (0, 0)  # (seed, step), set by the model for every training step
        self.rows = None  # (first row, batch size) of this share; None: the whole batch
        self._mask = None

    def mask(self, shape, dtype):
        """The scaled keep-mask of a batch of ``shape`` (NCHW or (N, F)), rows as set."""
        first, total = (0, shape[0]) if self.rows is None else self.rows
        seed, step = self.key
        rng = np.random.default_rng([int(seed), int(step), int(self.index)])
        keep = rng.random((total, *shape[1:]), dtype=np.float32)[first : first + shape[0]]
        return (keep >= self.p).astype(dtype) * dtype.type(1.0 / (1.0 - self.p))

    def forward(self, x):
        if not self.training or self.p == 0:
            self._mask = None
            return x
        self._mask = self.mask(x.shape, x.dtype)
        return np.multiply(x, self._mask, out=np.empty_like(x))

    def backward(self, grad):
        if self._mask is None:
            return grad
        return np.multiply(grad, self._mask, out=np.empty_like(grad))

    def spec(self):
        return {"type": self.kind, "p": self.p}
