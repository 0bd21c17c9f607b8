"""``numpycnn train``: train a network from a config file, in a run folder of its own."""

import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import click
from tqdm import tqdm

from numpycnn import api
from numpycnn.parallel import WorkerError
from numpycnn.runs import RunFolderError
from numpycnn.training import Diverged

from .options import (
    config_option,
    data_options,
    download_progress,
    progress_factory,
    quiet_option,
    reports_errors,
    threads_option,
)

INTERRUPTED = 130  # the shell's exit status for a process stopped by Ctrl-C (128 + SIGINT)


class Terminated(Exception):
    """SIGTERM arrived: training stops where it is, its workers and shared memory go."""


@contextmanager
def stop_requests():
    """While active, the first Ctrl-C only sets a flag (checked between batches); a second
    one interrupts at once. SIGTERM raises Terminated, so that the worker pool and the run
    folder's lock are released on the way out."""
    requested = []

    def on_interrupt(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    def on_terminate(signum, frame):
        raise Terminated(f"{signal.Signals(signum).name} arrived")

    previous = signal.signal(signal.SIGINT, on_interrupt)
    previous_term = signal.signal(signal.SIGTERM, on_terminate)
    try:
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, previous_term)


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
):
    """Train a network on MNIST and save it.

    Each run gets a folder of its own, runs/NAME (NAME-2, NAME-3, ... if taken), with the
    resolved config (config.yaml), a checkpoint after every epoch (last.pkl), the best one
    by validation accuracy (best.pkl), results.csv and layers.csv (per-epoch figures and
    per-layer weight and gradient norms, dead ReLUs) and, with matplotlib, results.png.
    The final model is saved to --out (default: the config's output.params, else NAME.pkl
    after the run's name: default.pkl, best.pkl), and the last line says so.

    Downloads MNIST if needed and trains with a progress bar on stderr, printing one line
    per epoch. Ctrl-C stops between batches, saves last.pkl and exits with status 130;
    --resume RUN continues it with the same result as an uninterrupted run.

    \b
    Examples:
      numpycnn train --config default         # a built-in config: numpycnn configs
      numpycnn train -c configs/best.yaml --name best-seed1 --seed 1   # -> best-seed1.pkl
      numpycnn train --resume runs/default
    """
    if resume is not None and (
        config_path or any(v is not None for v in (batch_size, lr, seed, limit, name, runs_dir))
    ):
        raise click.UsageError(
            "--resume continues a run with its own settings: only --epochs, --out, "
            "--data-dir, --mirror, --threads, --quiet and --json may be given with it"
        )
    bar = folder = None
    replacing = False  # whether the model file existed before this run
    talk = not quiet and not as_json

    def on_start(start):
        nonlocal bar, folder, replacing
        folder = start.folder.path
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

    def on_batch(t, loss, accuracy):
        bar.update(1)
        if t.batch % 10 == 0:
            bar.set_postfix(cost=f"{loss:.3f}", acc=f"{100 * accuracy:.1f}%", refresh=False)

    def on_epoch(t, stats, folder):
        if not as_json:
            tqdm.write(epoch_line(stats, t.epochs), file=sys.stdout)

    try:
        with stop_requests() as should_stop:
            result = api.train(
                config_path,
                resume=resume,
                callbacks=api.Callbacks(
                    on_start=on_start,
                    on_batch=on_batch,
                    on_epoch=on_epoch,
                    should_stop=should_stop,
                    download_progress=download_progress(quiet),
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
    except Diverged as exc:
        raise click.ClickException(
            f"training diverged: {exc}; the run folder keeps the last completed epoch"
        ) from None
    except RunFolderError as exc:
        raise click.ClickException(str(exc)) from None
    except (WorkerError, Terminated) as exc:
        raise click.ClickException(
            f"{exc}: training stopped; the run folder keeps the last completed epoch"
        ) from None
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once, mid-batch, saving nothing
        where = f" numpycnn train --resume {folder}" if folder else ""
        if bar is not None:
            bar.close()
        click.echo(
            "interrupted again: stopped at once without a new checkpoint"
            + (f"; continue from the last one with{where}" if where else ""),
            err=True,
        )
        sys.exit(INTERRUPTED)
    finally:
        if bar is not None:
            bar.close()
    if not result.finished:
        click.echo(
            f"interrupted: checkpoint saved to {result.checkpoint}; continue with "
            f"numpycnn train --resume {result.folder.path}",
            err=True,
        )
        sys.exit(INTERRUPTED)
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
