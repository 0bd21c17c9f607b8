"""Data augmentation: small random affine moves of the training images, vectorised.

Each image gets its own translation (dx, dy pixels), rotation (degrees) and scaling about
the image centre. The parameters are drawn apart from the warp (``draw`` then ``apply``),
so that the process that draws them (the training loop, from a generator seeded by the run
seed and the step number) need not be the one that warps: data-parallel workers apply the
parameters of their share of a batch, and the batch comes out the same however it is split.

The warp maps every output pixel back to its source point (the inverse transform) and
samples the input there bilinearly, with ``fill`` (the normalised value of a blank pixel,
one per channel for colour) outside the image. One batch costs four gathers and a few
elementwise passes: no per-image Python loop.

Left-right flips (``flip``, a probability) are a fifth parameter of each image, drawn
after the other four and only when ``flip`` > 0, so a run without flips draws exactly the
numbers it drew before flips existed (and resumes and splits among workers as before).
"""

import math
from dataclasses import dataclass

import numpy as np

from .datasets.transforms import flip as flip_images

#: Columns of a parameter row: translation (pixels, +x right, +y down), rotation (radians,
#: counter-clockwise on screen), scale factor.
PARAMS = ("dx", "dy", "angle", "scale")
#: The largest ``shift`` in pixels (the config bounds it by half the image's side).
MAX_SHIFT = 512


@dataclass(frozen=True)
class Augmentation:
    """Random translation up to ``shift`` pixels each way, rotation up to ``rotate``
    degrees either way, scaling by a factor in [1 - ``scale``, 1 + ``scale``], and a left-right
    flip with probability ``flip``; ``fill`` is the value of pixels that come from outside
    the image (a float, or a tuple of one per channel)."""

    shift: float = 0.0
    rotate: float = 0.0
    scale: float = 0.0
    fill: float | tuple = 0.0
    flip: float = 0.0

    def __post_init__(self):
        for name, value, top in (
            ("shift", self.shift, MAX_SHIFT),
            ("rotate", self.rotate, 180),
            ("flip", self.flip, 1),
        ):
            if not 0 <= value <= top:
                raise ValueError(f"{name} must be in [0, {top}], got {value!r}")
        if not 0 <= self.scale < 1:
            raise ValueError(f"scale must be in [0, 1), got {self.scale!r}")

    @property
    def params_per_image(self):
        """Columns of a parameter row: the four of ``PARAMS``, and the flip when drawn."""
        return len(PARAMS) + (self.flip > 0)

    @property
    def moves(self):
        return bool(self.shift or self.rotate or self.scale)

    @property
    def active(self):
        return self.moves or self.flip > 0

    def draw(self, rng, n):
        """(n, 4) parameters, uniform within the limits, from generator ``rng``; (n, 5)
        with flips, the fifth column 1.0 for an image to flip."""
        u = rng.uniform(-1.0, 1.0, size=(n, len(PARAMS)))
        columns = [
            u[:, 0] * self.shift,
            u[:, 1] * self.shift,
            u[:, 2] * math.radians(self.rotate),
            1.0 + u[:, 3] * self.scale,
        ]
        if self.flip > 0:  # drawn after the others: runs without flips draw as before
            columns.append((rng.random(n) < self.flip).astype(np.float64))
        return np.column_stack(columns)

    def apply(self, images, params):
        """``images`` (n, C, H, W) flipped and moved by ``params`` (n, 4 or 5): a new array,
        same dtype. The flip comes first, so the move is drawn in the flipped frame."""
        params = np.asarray(params, dtype=np.float64)
        if params.shape[1:] == (len(PARAMS) + 1,):
            images = flip_images(images, params[:, -1] > 0.5)
            params = params[:, : len(PARAMS)]
            if not self.moves:
                return images
        return warp(images, params, self.fill)


def warp(images, params, fill=0.0):
    """Each image of ``images`` (n, C, H, W) under its own affine move ``params`` (n, 4).

    An output pixel p (relative to the centre c) comes from the input point
    c + R(-angle) (p - t) / scale, where t = (dx, dy): the inverse of "scale, rotate by
    angle, then translate by t". Bilinear interpolation; points off the image read ``fill``.
    """
    images = np.asarray(images)
    n, c, h, w = images.shape
    params = np.asarray(params, dtype=np.float64).reshape(n, len(PARAMS))
    dx, dy, angle, scale = (params[:, k, None, None] for k in range(len(PARAMS)))
    cy, cx = (h - 1) / 2, (w - 1) / 2
    py = np.arange(h, dtype=np.float64)[None, :, None] - cy - dy
    px = np.arange(w, dtype=np.float64)[None, None, :] - cx - dx
    cos, sin = np.cos(angle) / scale, np.sin(angle) / scale
    # Image rows grow downwards, so a counter-clockwise turn on screen is clockwise in
    # (x, y): the inverse rotation of (px, py) by the screen angle a is this matrix.
    sx = cos * px - sin * py + cx
    sy = sin * px + cos * py + cy

    # Sample a copy padded with one ring of ``fill``: indices clipped into the padded grid
    # then land on the ring whenever the point is off the image. The four corners of every
    # point's cell are read in one gather from the flattened copy.
    padded = np.empty((n, c, h + 2, w + 2), dtype=images.dtype)
    padded[...] = np.reshape(np.asarray(fill, dtype=images.dtype), (1, -1, 1, 1))
    padded[:, :, 1:-1, 1:-1] = images
    x0, y0 = np.floor(sx), np.floor(sy)
    fx = (sx - x0).astype(images.dtype).reshape(n, 1, h * w)
    fy = (sy - y0).astype(images.dtype).reshape(n, 1, h * w)
    x0, y0 = x0.astype(np.intp), y0.astype(np.intp)
    cols = np.stack([np.clip(x0 + 1, 0, w + 1), np.clip(x0 + 2, 0, w + 1)])  # (2, n, h, w)
    rows = np.stack([np.clip(y0 + 1, 0, h + 1), np.clip(y0 + 2, 0, h + 1)]) * (w + 2)
    plane = (np.arange(n * c) * ((h + 2) * (w + 2))).reshape(n, c, 1)
    corners = (rows[:, None] + cols[None]).reshape(2, 2, n, 1, h * w) + plane
    v = padded.reshape(-1).take(corners)  # (2, 2, n, c, h*w): [row][col]
    top = v[0, 0] + (v[0, 1] - v[0, 0]) * fx
    bottom = v[1, 0] + (v[1, 1] - v[1, 0]) * fx
    return (top + (bottom - top) * fy).reshape(n, c, h, w)


def step_rng(seed, step):
    """The generator of the augmentation parameters of optimiser step ``step``: a function
    of the run's seed and the step alone, so a resumed run draws what the uninterrupted one
    drew, and the shuffling generator is left untouched."""
    return np.random.default_rng((int(seed), 0xA6, int(step)))
