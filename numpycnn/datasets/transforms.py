"""Random horizontal flips of image batches (N, C, H, W), for colour photographs.

A mirror image of a cat is still a cat, so flipping half the training images left to
right is the usual first augmentation for photographs (CIFAR-10, your own folders); it is
wrong for digits and letters, whose mirror images are other symbols or none. As in
``numpycnn.augment``, the random choices are drawn apart from the flipping, so that the
training loop can draw them from its per-step generator and workers apply their share.
"""

import numpy as np

__all__ = ["draw_flips", "flip"]


def draw_flips(rng, n, p=0.5):
    """(n,) booleans, each True with probability ``p``: which images to flip."""
    if not 0 <= p <= 1:
        raise ValueError(f"flip probability must be in [0, 1], got {p!r}")
    return rng.random(n) < p


def flip(images, which):
    """``images`` (N, C, H, W) with those where ``which`` (N,) is True mirrored left to
    right: a new array, same dtype; the others are copied unchanged."""
    images = np.asarray(images)
    which = np.asarray(which, dtype=bool)
    if images.ndim != 4 or which.shape != images.shape[:1]:
        raise ValueError(
            f"flip needs images (N, C, H, W) and N flags, got {images.shape} and {which.shape}"
        )
    out = images.copy()
    out[which] = images[which, :, :, ::-1]
    return out
