"""Vectorised convolution and pooling kernels.

The kernels work on channels-last arrays, (N, H, W, C), C-contiguous. In that layout a
receptive field of a KH x KW kernel is KH runs of KW*C contiguous numbers, so gathering all of
them (im2col) is a fast copy and the convolution becomes one matrix product. The layers in
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


def conv2d_forward(x, weight, bias, stride=1, padding=0):
    """Cross-correlation of ``x`` (N, H, W, C) with ``weight`` (F, C, KH, KW), plus ``bias`` (F,).

    out[n, i, j, f] = bias[f] + sum_{c,u,v} x_pad[n, i*stride+u, j*stride+v, c] * weight[f, c, u, v]

    Returns the output (N, OH, OW, F) and the im2col matrix that backward needs.
    """
    f, c, kh, kw = weight.shape
    xp = pad_hw(x, padding)
    n, hp, wp, _ = xp.shape
    oh, ow = output_size(hp, kh, stride), output_size(wp, kw, stride)
    cols = im2col(xp, kh, kw, stride)
    wmat = weight.transpose(0, 2, 3, 1).reshape(f, kh * kw * c)  # columns in cols' order
    # (F, K) @ (K, M) is about twice as fast as (M, K) @ (K, F) for these skinny shapes.
    out_t = wmat @ cols.T
    # Adding the bias while copying into channels-last order saves a pass over the output.
    out = np.add(out_t.T, bias, out=np.empty((out_t.shape[1], f), dtype=out_t.dtype))
    return out.reshape(n, oh, ow, f), cols


def conv2d_backward(grad, cols, weight, x_shape, stride=1, padding=0, need_dx=True):
    """Gradients of the cross-correlation.

    grad: dL/dout (N, OH, OW, F); cols: forward's im2col; x_shape: the unpadded (N, H, W, C).
    dL/dweight = grad^T @ cols (reshaped), dL/dbias = sum of grad over N, OH, OW, and
    dL/dx_pad[n, i*stride+u, j*stride+v, :] += grad[n, i, j, :] @ weight[:, :, u, v]
    for every kernel offset (u, v). Returns (dx or None, dweight, dbias).
    """
    f, c, kh, kw = weight.shape
    n, oh, ow, _ = grad.shape
    g = grad.reshape(n * oh * ow, f)
    dweight = (g.T @ cols).reshape(f, kh, kw, c).transpose(0, 3, 1, 2)
    # A product with a ones vector sums the rows far faster than g.sum(axis=0).
    dbias = np.ones(g.shape[0], dtype=g.dtype) @ g
    if not need_dx:
        return None, dweight, dbias
    # The gradient is laid on the padded input's grid (zeros where no output sits) and both
    # grids are flattened to rows of channels: an offset (u, v) is then the constant row
    # shift u*Wp + v, so each offset costs one small product and one contiguous add.
    _, h, w, _ = x_shape
    hp, wp = h + 2 * padding, w + 2 * padding
    g_grid = np.zeros((n, hp, wp, f), dtype=grad.dtype)
    g_grid[:, : stride * oh : stride, : stride * ow : stride] = grad
    g_rows = g_grid.reshape(-1, f)
    rows = g_rows.shape[0]
    # Valid outputs reach at most (kh-1)*wp + kw-1 rows further; the tail stays zero.
    dx_rows = np.zeros((rows + (kh - 1) * wp + kw - 1, c), dtype=grad.dtype)
    w_offsets = np.ascontiguousarray(weight.transpose(2, 3, 0, 1))  # (KH, KW, F, C)
    buf = np.empty((rows, c), dtype=grad.dtype)
    for u in range(kh):
        for v in range(kw):
            shift = u * wp + v
            np.matmul(g_rows, w_offsets[u, v], out=buf)
            dx_rows[shift : shift + rows] += buf
    dxp = dx_rows[:rows].reshape(n, hp, wp, c)
    if padding:
        dxp = dxp[:, padding:-padding, padding:-padding]
    return dxp, dweight, dbias


def maxpool_forward(x, size, stride):
    """Max over each size x size window of ``x`` (N, H, W, C).

    Returns the output (N, OH, OW, C) and, for each window offset in row-major order, a
    mask of the outputs whose first maximum sits at that offset: ties (frequent after
    ReLU) go to the first, as in the reference. A few elementwise passes over strided
    views, cheaper than gathering the windows and taking an argmax.
    """
    v = windows(x, size, size, stride)
    offsets = [v[:, :, :, u, w] for u in range(size) for w in range(size)]
    out = offsets[0].copy()
    for view in offsets[1:]:
        np.maximum(out, view, out=out)
    taken = np.zeros(out.shape, dtype=bool)
    masks = []
    for view in offsets:
        first = (view == out) & ~taken
        taken |= first
        masks.append(first)
    return out, masks


def maxpool_backward(grad, masks, x_shape, size, stride):
    """Route each window's gradient to the one input that was its (first) maximum."""
    n, oh, ow, c = grad.shape
    dx = np.zeros(x_shape, dtype=grad.dtype)
    routed = np.empty_like(grad)
    for k, first in enumerate(masks):
        u, v = divmod(k, size)
        np.multiply(grad, first, out=routed)
        # Overlapping windows (stride < size) may route to the same input: hence +=.
        dx[:, u : u + stride * oh : stride, v : v + stride * ow : stride] += routed
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
