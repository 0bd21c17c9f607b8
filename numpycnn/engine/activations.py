"""Activation layers. Elementwise ones keep their input's memory order (NumPy's default
'K' order for ufuncs), which preserves the images-last memory behind NCHW views."""

import numpy as np

from .layers import Layer


class ReLU(Layer):
    """max(0, x); derivative 1 where x > 0, else 0 (0 at the kink, as the reference)."""

    kind = "relu"

    def forward(self, x):
        self._active = x > 0
        return x * self._active

    def switches(self):
        return (self._active,)

    def backward(self, grad):
        return grad * self._active


class LeakyReLU(Layer):
    """x where x > 0, alpha*x elsewhere; derivative 1 or alpha."""

    kind = "leaky_relu"

    def __init__(self, alpha=0.01):
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or alpha < 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, x):
        self._slope = np.where(x > 0, 1.0, self.alpha).astype(x.dtype, copy=False)
        return x * self._slope

    def switches(self):
        return (self._slope,)

    def backward(self, grad):
        return grad * self._slope

    def spec(self):
        return {"type": self.kind, "alpha": self.alpha}


def sigmoid(x):
    """1 / (1 + e^-x), from e^-|x| so that it never overflows and keeps full relative
    precision in both tails: 1 / (1 + e) for x >= 0, e / (1 + e) below."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0, e) / (1.0 + e)


class Sigmoid(Layer):
    """s(x) = 1 / (1 + e^-x); derivative s(x) * (1 - s(x))."""

    kind = "sigmoid"

    def forward(self, x):
        self._out = sigmoid(x)
        return self._out

    def backward(self, grad):
        return grad * self._out * (1.0 - self._out)


class Tanh(Layer):
    """tanh(x); derivative 1 - tanh(x)^2."""

    kind = "tanh"

    def forward(self, x):
        self._out = np.tanh(x)
        return self._out

    def backward(self, grad):
        return grad * (1.0 - self._out * self._out)


def softmax(z):
    """Softmax over the last axis, shifted by the maximum so that exp never overflows."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


class Softmax(Layer):
    """p_i = e^{z_i} / sum_j e^{z_j} over the features of each sample.

    Jacobian dp_i/dz_j = p_i (delta_ij - p_j), so dL/dz = p * (g - sum_j g_j p_j).
    For training, prefer the fused softmax + cross-entropy loss, which is cheaper and exact.
    """

    kind = "softmax"

    def forward(self, x):
        self._out = softmax(x)
        return self._out

    def backward(self, grad):
        p = self._out
        return p * (grad - (grad * p).sum(axis=-1, keepdims=True))
