"""numpycnn: a convolutional network for MNIST on NumPy, every derivative hand-written.

``numpycnn.train(config, ...)`` trains as ``numpycnn train`` does and ``numpycnn.load(path)``
returns a model that classifies arrays and image files (see ``numpycnn.api``).
"""

__version__ = "0.1.0"

__all__ = ["Callbacks", "Model", "TrainResult", "load", "train"]


def __getattr__(name):
    # Imported on first use, so that `import numpycnn` (and the CLI's --help) stays light.
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'numpycnn' has no attribute {name!r}")
