"""Prediction: the evaluation forward pass of a ``Sequential``, rearranged where no
backward pass will follow.

Training's forward keeps what backward needs (every convolution's windows, every ReLU's
mask, every pooling window's values), in the layout backward wants. Prediction needs
none of it, which allows three rearrangements (measured on the reference network, one
core, blocks of 32 images: 42 -> 30 microseconds an image, 23,800 -> 33,000 images/s):

- **Convolution by output lines** (``conv2d_lines``). Output line i of a stride-1
  convolution is one matrix product: the weights, (F, KH*KW*C), times the KH input lines
  i..i+KH-1 with their KW column shifts, (KH*KW*C, OW*N). Stored line by line, with each
  line's KW shifted copies together, those rows are one contiguous block of the windows
  array, and consecutive output lines' blocks overlap; a strided view makes them a stack
  of matrices without copying anything, one batched product computes every line, and no
  im2col array KH times the windows' size is ever written. ``group`` lines per product
  (2 with several input channels) give BLAS 2F-row products instead of F-row ones.
- **Pooling before bias and ReLU.** A convolution followed by ReLU and max pooling (in
  either order) pools the raw sums first, in the lines' own layout, and then adds the bias
  and applies ReLU to a quarter of the values: max(relu(z + b)) = relu(max(z) + b), since
  b is constant over a window and ReLU is increasing.
- **In place.** ReLU after a convolution or a dense layer works on the array that layer
  just made, and a dense layer computes its output transposed, (units, N), from the
  (features, N) memory that flatten passes on (``_Dense``).

Every other layer runs its own ``forward`` in evaluation mode. The numbers are forward's
up to float rounding (the sums run in another order); the tests compare them for every
layer kind. One difference: a NaN or infinity in a convolution's input also makes NaN the
output line grouped with the ones it reaches (0 x NaN in the stacked weights' zeros); that
image's scores are NaN on both paths.
"""

import numpy as np

from .kernels import pad_hw, to_nchw

__all__ = ["Plan", "conv2d_lines", "stack_weights"]


def stack_weights(weight, group=1):
    """``weight`` (F, C, KH, KW) as the (group*F, (group+KH-1)*KW*C) matrix with which
    ``conv2d_lines`` computes ``group`` output lines at once: row (g, f) holds filter f's
    kernel row u at the columns of input line g + u, and zeros where line g does not reach."""
    f, c, kh, kw = weight.shape
    stacked = np.zeros((group, f, group + kh - 1, kw, c), dtype=weight.dtype)
    for g in range(group):
        stacked[g, :, g : g + kh] = weight.transpose(0, 2, 3, 1)
    return stacked.reshape(group * f, -1)


