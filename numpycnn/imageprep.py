"""Turn a user's own picture of a digit into a 28x28 MNIST-like image.

The networks here only ever saw MNIST, so a digit photographed or drawn by a user must be
brought into MNIST's form before it is classified: one light digit on a black field, grey
levels 0-255, the digit scaled to fit a 20x20 box (keeping its aspect ratio, anti-aliased)
and placed in the 28x28 field so that its centre of mass sits at the field's centre, as
LeCun, Cortes and Burges made the database. The steps, in order:

1. Open the file (PNG, JPEG or BMP; any size or mode) and apply its EXIF orientation.
2. Flatten to one grey channel. Transparency counts as background (see ``_composite``);
   16-bit grey is scaled to 0-255 rather than clipped.
3. Polarity: the background level is the median of the outermost ring of pixels; the ink
   is whichever side (darker or lighter) departs further from it. Dark ink is inverted so
   that the digit is light on dark. For the usual white paper or black screen this is
   "invert when the border is light"; it also copes with grey or coloured paper.
4. Levels: the background becomes 0 and the brightest ink 1, so faint pencil, a grey page
   or a 16-bit scan all reach MNIST's full range. The background is the border's median,
   or, when the light is uneven (one side of the page darker), a plane fitted to the
   border's paper pixels (``_lighting``). Too little contrast (fewer than
   ``MIN_CONTRAST`` grey levels) means there is no digit: ``ImageError``.
5. The digit: the pixels above ``INK_THRESHOLD``, in connected pieces; pieces that are
   small and far from the rest (a speck of dust, paper grain, JPEG noise) or that run
   along the image's edge (a shadow, the page's edge) are dropped (``_digit_mask``). A
   second stroke, a serif or a dotted stroke stays: it is either a fair share of the ink
   or near the rest of the digit.
6. Crop to the digit's bounding box; scale it to fit 20x20 with Lanczos resampling; shift
   it so that its centre of mass lands on ``CENTRE``.

Why these steps, measured on the first 200 MNIST test digits drawn as dark ink on white
paper with grain of sigma 2 and 0-3 dark specks (``scripts/noisy_digits.py``), read by the
2018 reference parameters: cropping to every pixel above the threshold read 93.0% right
(one speck stretches the box and the digit shrinks into a corner); dropping the pieces as
above, 99.0% (the same digits as MNIST: 99.5%); on the first 1,000, 91.2% and 98.2%
(as MNIST: 98.3%). A threshold chosen from the histogram
(Otsu) instead read 95.0% and changed the box of every clean image, since it cuts into the
anti-aliased edges MNIST's own crop keeps; a despeckling filter (median or minimum) would
likewise thin every clean stroke. The pieces and the lighting plane change nothing when
the ink is one piece on an evenly lit page: the first 1,000 MNIST test digits, as they are
or upscaled and inverted, come out bit-identical to the plain crop. The samples in
``samples/`` are lit unevenly, so the plane shifts their levels a little (box within a
pixel of the plain crop's); drawn with grain of sigma 2, the plain crop read the "2" as a
3, and the plane or the pieces alone each set it right.

Images of more than ``MAX_PIXELS`` pixels are refused from their header, before anything
is decoded: a small file can declare a huge image (a decompression bomb).

The library never prints; every failure is an ``ImageError`` naming the file and reason.
"""

import contextlib
import io
import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = [
    "BOX",
    "CENTRE",
    "FORMATS",
    "MAX_PIXELS",
    "SIZE",
    "ImageError",
    "check_image",
    "decode_digit",
    "list_images",
    "load_digit",
    "open_image",
    "prepare_digit",
]

