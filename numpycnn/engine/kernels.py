"""Vectorised convolution and pooling kernels.

The kernels work on images-last batches, (C, H, W, N), C-contiguous: for each channel,
line and column, the N images of the batch side by side. In that layout every window a
convolution or pooling needs, all images at once, is a run of whole lines of N numbers,
so gathering windows copies long contiguous blocks, and the matrix products are
(F or KH*F, K) @ (K, M) with the long axis M = positions x images last: wide products
whose results are shifted by whole lines with one contiguous slice (see
``conv2d_forward``). The layers in ``layers.py`` present the usual NCHW shapes to the
outside and keep images-last memory behind them (see ``to_chwn``), so no transposes are
paid between layers.

Shapes, as named in the papers: N batch, C input channels, F filters (output channels),
H x W input, KH x KW kernel, OH x OW output, ``stride`` and zero ``padding``.
"""

import numpy as np


def output_size(size, kernel, stride=1, padding=0):
    """Length of one output side: floor((size + 2*padding - kernel) / stride) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def to_chwn(x):
    """The images-last (C, H, W, N) contiguous array behind an NCHW-shaped array.

    Free (a view) when ``x`` is itself an NCHW view of images-last memory, as every conv
    and pool layer returns; a copy otherwise.
    """
    return np.ascontiguousarray(x.transpose(1, 2, 3, 0))


def to_nchw(x):
    """NCHW-shaped view of an images-last array (no copy)."""
    return x.transpose(3, 0, 1, 2)


def pad_hw(x, padding):
    """Zero-pad the two spatial axes of a (C, H, W, N) array."""
    if padding == 0:
        return x
    p = padding
    return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def column_windows(x, kw, stride, ow):
    """Copy (KW, C, H, OW, N) of ``x`` (C, H, W, N): plane v holds x[:, :, v + stride*j] at
    column j, the pixels under kernel column v of every output column, on every line.
    With stride 1 each line's part is one contiguous block of OW*N numbers."""
    c, h, _, n = x.shape
    out = np.empty((kw, c, h, ow, n), dtype=x.dtype)
    for v in range(kw):
        out[v] = x[:, :, v : v + stride * ow : stride]
    return out


def im2col(x, kh, kw, stride):
    """Receptive fields as columns: (KH*KW*C, OH*OW*N), rows in (kh, kw, c) order.

    Gathered in two steps, columns then lines, so that each step copies whole blocks.
    """
    c, h, w, n = x.shape
    oh, ow = output_size(h, kh, stride), output_size(w, kw, stride)
    cw = column_windows(x, kw, stride, ow)  # (KW, C, H, OW, N)
    cols = np.empty((kh, kw, c, oh, ow, n), dtype=x.dtype)
    for u in range(kh):
        cols[u] = cw[:, :, u : u + stride * oh : stride]
    return cols.reshape(kh * kw * c, oh * ow * n)


