"""numpycnn: a convolutional network for MNIST on NumPy, every derivative hand-written."""

__version__ = "0.1.0"
