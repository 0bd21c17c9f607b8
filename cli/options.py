"""Options and helpers shared by the commands: data location, mirrors, progress, errors."""

import functools
import os
import sys
from pathlib import Path

import click
from tqdm import tqdm

from numpycnn.data import DataError

#: Library errors that are the user's to fix (bad file, value or path), shown as one line.
USER_ERRORS = (DataError, ValueError, OSError)
#: The model file eval, predict and inspect read when none is named: what `numpycnn train`
#: writes with no --config (the default recipe, saved after its run name).
DEFAULT_MODEL = "default.pkl"


def load_model_file(path):
    """``modelfile.load_model``, saying what ``default.pkl`` is when it is the default that
    is missing (a new user who has not trained yet, or trained under another name)."""
    from numpycnn.modelfile import load_model

    if os.fspath(path) == DEFAULT_MODEL and not os.path.lexists(path):
        raise click.ClickException(
            f"{DEFAULT_MODEL}: no such file (the model `numpycnn train` saves with no "
            "--config): train one, or name a model file"
        )
    return load_model(path)


def data_options(command):
    """Add ``--data-dir DIR`` and the repeatable ``--mirror URL`` (as ``data_dir``, ``mirrors``)."""
    command = click.option(
        "--mirror",
        "mirrors",
        multiple=True,
        metavar="URL",
        help="Mirror of the data set (URL prefix, file:// URL or directory); repeatable, "
        "tried in order. Overrides $NUMPYCNN_MIRROR (space-separated) and the configured "
        "mirrors.",
    )(command)
    return click.option(
        "--data-dir",
        type=click.Path(file_okay=False, path_type=Path),
        metavar="DIR",
        help="Download and decoding cache; MNIST goes in DIR/mnist/, each other set in "
        "DIR/NAME/, decoded folders in DIR/folders/. Overrides $NUMPYCNN_DATA_DIR and the "
        "configured one; default data/.",
    )(command)


config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="FILE|NAME",
    help="YAML (.yaml/.yml) or INI (.ini) file: network, data, training, output; or the "
    "name of a built-in config (`numpycnn configs` lists them; a file of that name wins). "
    "Without it: the built-in default (the same as an empty file).",
)


def usable_cpus():
    """The CPUs this process may run on (its affinity), not merely those the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


threads_option = click.option(
    "--threads",
    type=click.IntRange(min=1),
    metavar="N",
    default=usable_cpus,
    show_default="the usable CPUs",
    help="Threads that share the predictions made in this process (with one worker).",
)

workers_option = click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    default=usable_cpus,
    show_default="the usable CPUs",
    help="Processes that share the predictions, this one and N-1 helpers (with fewer than "
    "128 images, or 1: this process alone).",
)

quiet_option = click.option("--quiet", "-q", is_flag=True, help="Show no progress bars.")


def progress_factory(quiet, **tqdm_options):
    """A tqdm factory writing to stderr, disabled with --quiet or when stderr is not a TTY."""
    return functools.partial(
        tqdm,
        file=sys.stderr,
        disable=quiet or not sys.stderr.isatty(),
        dynamic_ncols=True,
        **tqdm_options,
    )


def human_size(n):
    """A byte count as pip shows it: '9.9 MB', '4.5 kB'."""
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


class DownloadLine:
    """A download's progress where no bar can be drawn (stderr is a file or a pipe): one
    line as the transfer starts, as pip prints, so a log shows what was fetched."""

    def __init__(self, desc, total=None):
        size = "" if total is None else f" ({human_size(total)})"
        click.echo(f"downloading {desc}{size}", err=True)

    def update(self, n=1):
        pass

    def close(self):
        pass


def download_progress(quiet):
    """A progress factory for downloads: on a terminal a bar of bytes, with binary-prefixed
    sizes and the rate; elsewhere one line per file (``DownloadLine``); none with --quiet."""
    if not quiet and not sys.stderr.isatty():
        return DownloadLine
    return progress_factory(quiet, unit="B", unit_scale=True, unit_divisor=1024)


class DecodeLine(DownloadLine):
    """A folder's decoding where no bar can be drawn: one line as it starts, so a log
    shows why the first run of a folder takes longer."""

    def __init__(self, desc, total=None):
        count = "" if total is None else f" ({total:,} images, once: then cached)"
        click.echo(f"{desc}{count}", err=True)


def decode_progress(quiet):
    """A progress factory for decoding a folder of images: on a terminal a bar of images;
    elsewhere one line (``DecodeLine``); none with --quiet."""
    if not quiet and not sys.stderr.isatty():
        return DecodeLine
    return progress_factory(quiet, unit="image")


def warn(text):
    """A warning of the data (images skipped, a cache not written): one line on stderr."""
    click.echo(f"warning: {' '.join(str(text).split())}", err=True)


def reports_errors(command):
    """Turn USER_ERRORS raised by a command, and a worker process that died or failed
    (``parallel.WorkerError``: the pool has closed itself), into ``Error: <message>`` and
    exit code 1."""
    from numpycnn.parallel import WorkerError

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (*USER_ERRORS, WorkerError) as exc:
            raise click.ClickException(" ".join(str(exc).split())) from exc

    return wrapper


def remove_stale_segments():
    """Remove the shared memory that killed numpycnn processes left behind, saying so in one
    line on stderr (``parallel.remove_stale_segments``). Called by the commands that start
    worker pools, before they start one."""
    from numpycnn.parallel import remove_stale_segments as remove

    removed = remove()
    if removed:
        pids = sorted({pid for _, pid, _ in removed})
        megabytes = sum(size for _, _, size in removed) / 1e6
        owners = (
            f"process {pids[0]}" if len(pids) == 1 else "processes " + ", ".join(map(str, pids))
        )
        click.echo(
            f"removed {len(removed)} shared-memory segment{'s' * (len(removed) > 1)} "
            f"({megabytes:,.1f} MB) left by numpycnn {owners}, no longer running",
            err=True,
        )
    return removed