def conv2d_forward(x, weight, bias, stride=1, padding=0):
    """Cross-correlation of ``x`` (C, H, W, N) with ``weight`` (F, C, KH, KW), plus ``bias`` (F,).

    out[f, i, j, n] = bias[f] + sum_{c,u,v} x_pad[c, i*stride+u, j*stride+v, n] * weight[f, c, u, v]

    Returns the output (F, OH, OW, N) and the cache that ``conv2d_backward`` needs. Two
    formulations give the same numbers:

    - "lines" (stride 1, several channels): ``column_windows`` holds, for every input line
      a and output column j, the KW*C pixels of line a under the kernel (K = KW*C rows).
      One product with all KH kernel rows stacked, (KH*F, K) @ (K, Hp*OW*N), gives for each
      kernel row u what line a contributes to output line a - u; the output is the sum of
      the KH results shifted by u lines, each a contiguous slice. The windows are KH times
      smaller than im2col's, and the product is KH*F rows tall instead of F, which OpenBLAS
      runs 1.5x faster per number; it computes Hp/OH too many lines (1.2x for conv2).
    - "im2col" (one channel, or stride > 1): one column per output position holding its
      whole receptive field, and one product (F, KH*KW*C) @ (KH*KW*C, OH*OW*N). With one
      channel the line windows would be too thin; with a stride the lines would compute
      stride times too much.
    """
    f, c, kh, kw = weight.shape
    xp = pad_hw(x, padding)
    _, hp, wp, n = xp.shape
    oh, ow = output_size(hp, kh, stride), output_size(wp, kw, stride)
    if stride == 1 and c > 1:
        xw = column_windows(xp, kw, 1, ow)  # (KW, C, Hp, OW, N)
        w_all = weight.transpose(2, 0, 3, 1).reshape(kh * f, kw * c)  # (u, f) x (v, c)
        parts = (w_all @ xw.reshape(kw * c, -1)).reshape(kh, f, hp, ow, n)
        out = np.add(parts[0][:, :oh], bias[:, None, None, None])
        for u in range(1, kh):
            out += parts[u][:, u : u + oh]
        return out, ("lines", xw)
    cols = im2col(xp, kh, kw, stride)
    wmat = weight.transpose(0, 2, 3, 1).reshape(f, kh * kw * c)  # columns in cols' order
    out = (wmat @ cols).reshape(f, oh, ow, n)
    out += bias[:, None, None, None]
    return out, ("im2col", cols)


def conv2d_backward(grad, cache, weight, x_shape, stride=1, padding=0, need_dx=True):
    """Gradients of the cross-correlation.

    grad: dL/dout (F, OH, OW, N); cache: forward's; x_shape: the unpadded (C, H, W, N).
    dL/dbias = sum of grad over OH, OW, N;
    dL/dweight[f, c, u, v] = sum_{i,j,n} grad[f, i, j, n] * x_pad[c, i*stride+u, j*stride+v, n];
    dL/dx_pad[:, i*stride+u, j*stride+v, n] += weight[:, :, u, v].T @ grad[:, i, j, n]
    for every kernel offset (u, v). Returns (dx or None, dweight, dbias).
    """
    mode, matrix = cache
    f, c, kh, kw = weight.shape
    _, oh, ow, n = grad.shape
    _, h, w, _ = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    g = grad.reshape(f, -1)
    # A product with a ones vector sums the rows faster than g.sum(axis=1).
    dbias = g @ np.ones(g.shape[1], dtype=g.dtype)
    if mode == "im2col":
        # (K, M) @ (M, F) runs 1.3x faster here than the transposed (F, M) @ (M, K).
        dweight = (matrix @ g.T).reshape(kh, kw, c, f).transpose(3, 2, 0, 1)
    else:
        # dweight[:, :, u] pairs output line i with the column windows of line i + u. With
        # the KH copies of the gradient shifted down by u lines stacked (zero elsewhere),
        # all kernel rows are one product, (KH*F, M) @ (M, KW*C), over forward's M columns.
        g_shifted = np.zeros((kh, f, hp, ow, n), dtype=grad.dtype)
        for u in range(kh):
            g_shifted[u][:, u : u + oh] = grad
        dweight = g_shifted.reshape(kh * f, -1) @ matrix.reshape(kw * c, -1).T
        dweight = dweight.reshape(kh, f, kw, c).transpose(1, 3, 0, 2)  # -> (f, c, u, v)
    if not need_dx:
        return None, dweight, dbias
    # dx_pad line s*i + u gets, for every kernel row u, gradient line i correlated with
    # kernel row u: sum_{v,f} weight[f, :, u, v] * g[f, i, j] at column b = s*j + v. Laying
    # each gradient line out at its input columns (every stride-th) between KW-1 zeros on
    # either side, column window plane KW-1-v holds g at column b - v for column b, so all
    # kernel rows are one product (KH*C, KW*F) @ (KW*F, OH*Wp*N), with the kernel columns
    # reversed to match, added in at lines u, u + s, ...
    g_lines = np.zeros((f, oh, wp + kw - 1, n), dtype=grad.dtype)
    g_lines[:, :, kw - 1 : kw - 1 + stride * ow : stride] = grad
    g_win = column_windows(g_lines, kw, 1, wp)  # (KW, F, OH, Wp, N)
    w_all = weight[:, :, :, ::-1].transpose(2, 1, 3, 0).reshape(kh * c, kw * f)  # (u,c) x (v,f)
    parts = (w_all @ g_win.reshape(kw * f, -1)).reshape(kh, c, oh, wp, n)
    dxp = np.zeros((c, hp, wp, n), dtype=grad.dtype)
    for u in range(kh):
        dxp[:, u : u + stride * oh : stride] += parts[u]
    if padding:
        dxp = dxp[:, padding:-padding, padding:-padding]
    return dxp, dweight, dbias


