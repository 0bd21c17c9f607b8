"""How well the digit preparation copes with noisy photos: real MNIST test digits drawn as
dark ink on grainy white paper with a few dark specks, prepared by ``numpycnn.imageprep``
and read by a model; prints the share read right.

    python scripts/noisy_digits.py PARAMS [--mnist DIR] [--count 200] [--grain 2] [--seed 0]

Each digit is upscaled 4x (bicubic) to 112x112, inverted and pasted at a random place on a
160x140 page of paper level 235 with Gaussian grain of ``--grain`` grey levels, then 0-3
specks (dark discs of radius 1-2 pixels) land at random places. The same seed gives the
same pages. ``photo`` is the function the tests use too.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parent.parent
PAGE = (160, 140)  # width, height


def photo(digit, rng, grain=2.0, specks=None):
    """MNIST ``digit`` (28x28 uint8, light on dark) as a grey photo of a dark digit on paper
    with ``grain`` and ``specks`` (a count; 0-3 at random when None)."""
    ink = np.asarray(
        Image.fromarray(digit).resize((112, 112), Image.Resampling.BICUBIC), dtype=float
    )
    page = np.full(PAGE[::-1], 235.0) + rng.normal(0, grain, PAGE[::-1])
    top = int(rng.integers(0, PAGE[1] - 112 + 1))
    left = int(rng.integers(0, PAGE[0] - 112 + 1))
    region = page[top : top + 112, left : left + 112]
    alpha = np.clip(ink / 255, 0, 1)
    page[top : top + 112, left : left + 112] = region * (1 - alpha) + 40 * alpha
    image = Image.fromarray(np.clip(np.rint(page), 0, 255).astype(np.uint8))
    pen = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4)) if specks is None else specks):
        x, y = rng.uniform(0, PAGE[0]), rng.uniform(0, PAGE[1])
        r = rng.uniform(1, 2)
        pen.ellipse([x - r, y - r, x + r, y + r], fill=int(rng.integers(40, 120)))
    return image


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("params", help="model file (or the 2018 reference pickle)")
    parser.add_argument("--mnist", type=Path, default=ROOT.parent / "shared" / "mnist")
    parser.add_argument("--count", type=int, default=200, help="first N test digits")
    parser.add_argument("--grain", type=float, default=2.0, help="grain, grey levels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import numpycnn
    from numpycnn import data
    from numpycnn.imageprep import prepare_digit

    if not Path(args.params).is_file():
        parser.error(f"{args.params}: model file not found")
    if not (args.mnist / data.TEST_IMAGES).is_file():
        parser.error(f"{args.mnist}: no {data.TEST_IMAGES} there (use --mnist DIR)")
    images = data.read_idx(args.mnist / data.TEST_IMAGES)[: args.count]
    labels = data.read_idx(args.mnist / data.TEST_LABELS)[: args.count]
    rng = np.random.default_rng(args.seed)
    prepared = np.stack([prepare_digit(photo(d, rng, args.grain)) for d in images])
    model = numpycnn.load(args.params)
    clean = (model.predict(images) == labels).mean()
    right = (model.predict(prepared) == labels).mean()
    print(f"{len(images)} digits: {right:.1%} read right as noisy photos ({clean:.1%} as MNIST)")


if __name__ == "__main__":
    main()
