"""The ``numpycnn`` command group; each subcommand lives in a module of its own."""

import importlib
import os
import sys

from . import interrupts

if __name__ == "__main__" or os.path.basename(sys.argv[0]) == "numpycnn":
    # This process is the command (python -m numpycnn.cli.main, or the console script):
    # catch Ctrl-C and SIGTERM from here on, before click and the command's imports.
    _SIGNALS_FROM_IMPORT = interrupts.install()
else:  # imported by a program of its own (a test): main() installs them per command
    _SIGNALS_FROM_IMPORT = None

import click  # noqa: E402

from numpycnn import __version__  # noqa: E402

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
    "configs": "numpycnn.cli.configs:configs",
    "export": "numpycnn.cli.export:export_command",
}


class LazyGroup(click.Group):
    """A click group that imports a subcommand's module the first time it is needed, and
    gives every command the same Ctrl-C and SIGTERM handling (``interrupts``)."""

    def main(self, args=None, *rest, **kwargs):
        global _SIGNALS_FROM_IMPORT
        in_process = args is not None  # a caller's own process (CliRunner), not ours
        previous = _SIGNALS_FROM_IMPORT if not in_process else None
        _SIGNALS_FROM_IMPORT = None
        if previous is None:
            previous = interrupts.install()
        try:
            return super().main(args, *rest, **kwargs)
        finally:
            if in_process:  # give the calling program its handlers back
                interrupts.restore(previous)
            # else: signals stay ignored while the interpreter exits

    def invoke(self, ctx):
        with interrupts.command():
            return super().invoke(ctx)

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
    """Train, evaluate and use a NumPy convolutional network on MNIST, Fashion-MNIST,
    KMNIST, CIFAR-10 or a folder of your own images.

    Every layer's forward and backward pass is hand-written NumPy, checked
    against numerical gradients and against PyTorch.
    """
    from numpycnn.allocator import keep_freed_blocks

    keep_freed_blocks()  # this process is the command's: reuse freed blocks (allocator.py)


if __name__ == "__main__":  # pragma: no cover
    main()