def _offsets(x_shape, size, stride):
    """Each window offset (u, v) in row-major order, with the index of the inputs that sit
    at that offset of every window."""
    h, w = x_shape[1:3]
    oh, ow = output_size(h, size, stride), output_size(w, size, stride)
    for u in range(size):
        for v in range(size):
            yield slice(None), slice(u, u + stride * oh, stride), slice(v, v + stride * ow, stride)


def maxpool_forward(x, size, stride):
    """Max over each size x size window of ``x`` (C, H, W, N).

    Returns the output (C, OH, OW, N) and the cache ``maxpool_backward`` needs. Each window
    offset (u, v) is gathered into a plane of its own, (size*size, C, OH, OW, N), a copy of
    runs of N numbers: after that, the max and everything backward does are elementwise
    passes over contiguous planes, several times faster than passes over strided views.
    """
    h, w = x.shape[1:3]
    oh, ow = output_size(h, size, stride), output_size(w, size, stride)
    planes = np.empty((size * size, x.shape[0], oh, ow, x.shape[3]), dtype=x.dtype)
    for k, at in enumerate(_offsets(x.shape, size, stride)):
        planes[k] = x[at]
    out = planes.max(axis=0)
    return out, (planes, out, x.shape)


def first_max_masks(planes, out):
    """(size*size, C, OH, OW, N) booleans: for each window offset in row-major order, the
    windows whose first maximum sits there. Ties (frequent after ReLU) go to the first, as
    in the reference. Worked out from forward's planes only when a gradient needs them,
    so prediction skips it."""
    first = planes == out
    seen = first[0].copy()
    for k in range(1, len(first)):
        first[k] &= ~seen
        seen |= first[k]
    return first


def maxpool_backward(grad, cache, size, stride):
    """Route each window's gradient to the one input that was its (first) maximum."""
    planes, out, x_shape = cache
    routed = first_max_masks(planes, out) * grad  # (size*size, C, OH, OW, N)
    h, w = x_shape[1:3]
    # Windows that tile the input write each input once: no zeros, no sums needed.
    tiled = stride == size and h == out.shape[1] * size and w == out.shape[2] * size
    dx = np.empty(x_shape, dtype=grad.dtype) if tiled else np.zeros(x_shape, dtype=grad.dtype)
    for k, at in enumerate(_offsets(x_shape, size, stride)):
        if tiled:
            dx[at] = routed[k]
        else:  # windows may share inputs (stride < size), or leave some uncovered
            dx[at] += routed[k]
    return dx


def avgpool_forward(x, size, stride):
    """Mean over each size x size window of ``x`` (C, H, W, N)."""
    offsets = _offsets(x.shape, size, stride)
    total = x[next(offsets)].copy()
    for at in offsets:
        total += x[at]
    return total / (size * size)


def avgpool_backward(grad, x_shape, size, stride):
    """Each input of a window receives grad / (size*size) from that window."""
    dx = np.zeros(x_shape, dtype=grad.dtype)
    share = grad / (size * size)
    for at in _offsets(x_shape, size, stride):
        dx[at] += share
    return dx
