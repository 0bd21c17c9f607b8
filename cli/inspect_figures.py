"""``numpycnn inspect --save DIR``: the inspector's views as PNG figures, for reports and
for users without a browser. Every number comes from ``numpycnn.inspector.Inspector``."""

from pathlib import Path

import click
import numpy as np

from numpycnn.modelfile import atomic_write

#: Zero-centred diverging colour map, as on the page (blue negative, white 0, red positive).
DIVERGING = "RdBu_r"


def _write(fig, path):
    import matplotlib.pyplot as plt

    try:
        with atomic_write(path) as f:
            fig.savefig(f, format="png", dpi=110)
    except OSError as exc:
        raise click.ClickException(f"{path}: cannot write: {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return path


def _signed(ax, values, scale=None, title=None):
    """A map on the diverging scale symmetric about 0; returns the image for a colour bar."""
    scale = scale if scale is not None else float(np.abs(values).max()) or 1.0
    im = ax.imshow(values, cmap=DIVERGING, vmin=-scale, vmax=scale, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return im


def _image(ax, image):
    """A uint8 input image, grey (H, W) or colour (C, H, W), pixel for pixel."""
    image = np.asarray(image)
    if image.ndim == 3:
        ax.imshow(image.transpose(1, 2, 0), interpolation="nearest")
    else:
        ax.imshow(image, cmap="gray", vmin=0, vmax=255, interpolation="nearest")


def input_figure(digit, probabilities, name, class_names=None):
    import matplotlib.pyplot as plt

    names = list(class_names or range(len(probabilities)))
    size = "x".join(map(str, np.shape(digit)[-2:]))
    fig, (ax_img, ax_p) = plt.subplots(
        1, 2, figsize=(8, max(3.6, 0.28 * len(names) + 1)), width_ratios=(1, 1.6)
    )
    _image(ax_img, digit)
    ax_img.set(title=f"{name}: the {size} input the network sees", xticks=[], yticks=[])
    ax_img.title.set_fontsize(9)
    top = int(np.argmax(probabilities))
    colours = ["tab:blue" if k == top else "#9fb3cf" for k in range(len(probabilities))]
    ax_p.barh(range(len(probabilities)), probabilities, color=colours)
    ax_p.set(
        yticks=range(len(probabilities)),
        yticklabels=[str(n) for n in names],
        xlim=(0, 1),
        xlabel="probability",
        title=f"predicted {names[top]} (p = {probabilities[top]:.4f})",
    )
    ax_p.invert_yaxis()
    for k, p in enumerate(probabilities):
        ax_p.text(min(p + 0.01, 0.86), k, f"{100 * p:.2f}%", va="center", fontsize=8)
    fig.tight_layout()
    return fig


def activations_figure(activations):
    """One row per layer: channel maps for conv and pool layers, bars for the others."""
    import matplotlib.pyplot as plt

    cols = max([a["shape"][0] for a in activations if len(a["shape"]) == 3] + [1])
    fig = plt.figure(figsize=(max(8, 1.3 * cols + 2.5), 1.45 * len(activations) + 0.5))
    grid = fig.add_gridspec(len(activations), cols + 1, width_ratios=[0.08] * cols + [0.02])
    for row, a in enumerate(activations):
        values = np.asarray(a["values"])
        scale = float(np.abs(values).max()) or 1.0
        label = f"{a['label']}  {'x'.join(map(str, a['shape']))}\n[{a['min']:.3g}, {a['max']:.3g}]"
        if values.ndim == 3:
            for c in range(values.shape[0]):
                ax = fig.add_subplot(grid[row, c])
                im = _signed(ax, values[c], scale)
                if c == 0:
                    ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            fig.colorbar(im, cax=fig.add_subplot(grid[row, cols]))
        else:
            ax = fig.add_subplot(grid[row, :cols])
            ax.bar(range(values.size), values, color=np.where(values >= 0, "tab:red", "tab:blue"))
            ax.axhline(0, color="#999", linewidth=0.5)
            ax.set_xlim(-0.5, values.size - 0.5)
            ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
            ax.tick_params(labelsize=7)
            if values.size <= 10:
                ax.set_xticks(range(values.size))
    fig.suptitle("every layer's output (diverging scale symmetric about 0 per layer)", fontsize=10)
    fig.subplots_adjust(top=1 - 0.5 / (1.45 * len(activations) + 0.5), bottom=0.03)
    return fig


def saliency_figure(digit, back):
    import matplotlib.pyplot as plt

    q = back["quantity"]
    what = (
        f"d z{q['class']} / d input (class {q['class']} score)"
        if q["kind"] == "score"
        else f"d loss(label {q['label']}) / d input"
    )
    fig, (ax_img, ax_s) = plt.subplots(1, 2, figsize=(7.5, 3.6))
    _image(ax_img, digit)
    ax_img.set(title="input", xticks=[], yticks=[])
    gradient = np.asarray(back["input"])
    if gradient.shape[0] > 1:
        what += ", summed over channels"
    im = _signed(ax_s, gradient.sum(axis=0), title=what)
    fig.colorbar(im, ax=ax_s, label="gradient per normalised pixel")
    fig.tight_layout()
    return fig


def rgb_kernel(kernel, scale):
    """A (3, K, K) kernel as an RGB image (K, K, 3) in [0, 1]: 0.5 + w / (2 scale), so
    grey is zero and a channel's colour shows where it weighs positively."""
    return np.clip(0.5 + np.asarray(kernel).transpose(1, 2, 0) / (2 * scale), 0, 1)


def filters_figure(filters):
    """Every conv layer's kernels, rows filters and columns input channels, each layer on
    its own zero-centred scale with its own colour bar."""
    import matplotlib.pyplot as plt

    rows = max(f["shape"][0] for f in filters)
    widths = [max(f["shape"][1], 2) + 1.5 for f in filters]
    fig = plt.figure(figsize=(0.6 * sum(widths) + 1, 0.6 * rows + 1.2))
    subfigs = np.atleast_1d(fig.subfigures(1, len(filters), width_ratios=widths))
    for sub, f in zip(subfigs, filters):
        w = np.asarray(f["weight"])
        scale = float(np.abs(w).max()) or 1.0
        rgb = w.shape[1] == 3  # a colour input's filters: also each kernel in colour
        axes = sub.subplots(w.shape[0], w.shape[1] + rgb, squeeze=False)
        for i in range(w.shape[0]):
            for c in range(w.shape[1]):
                im = _signed(axes[i, c], w[i, c], scale)
            if rgb:
                axes[i, 3].imshow(rgb_kernel(w[i], scale), interpolation="nearest")
                axes[i, 3].set(xticks=[], yticks=[])
                if i == 0:
                    axes[i, 3].set_title("RGB", fontsize=8)
        sub.suptitle(
            f"{f['label']} {'x'.join(map(str, w.shape))}\n[{f['min']:.3g}, {f['max']:.3g}]",
            fontsize=9,
        )
        sub.colorbar(im, ax=axes, shrink=0.7)
    return fig


def training_figure(history, name):
    """The per-batch cost on a log scale with a running mean and, when the model file
    holds per-epoch history, the training and validation accuracy per epoch."""
    import matplotlib.pyplot as plt

    epochs = [e for e in history["epochs"] if isinstance(e, dict) and "epoch" in e]
    panels = 2 if epochs else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    cost = np.array([np.nan if c is None else c for c in history["cost"]], dtype=float)
    every = history["cost_every"]
    batches = (np.arange(cost.size) + 0.5) * every if every > 1 else np.arange(cost.size)
    label = "batch cost" if every == 1 else f"batch cost (mean of {every})"
    ax.plot(batches, cost, color="tab:gray", alpha=0.45, linewidth=0.6, label=label)
    window = max(1, cost.size // 50)
    if cost.size >= window > 1:
        smooth = np.convolve(cost, np.ones(window) / window, mode="valid")
        ax.plot(batches[window - 1 :], smooth, color="tab:red", label=f"running mean of {window}")
    if np.nanmin(cost, initial=np.inf) > 0:
        ax.set_yscale("log")
    ax.set(title=f"{name}: training cost ({history['batches']:,} batches)", xlabel="batch")
    ax.set_ylabel(history["loss"])
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if epochs:
        ax = axes[0, 1]
        numbers = [e["epoch"] for e in epochs]
        for key, what in (("train_accuracy", "training"), ("val_accuracy", "validation")):
            values = [np.nan if e.get(key) is None else e[key] for e in epochs]
            if not np.isnan(values).all():
                ax.plot(numbers, values, marker="o", label=what)
        ax.set(title="accuracy per epoch", xlabel="epoch", ylabel="accuracy")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_figures(inspector, directory, image=None, target=None):
    """Write the figures into ``directory`` (created if needed); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")

    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise click.ClickException(f"{directory}: cannot create: {exc.strerror or exc}") from None
    written = []
    if image is not None:
        try:
            data = Path(image).read_bytes()
        except OSError as exc:
            raise click.ClickException(f"{image}: cannot read: {exc.strerror or exc}") from None
        digit = inspector.digit(image=data, name=str(image))
        tr = inspector.trace(digit)
        figure = input_figure(digit, tr.probabilities, Path(image).name, inspector.class_names)
        written.append(_write(figure, directory / "input.png"))
        written.append(
            _write(activations_figure(inspector.activations(tr)), directory / "activations.png")
        )
        back = inspector.backward(tr, target=target)
        written.append(_write(saliency_figure(digit, back), directory / "saliency.png"))
    filters = inspector.filters()
    if filters:
        written.append(_write(filters_figure(filters), directory / "filters.png"))
    history = inspector.history()
    if history["batches"]:
        figure = training_figure(history, inspector.name or "the model")
        written.append(_write(figure, directory / "training.png"))
    return written


def probe_figure(timeline, name, class_names):
    """The probe's class probabilities under every snapshot of a run (x: step, log scale
    past 1), the ten likeliest classes at the end."""
    import matplotlib.pyplot as plt

    steps = np.asarray(timeline["steps"])
    probs = np.asarray(timeline["probabilities"])
    order = np.argsort(-probs[-1])[:10]
    fig, ax = plt.subplots(figsize=(8, 4.2))
    for rank, k in enumerate(order):
        ax.plot(steps, probs[:, k], marker="o", markersize=3,
                linewidth=2.2 if rank == 0 else 1.2, label=str(class_names[k]))  # fmt: skip
    ax.set_xscale("symlog", linthresh=1)
    ax.set(xlabel="step (log scale past 1)", ylabel="probability", ylim=(-0.02, 1.02))
    ax.set_title(f"{name} under every snapshot of the run", fontsize=10)
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def save_run_figures(view, directory, image=None):
    """A run folder's figures: the first layer's filters through the run as an animated
    GIF (filters-evolution.gif) and the probe's probabilities across the run (probe.png;
    the probe is ``image``, else the first test image when the test set can be read).
    Returns (paths written, a note on what was left out, or None)."""
    from numpycnn.data import DataError
    from numpycnn.inspector.evolution import save_filters_gif

    directory = Path(directory)
    written, note = [], None
    frames = view.filters_over_run()
    if frames:
        try:
            written.append(save_filters_gif(frames, directory / "filters-evolution.gif"))
        except OSError as exc:
            raise click.ClickException(
                f"{directory}: cannot write: {exc.strerror or exc}"
            ) from None
    base = view.base
    if image is not None:
        digit, name = base.digit(image=Path(image).read_bytes(), name=str(image)), Path(image).name
    else:
        try:
            digit, name = base.digit(test_index=0), "test image #0"
        except (DataError, ValueError) as exc:
            digit, note = None, f"probe.png left out: no --image and no test image ({exc})"
    if digit is not None and view.snapshots():
        figure = probe_figure(view.timeline(digit), name, base.class_names)
        written.append(_write(figure, directory / "probe.png"))
    return written, note