def conv2d_lines(x, weight, padding=0, group=1, stacked=None):
    """The stride-1 cross-correlation of ``x`` (C, H, W, N) with ``weight`` (F, C, KH, KW),
    without bias, in output-line order: (OH, F, OW, N).

    out[i, f, j, n] = sum_{c,u,v} x_pad[c, i+u, j+v, n] * weight[f, c, u, v]

    ``group`` output lines per matrix product, with the weights as ``stack_weights``
    returns them (``stacked``: that matrix, when the caller keeps it).
    """
    f, c, kh, kw = weight.shape
    xp = pad_hw(x, padding)
    _, hp, wp, n = xp.shape
    oh, ow = hp - kh + 1, wp - kw + 1
    groups = -(-oh // group)
    lines = groups * group + kh - 1  # lines the products read: hp, or more when oh % group
    # windows[a, v, c] holds x_pad[c, a, v:v+OW]: line a of channel c under kernel column v
    windows = np.empty((lines, kw, c, ow, n), dtype=x.dtype)
    by_line = xp.transpose(1, 0, 2, 3)
    for v in range(kw):
        windows[:hp, v] = by_line[:, :, v : v + ow]
    windows[hp:] = 0  # lines no output keeps, but 0 * NaN from np.empty would spread
    if stacked is None:
        stacked = stack_weights(weight, group)
    # Group k's rows are lines k*group .. k*group+group+KH-2 of the windows, contiguous:
    # a view with a stride of ``group`` lines between groups (they overlap), not a copy.
    row = ow * n * windows.itemsize
    reads = np.ndarray(
        (groups, (group + kh - 1) * kw * c, ow * n),
        dtype=windows.dtype,
        buffer=windows,
        strides=(group * kw * c * row, row, windows.itemsize),
    )
    out = np.matmul(stacked, reads)  # (groups, group*F, OW*N)
    return out.reshape(groups * group, f, ow, n)[:oh]


def _max_pool_lines(z, size, stride):
    """Max pooling of ``z`` (H, C, W, N) (output lines' order), windows ``size`` x
    ``size`` every ``stride``: (OH, C, OW, N)."""
    h, _, w, _ = z.shape
    oh, ow = (h - size) // stride + 1, (w - size) // stride + 1
    rows = z[0 : stride * oh : stride]
    for u in range(1, size):
        rows = np.maximum(rows, z[u : u + stride * oh : stride])
    out = rows[:, :, 0 : stride * ow : stride]
    for v in range(1, size):
        out = np.maximum(out, rows[:, :, v : v + stride * ow : stride])
    return out


class _Conv:
    """A stride-1 convolution, and the ReLU and max pooling that follow it (fused). Its
    input and output are images-last, (C, H, W, N) behind NCHW views, or in the lines'
    own order, (H, C, W, N), between two such steps (``lines_in``, ``lines_out``): the
    next convolution reads its windows line by line anyway."""

    def __init__(self, conv, relu, pool):
        self.conv, self.relu, self.pool = conv, relu, pool
        self.lines_in = self.lines_out = False
        w = conv.params["weight"]
        self.group = 2 if w.shape[1] > 1 else 1  # one channel: F-row products are as fast
        self.stacked = stack_weights(w, self.group)
        self.bias = conv.params["bias"][:, 0]

    def __call__(self, x):
        # the (C, H, W, N) array behind the input, a view in either order
        xc = x.transpose(1, 0, 2, 3) if self.lines_in else x.transpose(1, 2, 3, 0)
        w = self.conv.params["weight"]
        z = conv2d_lines(xc, w, self.conv.padding, self.group, self.stacked)
        if self.pool is not None:
            z = _max_pool_lines(z, self.pool.size, self.pool.stride)
        if self.lines_out:
            out = np.add(z, self.bias.reshape(1, -1, 1, 1), out=z)  # z is ours: in place
        else:
            out = np.empty((z.shape[1], z.shape[0], z.shape[2], z.shape[3]), dtype=z.dtype)
            np.add(z.transpose(1, 0, 2, 3), self.bias.reshape(-1, 1, 1, 1), out=out)
        if self.relu:
            np.maximum(out, 0, out=out)
        return out if self.lines_out else to_nchw(out)


class _Dense:
    """A dense layer, and the ReLU that follows it (in place), computed transposed:
    weight (U, D) @ x^T (D, N), since the flatten before it hands over x^T as contiguous
    memory, and a (U, D) @ (D, N) product runs faster here than (N, D) @ (D, U)."""

    def __init__(self, dense, relu):
        self.weight, self.relu = dense.params["weight"], relu
        self.bias = dense.params["bias"]  # (U, 1): a column, as the output is

    def __call__(self, x):
        out = self.weight @ x.T  # (U, N)
        out += self.bias
        if self.relu:
            np.maximum(out, 0, out=out)
        return out.T


class Plan:
    """The prediction pass over ``layers`` (a Sequential's, in evaluation mode): fused
    steps where the rearrangements above apply, the layer's own forward elsewhere. A plan
    stacks the convolutions' weights when it is made (``Sequential.predict_proba`` makes
    one per call): after the parameters change, make another."""

    def __init__(self, layers):
        self.steps, i = [], 0
        while i < len(layers):
            layer = layers[i]
            if layer.kind == "conv2d" and layer.stride == 1:
                relu = pool = None
                for nxt in layers[i + 1 : i + 3]:  # ReLU and max pooling commute
                    if nxt.kind == "relu" and relu is None:
                        relu = nxt
                    elif nxt.kind == "maxpool2d" and pool is None:
                        pool = nxt
                    else:
                        break
                self.steps.append(_Conv(layer, relu is not None, pool))
                i += 1 + (relu is not None) + (pool is not None)
            elif layer.kind == "dense":
                relu = i + 1 < len(layers) and layers[i + 1].kind == "relu"
                self.steps.append(_Dense(layer, relu))
                i += 1 + relu
            else:
                self.steps.append(layer.forward)
                i += 1
        for a, b in zip(self.steps, self.steps[1:]):
            if isinstance(a, _Conv) and isinstance(b, _Conv):
                a.lines_out = b.lines_in = True

    def __call__(self, x):
        for step in self.steps:
            x = step(x)
        return x
