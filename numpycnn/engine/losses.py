"""Losses: ``forward(output, labels)`` returns the mean loss over the batch and keeps what
``backward()`` needs to return dL/doutput. Labels are integer classes (N,); the losses on
per-class outputs compare them with one-hot targets.
"""

import numpy as np

from .activations import softmax


def one_hot(labels, classes, dtype):
    t = np.zeros((labels.shape[0], classes), dtype=dtype)
    t[np.arange(labels.shape[0]), labels] = 1
    return t


def log_softmax(z):
    """z - logsumexp(z) over the last axis, shifted by the maximum: finite for any finite z."""
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class Loss:
    kind = None
    #: turns the network's last output into class scores (probabilities where it can)
    probabilities = staticmethod(lambda out: out)


class SoftmaxCrossEntropy(Loss):
    """Softmax and categorical cross-entropy fused, on the logits z.

    L = -mean_n log softmax(z_n)[y_n], computed with log-sum-exp (no log(0) for any
    logits); dL/dz = (softmax(z) - onehot(y)) / N.
    """

    kind = "softmax_cross_entropy"
    probabilities = staticmethod(softmax)

    def forward(self, z, labels):
        logp = log_softmax(z)
        n = z.shape[0]
        self._probs = np.exp(logp)
        self._labels = labels
        return float(-logp[np.arange(n), labels].mean())

    def backward(self):
        n = self._probs.shape[0]
        g = self._probs.copy()
        g[np.arange(n), self._labels] -= 1
        g /= n
        return g


class BinaryCrossEntropy(Loss):
    """Per-class binary cross-entropy on probabilities p (e.g. sigmoid outputs).

    L = -mean over all N*K entries of t log p + (1 - t) log(1 - p), t = onehot(y);
    dL/dp = (p - t) / (p (1 - p)) / (N*K). p is clipped to [eps, 1 - eps] so that the loss
    stays finite when a sigmoid saturates.
    """

    kind = "binary_cross_entropy"

    def forward(self, p, labels):
        eps = np.finfo(p.dtype).eps
        self._p = np.clip(p, eps, 1 - eps)
        self._t = one_hot(labels, p.shape[1], p.dtype)
        q, t = self._p, self._t
        return float(-(t * np.log(q) + (1 - t) * np.log1p(-q)).mean())

    def backward(self):
        q, t = self._p, self._t
        return (q - t) / (q * (1 - q)) / q.size


class MeanSquaredError(Loss):
    """L = mean over all N*K entries of (out - onehot(y))^2; dL/dout = 2 (out - t) / (N*K)."""

    kind = "mean_squared_error"

    def forward(self, out, labels):
        self._diff = out - one_hot(labels, out.shape[1], out.dtype)
        return float((self._diff**2).mean())

    def backward(self):
        return 2.0 * self._diff / self._diff.size


class HalfSumSquaredError(Loss):
    """Half the sum of squared errors per sample, averaged over the batch.

    L = mean_n sum_k (out_nk - t_nk)^2 / 2, t = onehot(y): the LeNet appendix's loss
    (seed 003, eq. A.1) for one image, averaged over the N images of a batch. The half
    cancels the square's 2, so dL/dout = (out - t) / N, the appendix's O - T per image.
    Equal to K/2 times mean_squared_error on K outputs, with a gradient K/2 times larger.
    """

    kind = "half_sum_squared_error"

    def forward(self, out, labels):
        self._diff = out - one_hot(labels, out.shape[1], out.dtype)
        return float(0.5 * (self._diff**2).sum() / out.shape[0])

    def backward(self):
        return self._diff / self._diff.shape[0]


class MeanAbsoluteError(Loss):
    """L = mean over all N*K entries of |out - onehot(y)|; dL/dout = sign(out - t) / (N*K)."""

    kind = "mean_absolute_error"

    def forward(self, out, labels):
        self._diff = out - one_hot(labels, out.shape[1], out.dtype)
        return float(np.abs(self._diff).mean())

    def backward(self):
        return np.sign(self._diff) / self._diff.size


LOSSES = {
    cls.kind: cls
    for cls in (
        SoftmaxCrossEntropy,
        BinaryCrossEntropy,
        MeanSquaredError,
        HalfSumSquaredError,
        MeanAbsoluteError,
    )
}


def get(name):
    """A new loss object of the kind called ``name``."""
    try:
        return LOSSES[name]()
    except KeyError:
        known = ", ".join(sorted(LOSSES))
        raise ValueError(f"unknown loss {name!r} (known: {known})") from None


__all__ = ["softmax", "log_softmax", "one_hot", "get", "LOSSES"]
