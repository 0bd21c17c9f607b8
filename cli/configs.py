"""``numpycnn configs``: list the built-in configs, or print one to start your own."""

import json
from pathlib import Path

import click

from numpycnn import recipes

from .options import reports_errors

COLUMNS = ("name", "network", "parameters", "accuracy", "about")


def table(rows):
    """Aligned columns, a header line first; the last column is free text."""
    cells = [[c.upper() for c in COLUMNS]]
    cells += [[r.name, r.network, f"{r.parameters:,}", r.accuracy or "-", r.about] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS) - 1)]
    return [
        "  ".join([*(cell.ljust(w) for cell, w in zip(line, widths)), line[-1]]).rstrip()
        for line in cells
    ]


@click.command("configs")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead, for scripts.")
@reports_errors
def configs(name, as_json):
    """List the built-in configs, or print config NAME as YAML.

    Without NAME: one line per built-in config with its network in short (layers with
    weights, and pooling), its parameter count, its measured test accuracy and what it
    is for. Any of these names works where a config file goes (`numpycnn train --config
    best`, `numpycnn.train("best")`); a file of the same name wins.

    With NAME: the config as YAML, comments included, to start a file of your own.

    \b
    Examples:
      numpycnn configs
      numpycnn configs best > my.yaml     # edit it, then:
      numpycnn train --config my.yaml
    """
    if name is None:
        rows = recipes.describe_all()
        if as_json:
            click.echo(json.dumps([r.to_dict() for r in rows], indent=2))
        else:
            for line in table(rows):
                click.echo(line)
        return
    if Path(name).is_file() and name not in recipes.builtin_configs():
        raise click.ClickException(
            f"{name}: a config file, not a built-in config; `numpycnn configs` lists the "
            "built-in ones (your file is used as it is: numpycnn train --config FILE)"
        )
    if as_json:
        recipe = recipes.describe(name)
        config = recipes.load_config(recipe.path).to_dict()
        click.echo(json.dumps({**recipe.to_dict(), "config": config}, indent=2))
    else:
        click.echo(recipes.as_yaml(name), nl=False)
