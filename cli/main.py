"""The ``numpycnn`` command group; each subcommand lives in a module of its own."""

import click

from numpycnn import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="numpycnn")
def main():
    """Train, evaluate and use a NumPy convolutional network on MNIST.

    Every layer's forward and backward pass is hand-written NumPy, checked
    against numerical gradients and against PyTorch.
    """


if __name__ == "__main__":  # pragma: no cover
    main()
