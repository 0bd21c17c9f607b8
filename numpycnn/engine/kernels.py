"""Vectorised convolution and pooling kernels.

The kernels work on channels-last arrays, (N, H, W, C), C-contiguous. In that layout a
receptive field of a KH x KW kernel is KH runs of KW*C contiguous numbers, so gathering them
is a fast copy and a convolution becomes matrix products (see ``conv2d_forward``). The layers in
``layers.py`` present the usual NCHW shapes to the outside and keep channels-last memory
behind them (see ``to_nhwc``), so no transposes are paid between layers.

Shapes, as named in the papers: N batch, C input channels, F filters (output channels),
H x W input, KH x KW kernel, OH x OW output, ``stride`` and zero ``padding``.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def output_size(size, kernel, stride=1, padding=0):
    """Length of one output side: floor((size + 2*padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def to_nhwc(x):
    """The channels-last (N, H, W, C) contiguous array behind an NCHW-shaped array.

    Free (a view) when ``x`` is itself an NCHW view of channels-last memory, as every
    conv and pool layer returns; a copy otherwise.
    """
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def to_nchw(x):
    """NCHW-shaped view of a channels-last array (no copy)."""
    return x.transpose(0, 3, 1, 2)


def pad_hw(x, padding):
    """Zero-pad the two spatial axes of an (N, H, W, C) array."""
    if padding == 0:
        return x
    p = padding
    return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def windows(x, kh, kw, stride):
    """View (N, OH, OW, KH, KW, C) of every receptive field of ``x`` (N, H, W, C); no copy."""
    v = sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H-KH+1, W-KW+1, C, KH, KW)
    return v[:, ::stride, ::stride].transpose(0, 1, 2, 4, 5, 3)


def im2col(x, kh, kw, stride):
    """Receptive fields as rows: (N*OH*OW, KH*KW*C), columns in (kh, kw, c) order.

    With several channels each row gathers KH contiguous runs of KW*C numbers. With one
    channel those runs would be only KW long, so the matrix is then gathered transposed,
    along output rows, and returned as a transposed view: the same (M, K) array to its
    users, who only multiply with it.
    """
    v = windows(x, kh, kw, stride)
    n, oh, ow = v.shape[:3]
    c = x.shape[3]
    if c == 1:
        return v.transpose(3, 4, 5, 0, 1, 2).reshape(kh * kw, n * oh * ow).T
    return v.reshape(n * oh * ow, kh * kw * c)


def line_windows(x, kw):
    """Copy (N*H*OW, KW*C) of ``x`` (N, H, W, C), OW = W - KW + 1: row (n, a, j) lays the KW
    pixels x[n, a, j : j+KW] side by side, the pixels under one kernel row of output column j.

    Within one image line these are overlapping windows of KW*C contiguous numbers: one
    strided view, copied (matrix products need rows that do not overlap), and a fast copy.
    No window straddles two lines, since no output uses one.
    """
    n, h, w, c = x.shape
    lines = x.reshape(n * h, w * c)
    return sliding_window_view(lines, kw * c, axis=1)[:, ::c].reshape(-1, kw * c)


def add_bias(out, bias):
    """Add ``bias`` (F,) to ``out`` (..., OW, F), C-contiguous, in place; returns ``out``.

    Broadcasting ``bias`` over the last axis alone would make NumPy loop over F numbers at a
    time; a bias repeated along a whole output line lets it loop over lines, 3-4x faster.
    """
    ow, f = out.shape[-2:]
    lines = out.reshape(*out.shape[:-2], ow * f)  # a view: each line is contiguous
    np.add(lines, np.tile(bias, ow), out=lines)
    return out


def conv2d_forward(x, weight, bias, stride=1, padding=0):
    """Cross-correlation of ``x`` (N, H, W, C) with ``weight`` (F, C, KH, KW), plus ``bias`` (F,).

    out[n, i, j, f] = bias[f] + sum_{c,u,v} x_pad[n, i*stride+u, j*stride+v, c] * weight[f, c, u, v]

    Returns the output (N, OH, OW, F) and the cache that ``conv2d_backward`` needs. Two
    formulations give the same numbers:

    - "lines" (stride 1, several channels): ``line_windows`` holds, for every input line a
      and output column j, the KW pixels of line a under the kernel. Output (i, j) takes
      kernel row u from line i+u, which in the flattened windows is the constant shift of u
      lines, so the output is KH products of shifted window slices with one kernel row
      each, accumulated. The window matrix is KH times smaller than im2col's and a product
      has K = KW*C, which makes this about 2x faster for the reference's conv2. Each image's
      product takes only the windows of its own OH output lines, so nothing is cropped.
    - "im2col" (one channel, or stride > 1): one row per output position holding its whole
      receptive field, and one product. With one channel the line windows would be too
      thin for fast products; with a stride the lines would compute stride times too much.

    Products are (M, K) @ (K, F), with the F filters last: channels-last as they come.
    """
    f, c, kh, kw = weight.shape
    xp = pad_hw(x, padding)
    n, hp, wp, _ = xp.shape
    oh, ow = output_size(hp, kh, stride), output_size(wp, kw, stride)
    if stride == 1 and c > 1:
        xw = line_windows(xp, kw)
        per_image = xw.reshape(n, hp * ow, kw * c)
        w_rows = weight.transpose(2, 3, 1, 0).reshape(kh, kw * c, f)  # (u, (v, c), f)
        # One product per image and kernel row u: its output lines' windows, u lines down.
        out = np.matmul(per_image[:, : oh * ow], w_rows[0])
        buf = np.empty_like(out)
        for u in range(1, kh):
            np.matmul(per_image[:, u * ow : u * ow + oh * ow], w_rows[u], out=buf)
            out += buf
        return add_bias(out.reshape(n, oh, ow, f), bias), ("lines", xw)
    cols = im2col(xp, kh, kw, stride)
    wmat = weight.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)  # rows in cols' order
    out = add_bias((cols @ wmat).reshape(n, oh, ow, f), bias)
    return out, ("im2col", cols)


