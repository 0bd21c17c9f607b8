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


def row_windows(rows, kw):
    """Copy (R - KW + 1, KW*C) of ``rows`` (R, C): row p lays rows p .. p+KW-1 side by side.

    An image batch flattened to rows of channels, (N*H*W, C), has the KW pixels under one
    row of a kernel on KW consecutive rows, so these windows are one strided view (copied,
    because matrix products need non-overlapping rows).
    """
    c = rows.shape[1]
    return sliding_window_view(rows.reshape(-1), kw * c)[::c].copy()


def conv2d_forward(x, weight, bias, stride=1, padding=0):
    """Cross-correlation of ``x`` (N, H, W, C) with ``weight`` (F, C, KH, KW), plus ``bias`` (F,).

    out[n, i, j, f] = bias[f] + sum_{c,u,v} x_pad[n, i*stride+u, j*stride+v, c] * weight[f, c, u, v]

    Returns the output (N, OH, OW, F) and the cache that ``conv2d_backward`` needs. Two
    formulations give the same numbers:

    - "rows" (stride 1, several channels): every pixel of the padded input grid is treated
      as an output position. Flattened to rows, kernel offset (u, v) is then the constant
      row shift u*Wp + v, so the output is KH products of ``row_windows`` slices with one
      kernel row each, accumulated, then cropped to OH x OW. The window matrix is KH times
      smaller than im2col's, which makes this about 1.6x faster for the reference's conv2.
    - "im2col" (one channel, or stride > 1): one row per output position holding its whole
      receptive field, and one product. With one channel the row windows would be too
      thin for fast products; with a stride the grid would compute stride^2 times too much.
    """
    f, c, kh, kw = weight.shape
    xp = pad_hw(x, padding)
    n, hp, wp, _ = xp.shape
    oh, ow = output_size(hp, kh, stride), output_size(wp, kw, stride)
    if stride == 1 and c > 1:
        rows = n * hp * wp
        # Output positions past `valid` would read beyond the last image; none is kept.
        valid = rows - (kh - 1) * wp - (kw - 1)
        xw = row_windows(xp.reshape(rows, c), kw)
        w_rows = weight.transpose(2, 0, 3, 1).reshape(kh, f, kw * c)  # (u, f, (v, c))
        # Products as (F, K) @ (K, M): here as fast as (M, K) @ (K, F), and they give
        # bit-identical outputs for identical receptive fields (constant background) in float64.
        grid_t = np.empty((f, rows), dtype=xp.dtype)
        buf = np.empty((f, valid), dtype=xp.dtype)
        np.matmul(w_rows[0], xw[:valid].T, out=grid_t[:, :valid])
        for u in range(1, kh):
            np.matmul(w_rows[u], xw[u * wp : u * wp + valid].T, out=buf)
            grid_t[:, :valid] += buf
        # Crop to the real outputs, back in channels-last order, and add the bias, in one pass.
        out = np.add(grid_t.T.reshape(n, hp, wp, f)[:, :oh, :ow], bias)
        return out, ("rows", xw)
    cols = im2col(xp, kh, kw, stride)
    wmat = weight.transpose(2, 3, 1, 0).reshape(kh * kw * c, f)  # rows in cols' order
    out = cols @ wmat  # (M, F): channels-last as it comes
    out += bias
    return out.reshape(n, oh, ow, f), ("im2col", cols)


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
        dweight = (grad.reshape(n * oh * ow, f).T @ matrix).reshape(f, kh, kw, c)
        dweight = dweight.transpose(0, 3, 1, 2)
        if not need_dx:
            return None, dweight, dbias
    # Both gradients below work on the padded input's grid flattened to rows of channels,
    # with the output gradient laid where its outputs sit and zeros elsewhere, so that
    # kernel offset (u, v) is the constant row shift u*Wp + v. `lead` zero rows in front
    # keep every backward shift in bounds.
    rows = n * hp * wp
    lead = (kh - 1) * wp + kw - 1
    g_rows = np.zeros((lead + rows, f), dtype=grad.dtype)
    g_grid = g_rows[lead:]
    g_grid.reshape(n, hp, wp, f)[:, : stride * oh : stride, : stride * ow : stride] = grad
    if mode == "rows":
        # dweight[:, :, u, :] pairs each output's gradient with the row window u rows below.
        valid = rows - (kh - 1) * wp - (kw - 1)
        g_valid_t = g_grid[:valid].T
        dweight = np.empty((kh, f, kw * c), dtype=grad.dtype)
        for u in range(kh):
            np.matmul(g_valid_t, matrix[u * wp : u * wp + valid], out=dweight[u])
        dweight = dweight.reshape(kh, f, kw, c).transpose(1, 3, 0, 2)
        if not need_dx:
            return None, dweight, dbias
    # dx[q] = sum_{u,v} g[q - u*Wp - v] @ weight[:, :, u, v]. The KW shifts of one kernel
    # row are KW consecutive gradient rows, which one window copy lays side by side, so a
    # kernel row costs one product with K = KW*F and one add.
    g_win = row_windows(g_rows, kw)
    # w_rows[u] stacks weight[:, :, u, v] for v = KW-1 .. 0, to match g_win's row order.
    w_rows = np.ascontiguousarray(weight[:, :, :, ::-1].transpose(2, 3, 0, 1)).reshape(
        kh, kw * f, c
    )
    dx_rows = np.empty((rows, c), dtype=grad.dtype)
    buf = np.empty((rows, c), dtype=grad.dtype)
    for u in range(kh):
        start = lead - u * wp - (kw - 1)
        np.matmul(g_win[start : start + rows], w_rows[u], out=dx_rows if u == 0 else buf)
        if u:
            dx_rows += buf
    dxp = dx_rows.reshape(n, hp, wp, c)
    if padding:
        dxp = dxp[:, padding:-padding, padding:-padding]
    return dxp, dweight, dbias


def maxpool_forward(x, size, stride):
    """Max over each size x size window of ``x`` (N, H, W, C): (N, OH, OW, C).

    A few elementwise passes over one strided view per window offset, cheaper than
    gathering the windows and reducing them.
    """
    v = windows(x, size, size, stride)
    out = v[:, :, :, 0, 0].copy()
    for u in range(size):
        for w in range(size):
            if u or w:
                np.maximum(out, v[:, :, :, u, w], out=out)
    return out


def first_max_masks(x, out, size, stride):
    """For each window offset in row-major order, a mask of the windows whose first maximum
    sits there: ties (frequent after ReLU) go to the first, as in the reference. Worked out
    from the input and output only when a gradient needs them, so prediction skips it."""
    v = windows(x, size, size, stride)
    taken = np.zeros(out.shape, dtype=bool)
    masks = []
    for u in range(size):
        for w in range(size):
            first = (v[:, :, :, u, w] == out) & ~taken
            taken |= first
            masks.append(first)
    return masks


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