#: Formats ``load_digit`` accepts (Pillow's format names).
FORMATS = ("PNG", "JPEG", "BMP")
#: Side of the output image and of the box the digit is scaled to fit, as in MNIST.
SIZE, BOX = 28, 20
#: Where the centre of mass goes, in pixel-index coordinates (row, column both). Measured on
#: the 10,000 MNIST test digits: mean centre of mass (13.99, 14.01), standard deviation 0.29,
#: so LeCun's "centre of the field" is index 14, not the geometric 13.5.
CENTRE = 14.0
#: Fraction of the brightest ink above which a pixel counts for the bounding box: low
#: enough to keep anti-aliased edges, high enough to ignore JPEG ringing and paper grain.
INK_THRESHOLD = 0.1
#: Paper pixels of the border within this many grey levels of the fitted lighting plane
#: count for its fit (see ``_lighting``); grain and JPEG noise stay well inside it.
LIGHT_TOLERANCE = 12
#: Lighting that departs less than this from the border's median, in grey levels, is taken
#: as even (the median is used as it is).
LIGHT_MIN = 2
#: Side of the grid the ink's connected pieces are found on (see ``_digit_mask``).
GRID = 256
#: A piece of ink is part of the digit when it holds this share of the largest piece's ink.
KEEP_SHARE = 0.1
#: ... or when it is within this share of the large pieces' box size from a digit's piece
NEAR = 0.15
#: ... and holds at least this share of the largest piece's ink (more than a grain's).
NEAR_SHARE = 0.005
#: A piece touching more than this share of one side of the image is a shadow or page edge.
EDGE_RUN = 0.5
#: Most rounds of dropping pieces and setting the levels again (see ``_drop_noise``).
DROP_ROUNDS = 3
#: Least difference, in grey levels out of 255, between ink and background for a digit.
MIN_CONTRAST = 16
#: Resampling filter for the scaling to the 20x20 box (antialiased when shrinking).
RESAMPLE = Image.Resampling.LANCZOS
#: Largest image accepted, in pixels: 40 megapixels, more than a phone camera's full-size
#: photo, and at most about 200 MB of working arrays. Checked from the header, so a file
#: that claims more is refused before it is decoded.
MAX_PIXELS = 40_000_000

_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")


class ImageError(ValueError):
    """A digit image that cannot be read or holds no digit; the message names the file."""


def load_digit(path):
    """The digit in the PNG, JPEG or BMP file at ``path`` as a (28, 28) uint8 MNIST image.

    Light digit on black, 0-255, fitted to 20x20 and centred on its centre of mass.
    Raises ``ImageError`` when the file is missing, unreadable, not an image in one of
    ``FORMATS``, larger than ``MAX_PIXELS``, corrupted or truncated, or shows no ink.
    """
    return _load(path, os.fspath(path))


def decode_digit(data, name="<image>"):
    """The digit in an image file's bytes ``data`` (an upload, say); as ``load_digit``,
    with ``name`` standing for the file in error messages."""
    return _load(io.BytesIO(data), name)


# Pillow warns (on stderr, through the warnings module) when it opens an image above its
# own limit; the warning is caught here and our clearer error raised instead. Filters are
# process-wide, so the opens that change them take turns.
_OPEN_LOCK = threading.Lock()


def _open(source):
    with _OPEN_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(source)


@contextlib.contextmanager
def open_image(source, name, max_pixels=None):
    """The PIL image in ``source`` (a path or a binary file), open for a ``with`` block.

    Whatever fails in the block, opening or decoding, becomes an ``ImageError`` naming
    ``name`` with the reason: file not found, a directory, permission denied, not an image,
    too large (Pillow's own bomb limit), corrupted or truncated. An ``ImageError`` raised
    in the block passes as it is. ``max_pixels`` (default ``MAX_PIXELS``) is the caller's
    limit, for the message; images above it are the caller's to refuse before decoding
    (``check_image``).
    """
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        with _open(source) as image:
            yield image
    except ImageError:
        raise
    except FileNotFoundError:
        raise ImageError(f"{name}: file not found") from None
    except IsADirectoryError:
        raise ImageError(f"{name}: is a directory, not an image file") from None
    except PermissionError:
        raise ImageError(f"{name}: permission denied") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (or a format Pillow cannot read)") from None
    except Image.DecompressionBombError:
        # Pillow refuses outright above twice its own limit, before we see the size.
        raise ImageError(
            f"{name}: image too large (over {2 * Image.MAX_IMAGE_PIXELS:,} pixels; "
            f"the limit is {max_pixels:,})"
        ) from None
    except (OSError, SyntaxError, EOFError, ValueError) as exc:
        # Pillow reports damaged data as OSError ("image file is truncated"), SyntaxError
        # ("broken PNG file") or EOFError, depending on the format and where it breaks;
        # ValueError comes from modes that have no conversion.
        raise ImageError(f"{name}: corrupted or truncated image ({exc})") from None


def check_image(image, name, formats=FORMATS, max_pixels=None):
    """Raise ``ImageError`` naming ``name`` unless the open (not yet decoded) ``image`` is in
    one of ``formats`` and has at most ``max_pixels`` (default ``MAX_PIXELS``) pixels, both
    read from its header."""
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if image.format not in formats:
        raise ImageError(
            f"{name}: unsupported image format {image.format} "
            f"(use {', '.join(formats[:-1])} or {formats[-1]})"
        )
    if image.width * image.height > max_pixels:
        raise ImageError(
            f"{name}: image too large ({image.width}x{image.height} pixels; "
            f"the limit is {max_pixels:,})"
        )