def conv2d_backward(grad, cache, weight, x_shape, stride=1, padding=0, need_dx=True):
    """Gradients of the cross-correlation.

    grad: dL/dout (N, OH, OW, F); cache: forward's; x_shape: the unpadded (N, H, W, C).
    dL/dbias = sum of grad over N, OH, OW;
    dL/dweight[f, c, u, v] = sum_{n,i,j} grad[n, i, j, f] * x_pad[n, i*stride+u, j*stride+v, c];
    dL/dx_pad[n, i*stride+u, j*stride+v, :] += grad[n, i, j, :] @ weight[:, :, u, v]
    for every kernel offset (u, v). Returns (dx or None, dweight, dbias).
    """
    mode, matrix = cache
    f, c, kh, kw = weight.shape
    n, oh, ow, _ = grad.shape
    _, h, w, _ = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    # A product with a ones vector sums the rows far faster than grad.sum(axis=0).
    dbias = np.ones(n * oh * ow, dtype=grad.dtype) @ grad.reshape(n * oh * ow, f)
    if mode == "im2col":
        dweight = (matrix.T @ grad.reshape(n * oh * ow, f)).reshape(kh, kw, c, f)
        dweight = dweight.transpose(3, 2, 0, 1)  # (u, v, c, f) -> (f, c, u, v)
    else:
        # dweight[:, :, u, :] pairs each output's gradient with the line windows u lines
        # below it: sum_q g[q - u*OW] (x) windows[q] over forward's rows q (N*Hp lines of
        # OW), where lines i >= OH get zero gradient. With the KH shifted copies of the
        # gradient stacked, all kernel rows are one product with N = KW*C and M = KH*F
        # (1.3x faster than KH products with N = F). The gradient is held transposed, so
        # that each shifted copy is F contiguous runs.
        rows = n * hp * ow
        lead = (kh - 1) * ow
        g_t = np.zeros((f, lead + rows), dtype=grad.dtype)
        g_t[:, lead:].reshape(f, n, hp, ow)[:, :, :oh] = grad.transpose(3, 0, 1, 2)
        g_shifted = np.empty((kh, f, rows), dtype=grad.dtype)
        for u in range(kh):
            g_shifted[u] = g_t[:, lead - u * ow : lead - u * ow + rows]
        dweight = (g_shifted.reshape(kh * f, rows) @ matrix).reshape(kh, f, kw, c)
        dweight = dweight.transpose(1, 3, 0, 2)  # (u, f, v, c) -> (f, c, u, v)
    if not need_dx:
        return None, dweight, dbias
    # dx_pad line a gets, for every kernel row u, output-gradient line i = (a - u) / stride
    # times kernel row u: sum_v g[i, b - v] @ weight[:, :, u, v] at column b, a 1-D full
    # correlation along the line. Laying each gradient line out at its input columns (every
    # stride-th) between KW-1 zeros on either side, ``line_windows`` puts g[i, b-KW+1 .. b]
    # on row (i, b), so a kernel row costs one product with K = KW*F, added in at lines
    # u, u + stride, ... of dx_pad.
    g_lines = np.zeros((n, oh, wp + kw - 1, f), dtype=grad.dtype)
    g_lines[:, :, kw - 1 : kw - 1 + stride * ow : stride] = grad
    g_win = line_windows(g_lines, kw)  # (N*OH*Wp, KW*F)
    # w_rows[u] stacks weight[:, :, u, v] for v = KW-1 .. 0, to match g_win's column order.
    w_rows = np.ascontiguousarray(weight[:, :, :, ::-1].transpose(2, 3, 0, 1)).reshape(
        kh, kw * f, c
    )
    dxp = np.zeros((n, hp, wp, c), dtype=grad.dtype)
    buf = np.empty((n * oh * wp, c), dtype=grad.dtype)
    for u in range(kh):
        np.matmul(g_win, w_rows[u], out=buf)
        dxp[:, u : u + stride * oh : stride] += buf.reshape(n, oh, wp, c)
    if padding:
        dxp = dxp[:, padding:-padding, padding:-padding]
    return dxp, dweight, dbias


