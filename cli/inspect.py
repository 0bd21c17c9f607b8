"""``numpycnn inspect``: a local page to draw a digit and watch every layer, or the same
views written as PNG figures."""

import threading
import webbrowser
from pathlib import Path

import click
import yaml

from numpycnn.inspector.sources import config_source, data_loaders

from .options import DEFAULT_MODEL, data_options, load_model_file, reports_errors, threads_option


@click.command("inspect")
@click.argument("params", default=DEFAULT_MODEL, type=click.Path(path_type=Path))
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on. The page has no authentication: bind beyond this machine "
    "only on a network you trust.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default="a free port",
    help="Port to listen on.",
)
@click.option("--no-browser", is_flag=True, help="Print the URL only; do not open a browser.")
@click.option(
    "--image",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --save: the image (a digit for an MNIST model) to draw the figures of.",
)
@click.option(
    "--save",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write PNG figures into DIR instead of serving: the filters (filters.png) and the "
    "training cost, with the accuracy per epoch when the file has it (training.png); with "
    "--image also the input as the network sees it and its probabilities (input.png), every "
    "layer's activations (activations.png) and the saliency map (saliency.png). For a run "
    "folder also the first layer's filters through the run (filters-evolution.gif) and the "
    "probe's probabilities at every snapshot (probe.png; the probe is --image, else the "
    "first test image). Needs pip install 'numpycnn[plot]'.",
)
@click.option(
    "--class",
    "target",
    type=click.IntRange(min=0),
    help="With --image: the class whose score the saliency map differentiates "
    "(default: the predicted one).",
)
@data_options
@threads_option
@reports_errors
def inspect_command(
    params, host, port, no_browser, image, save, target, data_dir, mirrors, threads
):
    """See inside a trained network: a local page to draw a digit and watch every layer.

    PARAMS is a model file from `numpycnn train` (default default.pkl), a 2018 reference
    pickle, or a run folder (runs/NAME, running or finished: its latest snapshot, and every
    snapshot of the run over the API). The page shows the 28x28 input the network sees and
    its class probabilities as you draw; every layer's activations; any unit's arithmetic
    (click it); the backward pass for the image (saliency map, the gradient reaching each
    layer, the filters' weight gradients); the learned filters; the test set's confusion
    matrix with its images; and the training history. All numbers come from the engine that
    trained the model.

    The server listens on 127.0.0.1 and serves only its own page; Ctrl-C stops it. The
    MNIST test set is read (or downloaded) when the page first asks for it.

    \b
    Examples:
      numpycnn inspect default.pkl
      numpycnn inspect default.pkl --image seven.png --save figures/
      numpycnn inspect runs/default
    """
    if image is not None and save is None:
        raise click.UsageError("--image is used with --save DIR (the page has its own input)")
    if target is not None and image is None:
        raise click.UsageError("--class is used with --image")
    if save is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.ClickException(
                "--save needs matplotlib, which is not installed: pip install 'numpycnn[plot]'"
            ) from None
    from numpycnn.inspector import Inspector

    view = None
    if params.is_dir():
        from numpycnn.inspector.run import RunView
        from numpycnn.runs import CONFIG, RunFolderError

        try:
            config = yaml.safe_load((params / CONFIG).read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            config = None  # RunView.open says what is wrong with the folder
        test_set, train_set = data_loaders(config_source(config), data_dir, mirrors, config)
        try:
            view = RunView.open(
                params, test_set=test_set, train_set=train_set, threads=threads, name=params.name
            )
        except RunFolderError as exc:
            if save is not None or not (params / CONFIG).is_file():
                raise click.ClickException(str(exc)) from None
            # a run that has only just started: serve now, open it at its first snapshot
            from numpycnn.inspector.live import opener_for

            opener = opener_for(params, data_dir, mirrors, threads)
            return serve(None, host, port, not no_browser, opener=opener, name=params.name)
        inspector = view.base
    else:
        saved = load_model_file(params)
        test_set, train_set = data_loaders(saved.data_source, data_dir, mirrors, saved.config)
        inspector = Inspector(
            saved, test_set=test_set, train_set=train_set, threads=threads, name=params.name
        )
    if save is not None:
        from .inspect_figures import save_figures

        for path in save_figures(inspector, save, image=image, target=target):
            click.echo(f"wrote {path}")
        if view is not None:
            from .inspect_figures import save_run_figures

            paths, note = save_run_figures(view, save, image=image)
            for path in paths:
                click.echo(f"wrote {path}")
            if note:
                click.echo(note, err=True)
        return
    serve(inspector, host, port, open_browser=not no_browser, run=view)


def _warm(inspector):
    try:
        inspector.warm()
    except Exception as exc:  # a background nicety: say so in one line, keep serving
        click.echo(f"the out-of-distribution cue is unavailable: {exc}", err=True)


def serve(inspector, host, port, open_browser=True, run=None, opener=None, name=None):
    """Serve the page until Ctrl-C, which stops the server and exits 0; ``run``: the
    ``RunView`` of a run folder; ``opener`` (with ``inspector`` None): opens a run folder
    at its first request that finds a snapshot (``name``: the folder's name)."""
    from numpycnn.inspector import make_server

    log = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        server = make_server(inspector, host, port, log=log, run=run, opener=opener)
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None
    try:
        if not server.loopback_only:
            click.echo(
                f"Warning: listening on {host}: anyone who can reach this address can use the "
                "page, which has no authentication.",
                err=True,
            )
        shown = inspector.name if inspector is not None else name
        click.echo(f"numpycnn inspect: {shown} at {server.url}  (Ctrl-C to stop)")
        if open_browser:
            threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
        if inspector is not None:  # the out-of-distribution cue's sample, ready before a drawing
            threading.Thread(target=_warm, args=(inspector,), daemon=True).start()
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        server.server_close()
