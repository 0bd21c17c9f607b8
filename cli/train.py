"""``numpycnn train``: train a network from a config file, in a run folder of its own."""

import json
import signal
import sys
from pathlib import Path

import click
from tqdm import tqdm

from numpycnn import api, runs
from numpycnn.modelfile import ModelFileError, load_model
from numpycnn.parallel import WorkerError
from numpycnn.runs import RunFolderError
from numpycnn.training import Diverged

from . import interrupts
from .options import (
    config_option,
    data_options,
    decode_progress,
    download_progress,
    progress_factory,
    quiet_option,
    remove_stale_segments,
    reports_errors,
    threads_option,
    warn,
)


def checkpoint_note(folder):
    """What the run folder holds to continue from, for the line that ends a stopped run:
    "continue from its last checkpoint (...) with numpycnn train --resume RUN", or that
    there is nothing to resume. Read from the folder itself, so it is true whatever the
    moment the run stopped at (the checkpoint files are replaced atomically)."""
    if folder is None:
        return "nothing to resume: training had not begun"
    last = Path(folder) / runs.LAST
    try:
        state = load_model(last).checkpoint or {}
        epoch, batch = int(state["epoch"]), int(state["batch"])
    except (ModelFileError, KeyError, TypeError, ValueError):
        return f"nothing to resume: {folder} holds no checkpoint yet"
    where = f"after epoch {epoch}" if batch == 0 else f"epoch {epoch + 1}, batch {batch}"
    return f"continue from {last} ({where}) with numpycnn train --resume {folder}"


def stopped_line(signum, folder):
    """The line of a run stopped cleanly by a first Ctrl-C or SIGTERM, last.pkl saved."""
    return (
        f"{interrupts.verb(signum)}: checkpoint saved to {Path(folder) / runs.LAST}; "
        f"continue with numpycnn train --resume {folder}"
    )


def diverged_note(folder):
    """Where a diverged run's last good state is (resuming it would diverge again, the
    same way: a lower rate needs a new run)."""
    last = None if folder is None else Path(folder) / runs.LAST
    if last is None or not last.exists():
        return "no epoch completed, so the run folder holds no checkpoint"
    return f"{last} keeps the last completed epoch"


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


def _rate(value):
    return "" if not value else f"  {value:,.0f} img/s"


def epoch_line(stats, epochs):
    """The line printed after each epoch (results.csv holds the same figures unrounded)."""
    val = ""
    if stats.val_accuracy is not None:
        val = f"  val loss {stats.val_loss:.4f}  val acc {_percent(stats.val_accuracy)}"
    return (
        f"epoch {stats.epoch}/{epochs}  loss {stats.train_loss:.4f}  "
        f"train acc {_percent(stats.train_accuracy)}{val}  lr {stats.lr:.3g}  "
        f"{stats.seconds:.1f} s{_rate(stats.images_per_second)}"
    )


