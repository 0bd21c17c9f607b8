"""An image file prepared for a model the way that model's training data was prepared.

A model file records its data source (``ModelFile.data_source``). An MNIST model reads a
photographed or drawn digit as MNIST was made (``imageprep.load_digit``: light on dark,
cropped to its ink, 20x20 in 28x28, centred on its centre of mass). Any other model reads
an image as its data set's images were decoded (``datasets.images.load_image``): a folder
with that folder's ``resize``, Fashion-MNIST, KMNIST and CIFAR-10 fitted whole, since their
images are whole pictures already (a grey model gets grey, a colour model RGB).
"""

import os

import numpy as np

from .datasets.images import load_image
from .imageprep import load_digit

__all__ = ["is_digit_model", "load_input", "prepare"]


def is_digit_model(data_source):
    """Whether a model of this source reads images as MNIST digits (``load_digit``)."""
    return (data_source or {}).get("dataset", "mnist") == "mnist"


def load_input(path, data_source, input_shape):
    """The image file at ``path`` as uint8 pixels for a model trained on ``data_source``
    with input ``input_shape`` (C, H, W): (H, W) for an MNIST model, (C, H, W) otherwise.
    Raises ``imageprep.ImageError`` naming the file."""
    if is_digit_model(data_source):
        return load_digit(path)
    return load_image(path, tuple(input_shape), (data_source or {}).get("resize", "fit"))


def prepare(images, data_source, input_shape):
    """uint8/float pixels (N, C, H, W) or (N, H, W) from image paths (a path or a list of
    them, prepared by ``load_input``) or from pixel arrays, which are passed through."""
    if isinstance(images, (str, os.PathLike)):
        images = [images]
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike)):
        images = np.stack([load_input(path, data_source, input_shape) for path in images])
    images = np.asarray(images)
    if images.dtype.kind not in "uif":
        raise ValueError(f"expected image files or pixel arrays, got {images.dtype} data")
    return images