def maxpool_forward(x, size, stride):
    """Max over each size x size window of ``x`` (N, H, W, C): (N, OH, OW, C).

    The max of a window is the max over its columns of the max over its rows, so first the
    ``size`` lines under each window row are reduced, with elementwise passes over whole
    lines, then the ``size`` columns of what is left: 2*size passes in all, cheaper than
    size*size passes over every window offset, and exact.
    """
    _, h, w, _ = x.shape
    oh, ow = output_size(h, size, stride), output_size(w, size, stride)
    lines = x[:, 0 : stride * oh : stride].copy()
    for u in range(1, size):
        np.maximum(lines, x[:, u : u + stride * oh : stride], out=lines)
    out = lines[:, :, 0 : stride * ow : stride].copy()
    for v in range(1, size):
        np.maximum(out, lines[:, :, v : v + stride * ow : stride], out=out)
    return out


def first_max_masks(x, out, size, stride):
    """For each window offset in row-major order, a mask of the windows whose first maximum
    sits there: ties (frequent after ReLU) go to the first, as in the reference. Worked out
    from the input and output only when a gradient needs them, so prediction skips it."""
    v = windows(x, size, size, stride)
    taken = np.zeros(out.shape, dtype=bool)
    for u in range(size):
        for w in range(size):
            first = (v[:, :, :, u, w] == out) & ~taken
            taken |= first
            yield u, w, first


def maxpool_backward(grad, x, out, size, stride):
    """Route each window's gradient to the one input that was its (first) maximum."""
    n, oh, ow, c = grad.shape
    covered = stride == size and oh * size == x.shape[1] and ow * size == x.shape[2]
    # Non-overlapping windows that tile the input write every input once: no zeros needed.
    dx = np.empty(x.shape, dtype=grad.dtype) if covered else np.zeros(x.shape, dtype=grad.dtype)
    for u, v, first in first_max_masks(x, out, size, stride):
        target = dx[:, u : u + stride * oh : stride, v : v + stride * ow : stride]
        if stride >= size:  # each input in one window at most: write in place
            np.multiply(grad, first, out=target)
        else:  # overlapping windows may route to the same input: hence +=
            target += grad * first
    return dx


def avgpool_forward(x, size, stride):
    """Mean over each size x size window of ``x`` (N, H, W, C)."""
    return windows(x, size, size, stride).mean(axis=(3, 4))


def avgpool_backward(grad, x_shape, size, stride):
    """Each input of a window receives grad / (size*size) from that window."""
    n, oh, ow, c = grad.shape
    dx = np.zeros(x_shape, dtype=grad.dtype)
    share = grad / (size * size)
    for u in range(size):
        for v in range(size):
            dx[:, u : u + stride * oh : stride, v : v + stride * ow : stride] += share
    return dx
