"""``numpycnn predict``: classify the user's own images, by class name."""

import json
from pathlib import Path

import click
import numpy as np

from numpycnn.data import Normalization
from numpycnn.imageprep import ImageError, list_images
from numpycnn.modelinput import is_digit_model, load_input
from numpycnn.parallel import predict_proba

from .options import (
    DEFAULT_MODEL,
    load_model_file,
    remove_stale_segments,
    reports_errors,
    workers_option,
)


def _digits(images, load=None, what="digit images"):
    """(paths, arrays) of the named files and of every file in the named directories, each
    read by ``load(path)`` (default: as an MNIST digit).

    A named file that is not an image ``load`` reads is an error; an entry of a directory that is
    not one is skipped with a warning on stderr, one line each, in the directory's sorted
    order (a folder often holds notes or thumbnails too). Directories are read as
    ``imageprep.list_images`` lists them: not recursively, their subfolders, hidden
    entries, broken links and special files reported and skipped.
    """
    load = load or (lambda path: load_input(path, None, (1, 28, 28)))
    paths, digits = [], []
    for path in images:
        if not path.is_dir():
            paths.append(path)
            digits.append(load(path))
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
                digits.append(load(member))
            except ImageError as exc:
                click.echo(f"Warning: skipped {exc}", err=True)
                continue
            paths.append(member)
            kept += 1
        if not kept:
            raise ImageError(f"{path}: no {what} in this directory")
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
    type=click.IntRange(min=1),
    help="Also show the K most likely classes (at most the model's class count).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print a JSON list of {file, class, index, probability, top_k} (and digit, the "
    "index, for an MNIST model, as before).",
)
@workers_option
@reports_errors
def predict(images, params, top_k, as_json, workers):
    """Classify images (PNG, JPEG, BMP or GIF; any size, colour or transparency) by the
    model's class names.

    IMAGES are files, or directories whose images are all classified, in sorted order
    (entries that are not images, subfolders, hidden files and broken links are
    reported on stderr, one line each, and skipped).
    Images above 40 megapixels are refused.

    Each image is prepared the way the model's training data was. For an MNIST model:
    light digit on dark, cropped to its ink, fitted to 20x20 and centred on its centre
    of mass in 28x28. For other data: decoded to the model's input (grey or RGB, its
    height and width) with the folder's resize (fitted and padded with the border colour,
    or stretched). Then normalised like the model's training images.

    \b
    Examples:
      numpycnn predict --params best.pkl seven.png photo-of-a-three.jpg
      numpycnn predict --params best.pkl my-digits/
      numpycnn predict --params pets.pkl --top-k 2 cat.jpg
    """
    remove_stale_segments()
    saved = load_model_file(params)
    norm = Normalization.from_dict(saved.normalization)
    source, shape, names = saved.data_source, saved.model.input_shape, saved.class_names
    if top_k > len(names):
        raise click.ClickException(f"--top-k {top_k}: the model has {len(names)} classes")
    digits = is_digit_model(source)
    images, arrays = _digits(
        images,
        lambda path: load_input(path, source, shape),
        "digit images" if digits else "images",
    )
    probs = predict_proba(saved.model, norm.norm(np.stack(arrays)), workers)
    results = []
    for path, p in zip(images, probs):
        ranked = np.argsort(-p, kind="stable")[:top_k]
        best = int(ranked[0])
        result = {"file": str(path), "class": names[best], "index": best}
        if digits:
            result["digit"] = best
        result["probability"] = float(p[best])
        result["top_k"] = [
            {"class": names[k], "index": int(k), **({"digit": int(k)} if digits else {}),
             "probability": float(p[k])}
            for k in ranked
        ]  # fmt: skip
        results.append(result)
    if as_json:
        click.echo(json.dumps(results))
        return
    for r in results:
        line = f"{r['file']}: {r['class']} ({100 * r['probability']:.1f}%)"
        if top_k > 1:
            line += "  top: " + ", ".join(
                f"{t['class']} {100 * t['probability']:.1f}%" for t in r["top_k"]
            )
        click.echo(line)