def _load(source, name):
    with open_image(source, name) as image:
        check_image(image, name)
        image.load()  # decode now: truncated or corrupted data fails here, not later
        return _prepare(image, name)


def list_images(directory):
    """(paths, skipped): the entries of ``directory`` to read as images, and the others as
    (path, reason) pairs, both in sorted order; not recursive.

    Regular files, and links to them, are listed whatever their name (``load_digit`` tells
    images by content). Skipped, with the reason: hidden entries (a leading dot), folders
    and links to folders (not searched), broken links and special files (a FIFO would
    block a reader). Raises OSError when the directory cannot be listed.
    """
    paths, skipped = [], []
    for path in sorted(Path(directory).iterdir()):
        reason = _skip_reason(path)
        if reason is None:
            paths.append(path)
        else:
            skipped.append((path, reason))
    return paths, skipped


def _skip_reason(path):
    """Why a directory entry is not read as an image, or None for a regular (or linked)
    file."""
    folder = path.is_dir()
    if path.name.startswith("."):
        return "a hidden folder" if folder else "a hidden file"
    if folder:
        return "a folder (folders in a folder are not searched)"
    if path.is_symlink() and not path.exists():
        return f"a broken link (to {path.readlink()})"
    if not path.is_file():
        return "not a regular file"
    return None


def prepare_digit(image):
    """The digit in an already-open PIL image as a (28, 28) uint8 MNIST image.

    The same processing as ``load_digit``, for images held in memory; raises
    ``ImageError`` (naming ``image.filename`` when it has one) if it holds no digit.
    """
    return _prepare(image, getattr(image, "filename", "") or "<image>")


def _prepare(image, name):
    if image.width == 0 or image.height == 0:
        raise ImageError(f"{name}: empty image ({image.width}x{image.height} pixels)")
    image = ImageOps.exif_transpose(image)  # phone photos store rotation in EXIF
    ink = _ink(_gray(image, name), name)
    ink = _drop_noise(ink)
    rows, cols = np.nonzero(ink > INK_THRESHOLD)
    crop = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return _centre(_fit(crop))


def _gray(image, name):
    """One float32 grey channel, 0-255, with any transparency composited away."""
    if image.mode in _SIXTEEN_BIT:
        return np.asarray(image, dtype=np.float32) / 257  # 65535 -> 255
    if image.mode in ("I", "F"):
        # 32-bit modes carry no bit depth: values beyond 255 are taken as 16-bit data.
        gray = np.asarray(image, dtype=np.float32)
        return np.clip(gray / 257 if gray.max() > 255 else gray, 0, 255)
    try:
        if image.has_transparency_data:
            image = _composite(image.convert("RGBA"))
        return np.asarray(image.convert("L"), dtype=np.float32)
    except ValueError as exc:  # modes without a conversion to RGB, such as LAB
        raise ImageError(f"{name}: unsupported image mode {image.mode} ({exc})") from None


def _composite(rgba):
    """``rgba`` flattened onto a backdrop so that transparent pixels read as background.

    When the border is mostly transparent, the transparent canvas is the background and the
    opaque pixels are the digit, whatever their colour: the backdrop is white under a dark
    digit and black under a light one, so the digit stays visible. When the border is
    opaque, the background is the border's colour and transparent holes take that colour.
    """
    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
    if alpha.min() == 255:
        return rgba.convert("RGB")
    lum = np.asarray(rgba.convert("L"), dtype=np.float32)  # ignores alpha
    if np.median(_border(alpha)) < 128:
        opaque = alpha.sum()
        dark_ink = opaque > 0 and (lum * alpha).sum() / opaque < 128  # alpha-weighted mean
        level = 255 if dark_ink else 0
    else:
        level = int(np.median(_border(lum)[_border(alpha) >= 128]))
    backdrop = Image.new("RGBA", rgba.size, (level, level, level, 255))
    return Image.alpha_composite(backdrop, rgba).convert("RGB")


def _border(a):
    """The outermost ring of pixels of a 2-D array, flattened."""
    if min(a.shape) <= 2:
        return a.ravel()
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]])


