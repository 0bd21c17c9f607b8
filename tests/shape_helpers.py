"""Real MNIST images in another data set's shape, for tests of networks built for it."""

import numpy as np


def mnist_as(images, shape):
    """uint8 MNIST images (N, 28, 28) as (N, C, H, W): padded with black (or cropped)
    about the centre to H x W, the grey channel repeated C times. Real pixels, so a
    network for 3x32x32 colour input meets real image statistics in a gradient check."""
    c, h, w = shape
    x = np.asarray(images)[:, None]
    out = np.zeros((len(x), 1, h, w), dtype=x.dtype)
    top, left = (h - 28) // 2, (w - 28) // 2
    src = x[
        :, :, max(0, -top) : max(0, -top) + min(h, 28), max(0, -left) : max(0, -left) + min(w, 28)
    ]
    out[
        :, :, max(0, top) : max(0, top) + src.shape[2], max(0, left) : max(0, left) + src.shape[3]
    ] = src
    return np.repeat(out, c, axis=1)
