"""``numpycnn predict``: classify the user's own digit images."""

import json
from pathlib import Path

import click
import numpy as np

from numpycnn.data import Normalization
from numpycnn.imageprep import ImageError, list_images, load_digit
from numpycnn.parallel import predict_proba

from .options import (
    DEFAULT_MODEL,
    load_model_file,
    remove_stale_segments,
    reports_errors,
    workers_option,
)


def _digits(images):
    """(paths, digits) of the named files and of every file in the named directories.

    A named file that is not a digit image is an error; an entry of a directory that is
    not one is skipped with a warning on stderr, one line each, in the directory's sorted
    order (a folder often holds notes or thumbnails too). Directories are read as
    ``imageprep.list_images`` lists them: not recursively, their subfolders, hidden
    entries, broken links and special files reported and skipped.
    """
    paths, digits = [], []
    for path in images:
        if not path.is_dir():
            paths.append(path)
            digits.append(load_digit(path))
            continue
        listed, skipped = list_images(path)
        reasons = dict(skipped)
        kept = 0
        for member in sorted([*listed, *reasons]):
            if member in reasons:
                shown = f"{member}/" if member.is_dir() else str(member)
                click.echo(f"Warning: skipped {shown}: {reasons[member]}", err=True)
                continue
            try:
                digits.append(load_digit(member))
            except ImageError as exc:
                click.echo(f"Warning: skipped {exc}", err=True)
                continue
            paths.append(member)
            kept += 1
        if not kept:
            raise ImageError(f"{path}: no digit images in this directory")
    return paths, digits


@click.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--params",
    default=DEFAULT_MODEL,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Model file from `numpycnn train` (or a 2018 reference pickle).",
)
@click.option(
    "--top-k",
    "top_k",
    default=1,
    show_default=True,
    type=click.IntRange(1, 10),
    help="Also show the K most likely digits.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {file, digit, probability, top_k}.",
)
@workers_option
@reports_errors
def predict(images, params, top_k, as_json, workers):
    """Classify digit images (PNG, JPEG or BMP; any size, colour or transparency).

    IMAGES are files, or directories whose images are all classified, in sorted order
    (entries that are not digit images, subfolders, hidden files and broken links are
    reported on stderr, one line each, and skipped).
    Images above 40 megapixels are refused.

    Each image is prepared the way MNIST was made: light digit on dark, cropped to its
    ink, fitted to 20x20 and centred on its centre of mass in 28x28; then normalised
    like the model's training images.

    \b
    Examples:
      numpycnn predict --params best.pkl seven.png photo-of-a-three.jpg
      numpycnn predict --params best.pkl my-digits/
    """
    remove_stale_segments()
    saved = load_model_file(params)
    norm = Normalization.from_dict(saved.normalization)
    images, digits = _digits(images)
    probs = predict_proba(saved.model, norm.norm(np.stack(digits)), workers)
    results = []
    for path, p in zip(images, probs):
        ranked = np.argsort(-p, kind="stable")[:top_k]
        results.append(
            {
                "file": str(path),
                "digit": int(ranked[0]),
                "probability": float(p[ranked[0]]),
                "top_k": [{"digit": int(k), "probability": float(p[k])} for k in ranked],
            }
        )
    if as_json:
        click.echo(json.dumps(results))
        return
    for r in results:
        line = f"{r['file']}: {r['digit']} ({100 * r['probability']:.1f}%)"
        if top_k > 1:
            line += "  top: " + ", ".join(
                f"{t['digit']} {100 * t['probability']:.1f}%" for t in r["top_k"]
            )
        click.echo(line)
