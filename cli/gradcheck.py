"""``numpycnn gradcheck``: the engine's numerical gradient check on a configured network."""

import click
import numpy as np

from numpycnn.config import DEFAULT_RECIPE, load_config
from numpycnn.engine import Sequential
from numpycnn.engine.gradcheck import check_model

from .options import config_option, reports_errors


@click.command()
@config_option
@click.option(
    "--batch",
    default=4,
    show_default=True,
    type=click.IntRange(1),
    help="Images in the random batch.",
)
@click.option(
    "--samples",
    default=50,
    show_default=True,
    type=click.IntRange(1),
    help="Entries checked per parameter tensor.",
)
@click.option(
    "--tolerance",
    default=1e-6,
    show_default=True,
    type=click.FloatRange(0),
    help="Largest relative error that passes.",
)
@click.option("--seed", default=0, show_default=True, type=int)
@reports_errors
def gradcheck(config_path, batch, samples, tolerance, seed):
    """Check the hand-written gradients against central differences, in float64.

    Builds the configured network in float64, takes a random batch, and compares each
    parameter's analytic gradient with (L(p+h) - L(p-h)) / 2h at sampled entries. Prints
    one line per parameter with its relative error; exits with status 1 above tolerance.
    Steps that would cross a ReLU or max kink are shortened or skipped (and counted).
    """
    config = load_config(config_path) if config_path else DEFAULT_RECIPE
    t = config.training
    model = Sequential(
        config.network,
        loss=t.loss,
        init=t.init,
        dtype="float64",
        seed=t.seed,
        input_shape=config.data.shape,
    )
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch,) + model.input_shape)
    labels = rng.integers(0, model.output_shape[0], batch)
    result = check_model(model, x, labels, samples=samples, seed=seed)
    for name in model.param_names:
        skipped = result.skipped[name]
        note = f"  ({skipped} entries skipped at kinks)" if skipped else ""
        verdict = "ok" if result.errors[name] <= tolerance else "FAIL"
        click.echo(
            f"{name:>4}  {result.errors[name]:.2e}  {verdict}  "
            f"({result.checked[name]} entries){note}"
        )
    worst = result.max_error
    if worst > tolerance:
        raise click.ClickException(
            f"gradient check failed: max relative error {worst:.2e} > {tolerance:g}"
        )
    click.echo(
        f"all {len(model.param_names)} parameters within {tolerance:g} "
        f"(max relative error {worst:.2e})"
    )