def _ink(gray, name):
    """Ink strength in [0, 1]: light-on-dark, background 0, brightest ink 1."""
    background = float(np.median(_border(gray)))
    if background - gray.min() > gray.max() - background:
        # The ink departs further below the background than above it: dark ink, invert.
        gray, background = 255 - gray, 255 - background
    ink = np.clip(gray - _lighting(gray, background), 0, None)
    peak = float(ink.max())
    if peak < MIN_CONTRAST:
        raise ImageError(
            f"{name}: no ink found (blank image: contrast {peak:.0f} of 255 grey levels)"
        )
    return ink / peak


def _fit(crop):
    """``crop`` scaled to fit the BOX x BOX square, aspect ratio kept, peak back to 1."""
    h, w = crop.shape
    scale = BOX / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    scaled = Image.fromarray(crop.astype(np.float32)).resize(size, RESAMPLE)
    # Lanczos over- and undershoots near edges; strokes thinner than a pixel after a large
    # reduction come out grey, so the brightest ink is set back to full strength.
    digit = np.clip(np.asarray(scaled), 0, None)
    return digit / digit.max() if digit.max() > 0 else digit


def _centre(digit):
    """``digit`` pasted in the SIZE x SIZE field with its centre of mass at CENTRE.

    Integer shifts keep the resampled pixels as they are; the shift is clipped so that the
    whole digit stays inside the field.
    """
    h, w = digit.shape
    total = digit.sum()
    com_row = (digit.sum(axis=1) * np.arange(h)).sum() / total
    com_col = (digit.sum(axis=0) * np.arange(w)).sum() / total
    top = int(np.clip(np.rint(CENTRE - com_row), 0, SIZE - h))
    left = int(np.clip(np.rint(CENTRE - com_col), 0, SIZE - w))
    field = np.zeros((SIZE, SIZE), dtype=np.float32)
    field[top : top + h, left : left + w] = digit
    return np.rint(np.clip(field, 0, 1) * 255).astype(np.uint8)


def _lighting(gray, background):
    """The background's level at every pixel: a plane fitted to the border's paper pixels.

    Uneven light (a lamp to one side, a phone's shadow across the page) makes one side of
    the page darker than the border's median; the plane follows it. The fit starts from the
    median and keeps only border pixels within ``LIGHT_TOLERANCE`` of the current plane, so
    ink or a shadow touching the border does not tilt it. A uniform border gives the median
    exactly, and so does a plane within ``LIGHT_MIN`` of it.
    """
    h, w = gray.shape
    ring = _border(gray)
    if h <= 2 or w <= 2 or np.all(ring == background):
        return background
    ys, xs = np.arange(h)[:, None] / h, np.arange(w)[None, :] / w
    design = np.stack(
        [
            np.ones(ring.size),
            _border(np.broadcast_to(ys, (h, w))),
            _border(np.broadcast_to(xs, (h, w))),
        ],
        axis=1,
    )
    plane = np.full(ring.size, background)
    coef = np.array([background, 0.0, 0.0])
    for _ in range(3):
        paper = np.abs(ring - plane) <= LIGHT_TOLERANCE
        if paper.sum() < 3:
            return background
        coef = np.linalg.lstsq(design[paper], ring[paper], rcond=None)[0]
        plane = design @ coef
    corners = coef[0] + coef[1] * np.array([0, 0, 1, 1]) + coef[2] * np.array([0, 1, 0, 1])
    if np.abs(corners - background).max() < LIGHT_MIN:  # a plane departs most at a corner
        return background  # even light: the median, as for a clean canvas
    return (coef[0] + coef[1] * ys + coef[2] * xs).astype(np.float32)


def _drop_noise(ink):
    """``ink`` without the pieces ``_digit_mask`` drops, its levels set again to the digit's
    own brightest ink (a speck darker than the pen no longer sets them). The new levels can
    lift a dropped speck's faint edge above the threshold, so this repeats, at most
    ``DROP_ROUNDS`` times, until nothing more is dropped.
    """
    for _ in range(DROP_ROUNDS):
        mask = ink > INK_THRESHOLD
        dropped = mask & ~_digit_mask(mask, ink)
        if not dropped.any():
            break
        ink = np.where(dropped, 0, ink)
        ink = ink / ink.max()
    return ink


