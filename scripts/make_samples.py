"""Draw the sample digits in samples/: 0-9 once each, as a phone photo of a digit written
on paper might look, for `numpycnn predict samples/` to try on a fresh install.

They are drawn here, not taken from MNIST: each digit is a few pen strokes (lines and arcs
on a unit square) that are slanted, rotated and jittered at random, drawn with a pen of
random width in dark ink on off-white paper with uneven light and grain, at one of a few
sizes and shapes. The same seed gives the same images.

    python scripts/make_samples.py                 # writes samples/0.png ... samples/9.png
    python scripts/make_samples.py --seed 7 --out more-samples
    python scripts/make_samples.py --grain 2 --out grainy   # rougher paper, same strokes
"""

import argparse
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
SUPERSAMPLE = 4  # strokes are drawn this many times larger, then scaled down: smooth edges
#: (width, height) of the images, in turn: small and large, square and not
SIZES = [(96, 96), (140, 120), (160, 160), (112, 144), (72, 72)]


def arc(cx, cy, rx, ry, start, stop, n=40):
    """Points on an ellipse from angle ``start`` to ``stop`` (degrees; 0 is to the right,
    90 is down, as y grows downwards in images)."""
    t = np.radians(np.linspace(start, stop, n))
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def line(*points, n=12):
    """A polyline through ``points``, each segment cut into ``n`` pieces."""
    out = []
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        s = np.linspace(0, 1, n, endpoint=False)
        out.append(np.stack([x0 + (x1 - x0) * s, y0 + (y1 - y0) * s], axis=1))
    out.append(np.array([points[-1]], dtype=float))
    return np.concatenate(out)


def strokes(digit):
    """The pen strokes of ``digit``, each an (n, 2) array of points in the unit square."""
    return {
        0: [arc(0.5, 0.5, 0.27, 0.4, -100, 265, 60)],
        1: [line((0.46, 0.2), (0.56, 0.1), (0.52, 0.9))],
        2: [
            np.concatenate(
                [arc(0.5, 0.33, 0.24, 0.22, 200, 370), line((0.73, 0.4), (0.24, 0.88), (0.8, 0.86))]
            )
        ],
        3: [arc(0.48, 0.3, 0.24, 0.19, 210, 450), arc(0.48, 0.67, 0.27, 0.23, 270, 500)],
        4: [line((0.32, 0.1), (0.2, 0.6), (0.8, 0.58)), line((0.64, 0.22), (0.62, 0.92))],
        5: [
            line((0.74, 0.12), (0.34, 0.12), (0.3, 0.45)),
            arc(0.48, 0.64, 0.27, 0.24, 235, 500),
        ],
        6: [
            np.concatenate(
                [line((0.66, 0.1), (0.36, 0.42), n=10), arc(0.5, 0.66, 0.22, 0.24, 200, 560)]
            )
        ],
        7: [line((0.2, 0.14), (0.8, 0.12), (0.42, 0.9))],
        8: [arc(0.5, 0.29, 0.19, 0.19, 90, 450), arc(0.5, 0.69, 0.24, 0.22, -90, 270)],
        9: [
            np.concatenate([arc(0.5, 0.32, 0.21, 0.2, 10, 370), line((0.71, 0.34), (0.6, 0.9))]),
        ],
    }[digit]


def smooth_noise(rng, n, scale):
    """Low-frequency wobble along a stroke: a random walk, smoothed, of size ``scale``."""
    walk = np.cumsum(rng.normal(0, 1, (n, 2)), axis=0)
    kernel = np.hanning(9)
    walk = np.stack([np.convolve(walk[:, i], kernel / kernel.sum(), "same") for i in (0, 1)], 1)
    walk -= walk.mean(axis=0)
    return scale * walk / (np.abs(walk).max() + 1e-9)


def hand(points, rng, slant, angle, squeeze):
    """A stroke as a hand wrote it: slanted, turned, narrowed, wobbly."""
    p = points - 0.5
    p = p + smooth_noise(rng, len(p), 0.02)
    p[:, 0] = p[:, 0] * squeeze - slant * p[:, 1]  # italics: the top leans right
    c, s = math.cos(angle), math.sin(angle)
    p = p @ np.array([[c, s], [-s, c]])
    return p + 0.5


def paper(rng, size, grain=1.2):
    """Off-white paper lit unevenly, with grain of standard deviation ``grain`` grey levels,
    as an RGB uint8 array."""
    w, h = size
    base = np.array([238, 233, 220]) + rng.integers(-12, 6) + rng.integers(-3, 4, 3)
    yy, xx = np.mgrid[0:h, 0:w] / max(w, h)
    direction = rng.uniform(0, 2 * math.pi)
    light = 1 - 0.08 * (np.cos(direction) * xx + np.sin(direction) * yy)
    noise = rng.normal(0, grain, (h, w, 1))
    sheet = base * light[..., None] + noise
    return np.clip(sheet, 0, 255).astype(np.uint8)


def draw(digit, rng, size, grain=1.2):
    """One sample image of ``digit`` at ``size`` (width, height) on paper with ``grain``."""
    w, h = size
    big = (w * SUPERSAMPLE, h * SUPERSAMPLE)
    ink = Image.new("L", big, 0)  # 255 where the pen went
    pen = ImageDraw.Draw(ink)
    box = min(w, h) * SUPERSAMPLE * rng.uniform(0.55, 0.75)  # the digit's height on the page
    offset = np.array(big) / 2 + rng.normal(0, 0.04, 2) * np.array(big) - box / 2
    slant = rng.uniform(0.0, 0.3)
    angle = math.radians(rng.uniform(-8, 8))
    squeeze = rng.uniform(0.8, 1.05)
    width = max(2, round(box * rng.uniform(0.07, 0.12)))
    for stroke in strokes(digit):
        p = hand(stroke, rng, slant, angle, squeeze) * box + offset
        pen.line([tuple(q) for q in p], fill=255, width=width, joint="curve")
        for end in (p[0], p[-1]):  # round pen ends
            r = width / 2
            pen.ellipse([end[0] - r, end[1] - r, end[0] + r, end[1] + r], fill=255)
    ink = ink.filter(ImageFilter.GaussianBlur(SUPERSAMPLE * 0.6)).resize(size, Image.LANCZOS)
    alpha = np.asarray(ink, dtype=float)[..., None] / 255 * rng.uniform(0.8, 0.95)
    colour = np.array([35, 38, 70]) + rng.integers(-10, 10, 3)  # blue-black ballpoint
    sheet = paper(rng, size, grain).astype(float)
    photo = sheet * (1 - alpha) + colour * alpha
    return Image.fromarray(np.clip(photo, 0, 255).astype(np.uint8), "RGB")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "samples", help="folder to write")
    parser.add_argument("--seed", type=int, default=2026, help="seed of the random hand")
    parser.add_argument(
        "--grain",
        type=float,
        default=1.2,
        help="paper grain, standard deviation in grey levels (the shipped samples: 1.2)",
    )
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    for digit in range(10):
        image = draw(digit, rng, SIZES[digit % len(SIZES)], args.grain)
        path = args.out / f"{digit}.png"
        image.save(path, optimize=True)
        print(f"{path.name}  {image.width}x{image.height}")


if __name__ == "__main__":
    main()
