"""``numpycnn train``: train a network from a config file and save its parameters."""

import json
import signal
import sys
from contextlib import contextmanager
from pathlib import Path

import click
from tqdm import tqdm

from numpycnn.config import DEFAULT_RECIPE, Config, load_config
from numpycnn.data import load_mnist, resolve_data_dir, resolve_mirrors
from numpycnn.modelfile import load_model, save_model
from numpycnn.training import Diverged, evaluate, prepare

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


@contextmanager
def stop_requests():
    """While active, the first Ctrl-C only sets a flag (checked between batches); a second
    one interrupts at once."""
    requested = []

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous)


def _percent(value):
    return "-" if value is None else f"{100 * value:.2f}%"


@click.command()
@config_option
@click.option("--epochs", type=click.IntRange(min=1), help="Number of passes over the data.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Images per gradient step.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), help="Learning rate.")
@click.option("--seed", type=int, help="Seed of the initialisation and the shuffling.")
@click.option("--limit", type=click.IntRange(min=1), help="Train on the first N images only.")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to save the trained model (default: the config's output.params).",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="CHECKPOINT",
    help="Continue a run from one of its checkpoints, optimiser state included.",
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
    resume,
    data_dir,
    mirrors,
    threads,
    quiet,
    as_json,
):
    """Train a network on MNIST and save it.

    Downloads MNIST if needed, trains with a progress bar on stderr (batch cost and
    running accuracy), prints one line per epoch, writes a checkpoint after every epoch
    and saves the model. Ctrl-C saves a checkpoint and exits with status 130; resume with
    --resume CHECKPOINT for the same result as an uninterrupted run.

    \b
    Examples:
      numpycnn train --config configs/escontrela.yaml
      numpycnn train --config configs/default.yaml --epochs 1 --limit 10000 --out quick.pkl
    """
    checkpoint = None
    if resume is not None:
        if config_path or any(v is not None for v in (batch_size, lr, seed, limit)):
            raise click.UsageError(
                "--resume continues a run with its own settings: only --epochs, --out, "
                "--data-dir, --mirror, --threads, --quiet and --json may be given with it"
            )
        checkpoint = load_model(resume)
        if checkpoint.checkpoint is None or checkpoint.config is None:
            raise click.ClickException(f"{resume}: a trained model, not a training checkpoint")
        config = Config.from_dict(checkpoint.config, source=str(resume))
    else:
        config = load_config(config_path) if config_path else DEFAULT_RECIPE
    config = config.with_overrides(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        limit=limit,
        params=None if out is None else str(out),
    )
    data_cfg, train_cfg = config.data, config.training

    mnist = load_mnist(
        resolve_data_dir(data_dir, data_cfg.data_dir),
        resolve_mirrors(mirrors, data_cfg.mirrors),
        progress=download_progress(quiet),
    )
    run = prepare(config, mnist, checkpoint, threads=threads)
    model, trainer, norm = run.model, run.trainer, run.normalization
    optimizer = trainer.optimizer

    checkpoint_dir = Path(config.output.checkpoint_dir)

    def save(path, **extra):
        """The model with everything that goes with it, plus a checkpoint or metrics."""
        save_model(path, model, norm.to_dict(), trainer.cost, config.to_dict(), **extra)
        return path

    def save_checkpoint(name):
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        return save(checkpoint_dir / name, checkpoint=trainer.state_dict())

    if not quiet and not as_json:
        click.echo(
            f"training {model.num_params:,} parameters on {len(trainer.y):,} images"
            f" ({len(trainer.val[1]) if trainer.val else 0:,} for validation),"
            f" {train_cfg.epochs} epoch(s) of"
            f" {trainer.batches_per_epoch:,} batches, {optimizer.kind} lr {optimizer.lr:g}"
        )
    bar = progress_factory(quiet)(
        total=train_cfg.epochs * trainer.batches_per_epoch,
        initial=trainer.epoch * trainer.batches_per_epoch + trainer.batch,
        desc="train",
        unit="batch",
    )

    def on_batch(t, loss, accuracy):
        bar.update(1)
        if t.batch % 10 == 0:
            bar.set_postfix(cost=f"{loss:.3f}", acc=f"{100 * accuracy:.1f}%", refresh=False)

    def on_epoch(t, stats):
        path = save_checkpoint(f"epoch-{stats.epoch:03d}.pkl")
        if not as_json:
            tqdm.write(
                f"epoch {stats.epoch}/{t.epochs}  loss {stats.train_loss:.4f}  "
                f"train acc {_percent(stats.train_accuracy)}  "
                f"val acc {_percent(stats.val_accuracy)}  {stats.seconds:.1f} s  "
                f"(checkpoint {path})",
                file=sys.stdout,
            )

    try:
        with stop_requests() as should_stop:
            finished = trainer.run(on_batch, on_epoch, should_stop)
    except Diverged as exc:
        raise click.ClickException(f"training diverged: {exc}; nothing was saved") from None
    finally:
        bar.close()
    if not finished:
        path = save_checkpoint("interrupted.pkl")
        click.echo(
            f"interrupted: checkpoint saved to {path}; continue with "
            f"numpycnn train --resume {path}",
            err=True,
        )
        sys.exit(INTERRUPTED)

    test = evaluate(model, norm.norm(mnist.test_images), mnist.test_labels, threads=threads)
    last = trainer.history[-1] if trainer.history else None
    metrics = {
        "test_accuracy": test["accuracy"],
        "val_accuracy": None if last is None else last.val_accuracy,
        "train_loss": None if last is None else last.train_loss,
        "seconds": sum(s.seconds for s in trainer.history),
        "epochs": trainer.epoch,
    }
    params_path = save(Path(config.output.params), metrics=metrics)
    if as_json:
        click.echo(json.dumps({"params": str(params_path), **metrics}))
    else:
        click.echo(
            f"test accuracy {_percent(test['accuracy'])} ({test['correct']}/{test['total']}); "
            f"saved the model to {params_path}"
        )
