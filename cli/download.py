"""``numpycnn download``: fetch and verify a data set's files, nothing else."""

import click

from numpycnn import datasets
from numpycnn.data import resolve_data_dir, resolve_mirrors
from numpycnn.datasource import load_data

from .options import data_options, download_progress, quiet_option, reports_errors

#: The data sets that are downloaded (a folder is the user's own).
DOWNLOADABLE = [name for name in datasets.names() if name != "folder"]


@click.command()
@click.option(
    "--dataset",
    default="mnist",
    show_default=True,
    metavar="NAME",
    help=f"The data set to fetch: {', '.join(DOWNLOADABLE)}.",
)
@data_options
@quiet_option
@reports_errors
def download(dataset, data_dir, mirrors, quiet):
    """Fetch a data set's files into DATA_DIR/NAME/ and verify them (MNIST by the SHA-256
    of each file's contents, the others by their publishers' MD5 of each file).

    Files already cached and intact are not fetched again. Prints the folder of the
    verified files (for MNIST, the path of each file, as before).
    """
    if dataset == "folder" or dataset not in datasets.SOURCES:
        if dataset == "folder":
            raise click.ClickException(
                "--dataset folder: a folder is your own images, nothing to download "
                f"(downloadable: {', '.join(DOWNLOADABLE)})"
            )
        try:
            datasets.get(dataset)
        except ValueError as exc:
            raise click.ClickException(f"--dataset: {exc}") from None
    data_dir = resolve_data_dir(data_dir)
    if dataset == "mnist":
        from numpycnn.data import fetch_mnist

        paths = fetch_mnist(data_dir, resolve_mirrors(mirrors), progress=download_progress(quiet))
        for path in paths.values():
            click.echo(path)
        return
    load_data(dataset, data_dir, resolve_mirrors(mirrors), download_progress(quiet))
    click.echo(data_dir / dataset)
