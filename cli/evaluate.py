"""``numpycnn eval``: test accuracy, per-digit precision and recall, confusion matrix."""

import json
from pathlib import Path

import click

from numpycnn import data
from numpycnn.data import Normalization, resolve_data_dir, resolve_mirrors
from numpycnn.training import evaluate

from .options import (
    DEFAULT_MODEL,
    data_options,
    download_progress,
    load_model_file,
    quiet_option,
    remove_stale_segments,
    reports_errors,
    threads_option,
    workers_option,
)


def load_mnist(data_dir, mirrors=None, progress=None):
    """MNIST's test set alone: eval needs nothing else (the normalisation's statistics come
    from the model file), so the training files are neither read nor downloaded."""
    return data.load_mnist(data_dir, mirrors, progress, sets=("test",))


def format_report(report):
    """The human-readable report: accuracy, a per-digit table, the confusion matrix."""
    lines = [
        f"test accuracy {100 * report['accuracy']:.2f}% ({report['correct']}/{report['total']})",
        "",
        "digit  precision  recall  support",
    ]
    for digit, row in report["per_class"].items():
        precision = "-" if row["precision"] is None else f"{row['precision']:.4f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.4f}"
        lines.append(f"{digit:>5}  {precision:>9}  {recall:>6}  {row['support']:>7}")
    lines += ["", "confusion matrix (rows: true digit, columns: predicted)"]
    width = max(len(str(v)) for row in report["confusion"] for v in row) + 1
    lines.append("     " + "".join(f"{k:>{width}}" for k in range(len(report["confusion"]))))
    for k, row in enumerate(report["confusion"]):
        lines.append(f"{k:>4} " + "".join(f"{v:>{width}}" for v in row))
    return "\n".join(lines)


@click.command("eval")
@click.argument("params", default=DEFAULT_MODEL, type=click.Path(dir_okay=False, path_type=Path))
@data_options
@threads_option
@workers_option
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.png",
    help="Also draw the confusion matrix, per-digit recall and the training cost curve "
    "(needs matplotlib: pip install 'numpycnn[plot]').",
)
@reports_errors
def evaluate_command(params, data_dir, mirrors, threads, workers, quiet, as_json, plot):
    """Evaluate a saved model on the 10,000 MNIST test images.

    PARAMS is a model file written by `numpycnn train` (default default.pkl: what `train`
    writes with no --config) or a parameter pickle of the 2018 reference implementation.
    The images are normalised with the statistics stored with the model, which come from
    its training images.
    """
    if plot is not None:
        from .plots import require_matplotlib

        require_matplotlib()
    remove_stale_segments()
    saved = load_model_file(params)
    cfg_data = (saved.config or {}).get("data", {})
    mnist = load_mnist(
        resolve_data_dir(data_dir, cfg_data.get("data_dir")),
        resolve_mirrors(mirrors, cfg_data.get("mirrors", ())),
        progress=download_progress(quiet),
    )
    norm = Normalization.from_dict(saved.normalization)
    images = norm.norm(mnist.test_images)
    report = evaluate(saved.model, images, mnist.test_labels, threads=threads, workers=workers)
    if plot is not None:
        from .plots import plot_report

        plot_report(report, saved.cost, plot)
    if as_json:
        click.echo(json.dumps({"params": str(params), **report}))
    else:
        click.echo(format_report(report))
        if plot is not None:
            click.echo(f"\nplot saved to {plot}")