@click.command()
@config_option
@click.option("--epochs", type=click.IntRange(min=1), help="Number of passes over the data.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per gradient step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--seed", type=int, help="Seed of the initialisation, shuffling and augmentation.")
@click.option("--limit", type=click.IntRange(min=1), help="Train on the first N images only.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to save the trained model (default: the config's output.params).",
)
@click.option(
    "--name",
    help="Name of the run folder (default: the config's output.name, else the config "
    "file's name); -2, -3, ... is added when it is taken.",
)
@click.option(
    "--runs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where run folders go (default: the config's output.runs_dir, runs/).",
)
@click.option(
    "--resume",
    type=click.Path(path_type=Path),
    metavar="RUN|CHECKPOINT",
    help="Continue a run exactly, optimiser state included: a run folder (from its "
    "last.pkl) or one of its checkpoints.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    metavar="N",
    help="Processes that share each batch, this one and N-1 helpers (default: the usable "
    "CPUs, at most one per 8 images of a batch); 1 trains in this process alone. The same "
    "seed and worker count give bit-identical results.",
)
@data_options
@threads_option
@quiet_option
@click.option("--json", "as_json", is_flag=True, help="Print the final summary as JSON.")
@click.option(
    "--inspect",
    "live",
    is_flag=True,
    help="Serve the inspector's live view of the run while it trains (127.0.0.1, a free "
    "port, from a process of its own; the URL is printed on stderr). It stops when training "
    "ends; numpycnn inspect runs/NAME replays the run afterwards.",
)
@click.option("--no-browser", is_flag=True, help="With --inspect: print the URL only.")
@reports_errors
def train(
    config_path,
    epochs,
    batch_size,
    lr,
    seed,
    limit,
    out,
    name,
    runs_dir,
    resume,
    workers,
    data_dir,
    mirrors,
    threads,
    quiet,
    as_json,
    live,
    no_browser,
):
    """Train a network on the config's data set (MNIST by default) and save it.

    Each run gets a folder of its own, runs/NAME (NAME-2, NAME-3, ... if taken), with the
    resolved config (config.yaml), a checkpoint after every epoch (last.pkl), the best one
    by validation accuracy (best.pkl), results.csv and layers.csv (per-epoch figures and
    per-layer weight and gradient norms, dead ReLUs) and, with matplotlib, results.png.
    The final model is saved to --out (default: the config's output.params, else NAME.pkl
    after the run's name: default.pkl, best.pkl), and the last line says so.

    Downloads the data set if needed (or decodes a folder's images, once, into the data
    directory's cache; unreadable images are skipped with one warning) and trains with a
    progress bar on stderr, printing one line per epoch. Ctrl-C (or SIGTERM) stops between
    batches, saves last.pkl and exits with status 130 (143); a second one stops at once.
    --resume RUN continues it with the same result as an uninterrupted run.

    \b
    Examples:
      numpycnn train --config default         # a built-in config: numpycnn configs
      numpycnn train -c best --name best-seed1 --seed 1   # -> best-seed1.pkl
      numpycnn train --resume runs/default
      numpycnn train -c cifar10 --workers 2          # a colour network, downloads CIFAR-10
    """
    if resume is not None and (
        config_path or any(v is not None for v in (batch_size, lr, seed, limit, name, runs_dir))
    ):
        raise click.UsageError(
            "--resume continues a run with its own settings: only --epochs, --out, "
            "--data-dir, --mirror, --threads, --quiet and --json may be given with it"
        )
    remove_stale_segments()
    bar = folder = server = None
    replacing = False  # whether the model file existed before this run
    talk = not quiet and not as_json

    def on_start(start):
        nonlocal bar, folder, replacing
        folder = start.folder.path
        if server is not None:
            server.serve(folder, open_browser=not no_browser)
            click.echo(f"live view of {folder} at {server.url}", err=True)
        replacing = Path(start.config.output.params).exists()
        t, cfg = start.trainer, start.config
        if not as_json:  # a result, not progress: stdout, and kept under --quiet
            verb = f"resuming {start.resumed_from} in" if start.resumed_from else "run folder"
            click.echo(f"{verb} {start.folder.path}")
        if talk:
            click.echo(
                f"training {t.model.num_params:,} parameters on {len(t.y):,} images"
                f" ({len(t.val[1]) if t.val else 0:,} for validation),"
                f" {cfg.training.epochs} epoch(s) of {t.batches_per_epoch:,} batches,"
                f" {t.optimizer.kind} lr {t.base_lr:g} ({cfg.training.schedule.name} schedule)"
                + (", augmented" if t.augment is not None else "")
                + f", {start.workers} worker{'s' * (start.workers > 1)}"
            )
        bar = progress_factory(quiet)(
            total=t.total_steps,
            initial=t.epoch * t.batches_per_epoch + t.batch,
            desc="train",
            unit="batch",
        )
        # From here to the end of the last epoch, a first Ctrl-C or SIGTERM asks the loop
        # to stop between batches and save last.pkl; a second one stops at once.
        if not t.finished:
            interrupts.begin_requests()

    def on_batch(t, loss, accuracy):
        bar.update(1)
        if t.batch % 10 == 0:
            bar.set_postfix(cost=f"{loss:.3f}", acc=f"{100 * accuracy:.1f}%", refresh=False)

    def on_epoch(t, stats, folder):
        if not as_json:
            tqdm.write(epoch_line(stats, t.epochs), file=sys.stdout)
        if t.finished:  # no batch is left to stop before: a request is answered here,
            signum = interrupts.end_requests()  # with the checkpoint of the last epoch
            if signum is not None:
                raise interrupts.Interrupted(signum, stopped_line(signum, folder.path))

    if live:  # started now, so that its start-up is over before the first batch
        from numpycnn.inspector.live import start_server

        try:
            server = start_server(data_dir=data_dir, mirrors=mirrors)
        except OSError as exc:
            raise click.ClickException(f"cannot serve the live view: {exc}") from None
    try:
        result = api.train(
            config_path,
            resume=resume,
            callbacks=api.Callbacks(
                on_start=on_start,
                on_batch=on_batch,
                on_epoch=on_epoch,
                should_stop=lambda: interrupts.requested() is not None,
                download_progress=download_progress(quiet),
                decode_progress=decode_progress(quiet),
                on_warning=warn,
            ),
            threads=threads,
            workers=workers,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            seed=seed,
            limit=limit,
            out=out,
            data_dir=data_dir,
            mirrors=mirrors,
            name=name,
            runs_dir=runs_dir,
        )
        signum = interrupts.end_requests()
        if not result.finished:  # stopped between batches, last.pkl saved: say so, and
            interrupts.ignore_further()  # let no later signal interrupt the saying
    except Diverged as exc:
        interrupts.ignore_further()  # the run has ended: let nothing cut its report short
        raise click.ClickException(f"training diverged: {exc}; {diverged_note(folder)}") from None
    except RunFolderError as exc:
        raise click.ClickException(str(exc)) from None
    except WorkerError as exc:
        interrupts.ignore_further()
        raise click.ClickException(f"{exc}: training stopped; {checkpoint_note(folder)}") from None
    except KeyboardInterrupt as exc:  # interrupts.Interrupted, or a Ctrl-C raised elsewhere
        if bar is not None:
            bar.close()
        if getattr(exc, "message_given", False):
            raise
        interrupts.ignore_further()
        signum = getattr(exc, "signum", signal.SIGINT)
        how = interrupts.verb(signum) + " again" * getattr(exc, "repeated", False)
        if folder is None:
            message = f"{how} before training began: nothing to resume"
        else:
            message = f"{how}: stopped at once; {checkpoint_note(folder)}"
        raise interrupts.Interrupted(signum, message) from None
    finally:
        if bar is not None:
            bar.close()
        if server is not None:
            server.stop()
    if not result.finished:
        click.echo(stopped_line(signum, result.folder.path), err=True)
        sys.exit(128 + signum)
    if result.params_skipped:
        click.echo(f"warning: {result.params_skipped}", err=True)
    metrics = result.metrics
    if as_json:
        summary = {"run": str(result.folder.path), "params": result.params and str(result.params)}
        summary["replaced"] = bool(result.params) and replacing
        click.echo(json.dumps({**summary, **metrics}))
    else:
        where = "model not saved"
        if result.params:
            where = f"saved the model to {result.params}"
            where += ", replacing the previous one" if replacing else ""
        click.echo(
            f"test accuracy {_percent(metrics['test_accuracy'])} "
            f"({metrics['test_correct']}/{metrics['test_total']}); {where} "
            f"(run folder {result.folder.path})"
        )
