"""``numpycnn download``: fetch and verify the MNIST files, nothing else."""

import click

from numpycnn.data import fetch_mnist, resolve_data_dir, resolve_mirrors

from .options import data_options, download_progress, quiet_option, reports_errors


@click.command()
@data_options
@quiet_option
@reports_errors
def download(data_dir, mirrors, quiet):
    """Fetch the four MNIST files into DATA_DIR/mnist/ and verify them.

    Files already cached and intact are not fetched again. Prints the path of each
    verified file.
    """
    paths = fetch_mnist(
        resolve_data_dir(data_dir),
        resolve_mirrors(mirrors),
        progress=download_progress(quiet),
    )
    for path in paths.values():
        click.echo(path)
