"""One image file to a (C, H, W) uint8 array of a given shape: the folder source's decoder.

Steps, in order:

1. Open the file (PNG, JPEG, BMP or GIF, told by its content, not its name). Images of
   more than ``imageprep.MAX_PIXELS`` pixels are refused from their header, before any
   decoding, as ``predict`` refuses them. A GIF gives its first frame. The EXIF orientation
   (phone photos) is applied.
2. Colour: 16-bit grey is scaled to 0-255 (divided by 257, rounded), not clipped.
   Transparency (RGBA, grey with alpha, a palette or a colour key with a transparent
   entry) is composited on white, as a browser shows it on a white page. Then the image
   becomes grey ("L", ITU-R 601-2 luma) for C = 1 or RGB for C = 3 (grey channels
   repeated).
3. Size: an image already H x W is kept pixel for pixel. Otherwise, ``fit`` (the default)
   scales it to fit H x W with its aspect ratio kept, centred, and fills the margins with
   the image's border colour: per channel the median of its outermost ring of pixels, the
   background of most photos and scans, so that the padding looks like more background
   rather than a frame. ``stretch`` scales to H x W regardless of aspect. Scaling uses
   Pillow's Lanczos filter, whose kernel Pillow widens by the reduction factor when
   shrinking: an antialiased reduction, where a point sampler would alias fine detail
   (thin strokes, textures) into noise. Large JPEGs are first decoded at a reduced scale
   (Pillow's draft mode) that still leaves at least twice the final size, as Pillow's own
   ``thumbnail`` does: the Lanczos step then sees enough pixels, and a 12-megapixel photo
   decodes to 32x32 in 9 ms instead of 163 ms (measured here; the results differ by 0.3
   grey levels on average).

Failures are ``imageprep.ImageError``, whose message names the file and the reason.
"""

import math
import os

import numpy as np
from PIL import Image, ImageOps

from ..imageprep import MAX_PIXELS, ImageError, check_image, open_image

FORMATS = ("PNG", "JPEG", "BMP", "GIF")
#: File name endings the folder source takes as images (any case).
EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
RESIZES = ("fit", "stretch")
RESAMPLE = Image.Resampling.LANCZOS
#: Least ratio of a JPEG's draft-decoded size to its final size (Pillow's reducing_gap).
DRAFT_GAP = 2.0

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
WHITE = (255, 255, 255, 255)

__all__ = ["EXTENSIONS", "FORMATS", "RESIZES", "ImageError", "decode", "load_image"]


def load_image(path, shape, resize="fit"):
    """The image file at ``path`` as a uint8 array ``shape`` (C, H, W), C = 1 or 3.

    Raises ``ImageError`` naming the file when it is missing, not an image in one of
    ``FORMATS``, too large, corrupted or truncated, or in a mode with no colour conversion.
    """
    name = os.fspath(path)
    with open_image(path, name, MAX_PIXELS) as image:
        return decode(image, shape, resize, name)


def decode(image, shape, resize="fit", name="<image>"):
    """An open PIL image as a uint8 array ``shape`` (C, H, W) (see the module's steps)."""
    c, h, w = shape
    check_image(image, name, FORMATS, MAX_PIXELS)
    if image.width == 0 or image.height == 0:
        raise ImageError(f"{name}: empty image ({image.width}x{image.height} pixels)")
    if image.format == "JPEG":
        # Any orientation: the largest scale either side may need, times the gap.
        scale = max(h, w) / min(image.width, image.height) * DRAFT_GAP
        if scale < 0.5:
            image.draft(None, (math.ceil(image.width * scale), math.ceil(image.height * scale)))
    image.load()  # decode now: damaged data fails here
    image = ImageOps.exif_transpose(image)
    image = _colour(image, c)
    if image.size != (w, h):
        image = _resize(image, (w, h), resize)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if c == 1 else np.ascontiguousarray(array.transpose(2, 0, 1))


def _colour(image, channels):
    """``image`` as "L" (channels 1) or "RGB" (channels 3), 8 bits, transparency on white."""
    if image.mode in _SIXTEEN_BIT or image.mode in ("I", "F"):
        values = np.asarray(image, dtype=np.float64)
        if image.mode in _SIXTEEN_BIT or values.max() > 255:  # 32-bit modes: taken as 16-bit
            values = values / 257
        image = Image.fromarray(np.rint(np.clip(values, 0, 255)).astype(np.uint8))
    elif image.has_transparency_data:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, WHITE), rgba)
    return image.convert("L" if channels == 1 else "RGB")


def _border_colour(image):
    """Per channel, the median of the outermost ring of pixels (an int, or a tuple).

    Read from four one-pixel strips, so a large image is not copied whole."""
    w, h = image.size
    bands = len(image.getbands())
    if min(w, h) <= 2:
        boxes = [(0, 0, w, h)]
    else:
        boxes = [(0, 0, w, 1), (0, h - 1, w, h), (0, 1, 1, h - 1), (w - 1, 1, w, h - 1)]
    ring = np.concatenate([np.asarray(image.crop(box)).reshape(-1, bands) for box in boxes])
    median = np.rint(np.median(ring, axis=0)).astype(int)
    return int(median[0]) if bands == 1 else tuple(int(v) for v in median)


def _resize(image, size, resize):
    w, h = size
    if resize == "stretch":
        return image.resize(size, RESAMPLE)
    scale = min(w / image.width, h / image.height)
    fitted = (
        min(w, max(1, round(image.width * scale))),
        min(h, max(1, round(image.height * scale))),
    )
    if fitted == size:
        return image.resize(size, RESAMPLE)
    canvas = Image.new(image.mode, size, _border_colour(image))
    canvas.paste(image.resize(fitted, RESAMPLE), ((w - fitted[0]) // 2, (h - fitted[1]) // 2))
    return canvas