def _digit_mask(mask, ink):
    """Which pixels of ``mask`` (ink above the threshold) belong to the digit.

    Connected pieces (8-neighbours) of ink are found on a grid of at most ``GRID`` cells a
    side (a cell holds ink when any of its pixels does, so a thin stroke of a large photo
    stays connected; the labelling is a plain flood fill, cheap at that size). A piece
    counts as the digit when its ink is at least ``KEEP_SHARE`` of the largest piece's (a
    second stroke, a thick dot), or when it lies near a piece of the digit (``NEAR``) and
    holds at least ``NEAR_SHARE`` of the largest's ink (a serif, the dot of an "i"-like 1, a
    fragment of a broken stroke, the dots of a dotted stroke one after the other). Whatever
    is left (specks of dust, paper grain, JPEG noise) is dropped. A piece that runs along
    the image's edge for more than ``EDGE_RUN`` of a side (a shadow, the page's edge) is
    dropped too, unless the other pieces are no more than specks beside it. Nothing
    changes when the ink is one piece.
    """
    h, w = mask.shape
    f = max(1, -(-max(h, w) // GRID))  # pooling factor, ceil
    ph, pw = -(-h // f), -(-w // f)
    pad = ((0, ph * f - h), (0, pw * f - w))
    cells = np.pad(np.where(mask, ink, 0), pad).reshape(ph, f, pw, f).sum(axis=(1, 3))
    labels, count = _label(cells > 0)
    if count <= 1:
        return mask
    mass = np.bincount(labels.ravel(), weights=cells.ravel(), minlength=count + 1)[1:]
    boxes = _boxes(labels, count)  # (count, 4): first row, first column, last row, last column
    # Cells each piece has on each side of the image, as a share of that side.
    run = np.max(
        [
            np.bincount(edge, minlength=count + 1)[1:] / len(edge)
            for edge in (labels[0], labels[-1], labels[:, 0], labels[:, -1])
        ],
        axis=0,
    )
    candidate = run <= EDGE_RUN
    # An edge piece is a shadow only beside a digit: with nothing else of weight (a "7"
    # whose bar runs along the canvas's top edge, and a speck), it is the digit.
    edge_mass = mass[~candidate].max(initial=0)
    if not candidate.any() or mass[candidate].max() < KEEP_SHARE * edge_mass:
        candidate[:] = True
    largest = mass[candidate].max()
    keep = candidate & (mass >= KEEP_SHARE * largest)
    # Smaller pieces join when near a piece already in: the distance is fixed by the large
    # pieces' box and only pieces with more ink than a grain's can join, so that a dotted
    # stroke joins dot by dot but grain cannot chain its way across the page.
    r0, c0 = boxes[keep, 0].min(), boxes[keep, 1].min()
    r1, c1 = boxes[keep, 2].max(), boxes[keep, 3].max()
    near = NEAR * max(r1 - r0 + 1, c1 - c0 + 1)
    eligible = np.flatnonzero(candidate & ~keep & (mass >= NEAR_SHARE * largest))
    while eligible.size:
        a, b = boxes[eligible][:, None], boxes[keep][None]  # each eligible against each kept
        gap = np.max(
            [
                b[..., 0] - a[..., 2],
                a[..., 0] - b[..., 2],
                b[..., 1] - a[..., 3],
                a[..., 1] - b[..., 3],
            ],
            axis=0,
        ).min(axis=1)
        joins = gap <= near
        if not joins.any():
            break
        keep[eligible[joins]] = True
        eligible = eligible[~joins]
    if keep.all():
        return mask
    cell_keep = np.concatenate([[False], keep])[labels]
    return mask & np.repeat(np.repeat(cell_keep, f, axis=0), f, axis=1)[:h, :w]


def _boxes(labels, count):
    """Bounding box (first row, first column, last row, last column) of each label 1..count."""
    rows, cols = np.indices(labels.shape)
    lab = labels.ravel()
    boxes = np.empty((4, count + 1), dtype=np.int64)
    boxes[:2], boxes[2:] = np.iinfo(np.int64).max, -1
    for k, (where, extreme) in enumerate(
        [(rows, np.minimum), (cols, np.minimum), (rows, np.maximum), (cols, np.maximum)]
    ):
        extreme.at(boxes[k], lab, where.ravel())
    return boxes[:, 1:].T


def _label(mask):
    """Connected components (8-neighbours) of a boolean array: (labels, count), 0 = none."""
    labels = np.zeros(mask.shape, dtype=np.int64)
    h, w = mask.shape
    count = 0
    for start in zip(*np.nonzero(mask)):
        if labels[start]:
            continue
        count += 1
        labels[start] = count
        stack = [start]
        while stack:
            r, c = stack.pop()
            for rr in (r - 1, r, r + 1):
                for cc in (c - 1, c, c + 1):
                    if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not labels[rr, cc]:
                        labels[rr, cc] = count
                        stack.append((rr, cc))
    return labels, count
