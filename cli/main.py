"""The ``numpycnn`` command group; each subcommand lives in a module of its own."""

import importlib

import click

from numpycnn import __version__

# name -> "module:attribute" of each subcommand, one module per command. They are imported
# only when used, so that `numpycnn --help` stays fast and one command's imports (Pillow,
# matplotlib) never slow another down.
COMMANDS = {
    # "name": "numpycnn.cli.<module>:<command function>",
    "train": "numpycnn.cli.train:train",
    "eval": "numpycnn.cli.evaluate:evaluate_command",
    "predict": "numpycnn.cli.predict:predict",
    "inspect": "numpycnn.cli.inspect:inspect_command",
    "gradcheck": "numpycnn.cli.gradcheck:gradcheck",
    "download": "numpycnn.cli.download:download",
    "export": "numpycnn.cli.export:export_command",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module the first time it is needed."""

    def list_commands(self, ctx):
        return sorted(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="numpycnn")
def main():
    """Train, evaluate and use a NumPy convolutional network on MNIST.

    Every layer's forward and backward pass is hand-written NumPy, checked
    against numerical gradients and against PyTorch.
    """
    from numpycnn.allocator import keep_freed_blocks

    keep_freed_blocks()  # this process is the command's: reuse freed blocks (allocator.py)


if __name__ == "__main__":  # pragma: no cover
    main()
