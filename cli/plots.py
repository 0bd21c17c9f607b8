"""The evaluation figure: confusion matrix, per-class recall, training cost curve."""

from pathlib import Path

import click
import numpy as np

from numpycnn.modelfile import atomic_write


def require_matplotlib():
    """Fail early, with the install command, when the optional plot extra is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise click.ClickException(
            "--plot needs matplotlib, which is not installed: pip install 'numpycnn[plot]'"
        ) from None


def plot_report(report, cost, path):
    """Draw the three panels into ``path`` (PNG), written to a temporary file and renamed."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    path = Path(path)
    confusion = np.array(report["confusion"])
    recall = [row["recall"] or 0.0 for row in report["per_class"].values()]
    names = list(report["per_class"])
    ticks = range(len(names))
    fig, (ax_cm, ax_recall, ax_cost) = plt.subplots(1, 3, figsize=(16, 4.8))

    ax_cm.imshow(np.log1p(confusion), cmap="Blues")
    ax_cm.set(
        title="confusion matrix",
        xlabel="predicted",
        ylabel="true class",
        xticks=ticks,
        yticks=ticks,
    )
    ax_cm.set_xticklabels(names, rotation=90 if max(map(len, names)) > 2 else 0)
    ax_cm.set_yticklabels(names)
    for (t, p), count in np.ndenumerate(confusion):
        if count:
            ax_cm.text(
                p,
                t,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if t == p else "black",
            )

    ax_recall.bar(ticks, recall, color="tab:blue")
    low = max(0.0, min(recall) - 0.02)
    ax_recall.set(
        title=f"recall per class (accuracy {100 * report['accuracy']:.2f}%)",
        xlabel="class",
        ylabel="recall",
        xticks=ticks,
        ylim=(low, 1.0),
    )
    ax_recall.set_xticklabels(names, rotation=90 if max(map(len, names)) > 2 else 0)

    if len(cost):
        cost = np.asarray(cost, dtype=float)
        ax_cost.plot(cost, color="tab:gray", alpha=0.4, linewidth=0.6, label="batch cost")
        window = max(1, len(cost) // 50)
        smooth = np.convolve(cost, np.ones(window) / window, mode="valid")
        ax_cost.plot(
            np.arange(window - 1, len(cost)), smooth, color="tab:red", label=f"mean of {window}"
        )
        ax_cost.set_yscale("log")
        ax_cost.legend()
    ax_cost.set(title="training cost", xlabel="batch", ylabel="cross-entropy")
    fig.tight_layout()

    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110)
    except OSError as exc:
        reason = exc.strerror or exc
        raise click.ClickException(f"{path}: cannot write the plot: {reason}") from None
    finally:
        plt.close(fig)
