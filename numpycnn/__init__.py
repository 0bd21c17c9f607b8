"""numpycnn: a convolutional network for MNIST on NumPy, every derivative hand-written.

``numpycnn.train(config, ...)`` trains as ``numpycnn train`` does and ``numpycnn.load(path)``
returns a model that classifies arrays and image files (see ``numpycnn.api``).
``numpycnn.to_torch(model)`` and ``numpycnn.from_torch(module, normalization)`` convert to and
from ``torch.nn.Sequential`` (see ``numpycnn.export``).
"""

__version__ = "0.1.0"

__all__ = ["Callbacks", "Model", "TrainResult", "from_torch", "load", "to_torch", "train"]
_EXPORT = ("from_torch", "to_torch")


def __getattr__(name):
    # Imported on first use, so that `import numpycnn` (and the CLI's --help) stays light.
    if name in _EXPORT:
        from . import export

        return getattr(export, name)
    if name in __all__:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'numpycnn' has no attribute {name!r}")
