"""The first layer's filters through a run, as an animated GIF (Pillow writes GIFs).

Each frame shows every kernel of the first conv layer at one snapshot (rows: filters,
columns: input channels), each weight a square on the page's diverging scale (blue
negative, white 0, red positive), with one scale for the whole run so that growing
weights show as deepening colour, and the step and epoch written under the grid.
"""

import numpy as np
from PIL import Image, ImageDraw

from ..modelfile import atomic_write

__all__ = ["filter_frame", "save_filters_gif"]

#: The page's diverging colour stops: value in [-1, 1] -> RGB.
STOPS = np.array([-1.0, -0.5, 0.0, 0.5, 1.0])
COLOURS = np.array(
    [[33, 102, 172], [103, 169, 207], [247, 247, 247], [239, 138, 98], [178, 24, 43]], float
)
CELL, GAP, MARGIN, CAPTION, MIN_WIDTH = 10, 4, 8, 18, 170
#: Milliseconds each frame shows; the last one is held longer.
FRAME_MS, LAST_MS = 350, 2000


def diverging(t):
    """Values in [-1, 1] (any shape) as uint8 RGB (..., 3) on the page's scale."""
    t = np.clip(np.asarray(t, dtype=float), -1, 1)
    rgb = np.stack([np.interp(t, STOPS, COLOURS[:, k]) for k in range(3)], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def filter_frame(weight, scale, caption):
    """One frame: kernels (F, C, K, K) as a grid of coloured squares, ``caption`` below."""
    f, c, k, _ = weight.shape
    side = k * CELL
    width = max(2 * MARGIN + c * side + (c - 1) * GAP, MIN_WIDTH)  # room for the caption
    height = 2 * MARGIN + f * side + (f - 1) * GAP + CAPTION
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    colours = diverging(weight / scale)
    for i in range(f):
        for j in range(c):
            block = np.repeat(np.repeat(colours[i, j], CELL, axis=0), CELL, axis=1)
            y, x = MARGIN + i * (side + GAP), MARGIN + j * (side + GAP)
            canvas[y : y + side, x : x + side] = block
    image = Image.fromarray(canvas)
    ImageDraw.Draw(image).text((MARGIN, height - CAPTION - 2), caption, fill=(29, 35, 48))
    return image


def save_filters_gif(frames, path):
    """Write ``frames`` ([{"step", "epoch", "weight"}], as ``RunView.filters_over_run``)
    as an animated GIF at ``path``, atomically; the scale is the run's largest |weight|."""
    scale = max(float(np.abs(f["weight"]).max()) for f in frames) or 1.0
    images = [
        filter_frame(f["weight"], scale, f"step {f['step']:,}  epoch {f['epoch']:.2f}")
        for f in frames
    ]
    durations = [FRAME_MS] * (len(images) - 1) + [LAST_MS]
    with atomic_write(path) as out:
        images[0].save(
            out,
            format="GIF",
            save_all=True,
            append_images=images[1:],
            duration=durations,
            loop=0,
            optimize=False,
        )
    return path
