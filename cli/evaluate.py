"""``numpycnn eval``: test accuracy, per-class precision and recall, confusion matrix."""

import json
from pathlib import Path

import click

from numpycnn.data import Normalization
from numpycnn.datasource import model_test_set
from numpycnn.training import evaluate

from .options import (
    DEFAULT_MODEL,
    data_options,
    decode_progress,
    download_progress,
    load_model_file,
    quiet_option,
    remove_stale_segments,
    reports_errors,
    threads_option,
    warn,
    workers_option,
)


def format_report(report):
    """The human-readable report: accuracy, a per-class table, the confusion matrix (rows
    and columns numbered, with a key of the class names when they are not the numbers)."""
    names = report.get("class_names") or list(report["per_class"])
    numbered = names == [str(k) for k in range(len(names))]
    label = "digit" if numbered else "class"  # MNIST's report reads as it always has
    width_name = max(5, *(len(n) for n in names))
    lines = [
        f"test accuracy {100 * report['accuracy']:.2f}% ({report['correct']}/{report['total']})",
        "",
        f"{label:>{width_name}}  precision  recall  support",
    ]
    for name, row in report["per_class"].items():
        precision = "-" if row["precision"] is None else f"{row['precision']:.4f}"
        recall = "-" if row["recall"] is None else f"{row['recall']:.4f}"
        lines.append(f"{name:>{width_name}}  {precision:>9}  {recall:>6}  {row['support']:>7}")
    lines += ["", f"confusion matrix (rows: true {label}, columns: predicted)"]
    width = max(len(str(v)) for row in report["confusion"] for v in row) + 1
    width = max(width, len(str(len(names) - 1)) + 1)
    lines.append("     " + "".join(f"{k:>{width}}" for k in range(len(report["confusion"]))))
    for k, row in enumerate(report["confusion"]):
        key = "" if numbered else f"  {names[k]}"
        lines.append(f"{k:>4} " + "".join(f"{v:>{width}}" for v in row) + key)
    return "\n".join(lines)


@click.command("eval")
@click.argument("params", default=DEFAULT_MODEL, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--data",
    "data_choice",
    metavar="NAME|DIR",
    help="Evaluate on this data's test split instead: a data set's name (mnist, "
    "fashion-mnist, kmnist, cifar10) or a folder of class folders. Default: the data the "
    "model was trained on.",
)
@data_options
@threads_option
@workers_option
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead.")
@click.option(
    "--plot",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE.png",
    help="Also draw the confusion matrix, per-class recall and the training cost curve "
    "(needs matplotlib: pip install 'numpycnn[plot]').",
)
@reports_errors
def evaluate_command(
    params, data_choice, data_dir, mirrors, threads, workers, quiet, as_json, plot
):
    """Evaluate a saved model on the test images of the data it was trained on.

    PARAMS is a model file written by `numpycnn train` (default default.pkl: what `train`
    writes with no --config) or a parameter pickle of the 2018 reference implementation
    (MNIST's 10,000 test images). The images are normalised with the statistics stored
    with the model, which come from its training images. A folder whose files changed
    since the model was trained is said on stderr (its test split may then differ).
    """
    if plot is not None:
        from .plots import require_matplotlib

        require_matplotlib()
    remove_stale_segments()
    saved = load_model_file(params)
    ds, note = model_test_set(
        saved,
        data_choice,
        data_dir,
        mirrors,
        progress=download_progress(quiet),
        decode_progress=decode_progress(quiet),
        on_warning=warn,
    )
    if note:
        warn(note)
    norm = Normalization.from_dict(saved.normalization)
    images = norm.norm(ds.test_images)
    report = evaluate(
        saved.model,
        images,
        ds.test_labels,
        classes=len(saved.class_names),
        threads=threads,
        workers=workers,
        class_names=saved.class_names,
    )
    if plot is not None:
        from .plots import plot_report

        plot_report(report, saved.cost, plot)
    if as_json:
        click.echo(json.dumps({"params": str(params), "data": ds.source, **report}))
    else:
        click.echo(format_report(report))
        if plot is not None:
            click.echo(f"\nplot saved to {plot}")
