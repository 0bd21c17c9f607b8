"""What the network takes in: one image of the model's input shape, prepared from a file
the way the model's own data was, and normalised as its training was.

A model trained on MNIST (or on another set of light-on-dark digits or characters in
MNIST's form) gets ``numpycnn predict``'s digit preparation (cropped to its ink, fitted to
20x20, centred in 28x28); any other model gets the folder source's decoder
(``datasets.images.decode``: grey or RGB, fitted to H x W or stretched, as its source
says). An image is uint8, (H, W) for a grey model and (C, H, W) for a colour one; drawing
on the page is offered for grey models only.
"""

import io

import numpy as np

from ..datasets import images as image_files
from ..imageprep import SIZE, decode_digit, open_image
from .tracing import InspectionError

__all__ = ["DIGIT_SOURCES", "InputForm"]

#: Data sources whose images are light digits or characters on dark, in MNIST's form:
#: a drawing or a photo of one is prepared as ``predict`` prepares a digit.
DIGIT_SOURCES = ("mnist", "kmnist")


class InputForm:
    """The input of one model: ``shape`` (C, H, W), ``colour``, ``digits`` (MNIST-style
    preparation), ``drawable`` (the page offers a drawing area), and the source's
    ``resize`` for files."""

    def __init__(self, input_shape, data_source=None):
        self.shape = tuple(int(s) for s in input_shape)
        c, h, w = self.shape
        source = data_source or {"dataset": "mnist"}
        self.dataset = str(source.get("dataset", "mnist"))
        self.colour = c == 3
        self.digits = self.dataset in DIGIT_SOURCES and self.shape == (1, SIZE, SIZE)
        self.drawable = c == 1
        self.resize = source.get("resize", "fit")
        if self.resize not in image_files.RESIZES:
            self.resize = "fit"

    @property
    def image_shape(self):
        """One image's array shape: (H, W) grey, (C, H, W) colour."""
        return self.shape[1:] if self.shape[0] == 1 else self.shape

    @property
    def size(self):
        return int(np.prod(self.shape))

    def describe(self):
        """How a file becomes the input, in one sentence for the page."""
        c, h, w = self.shape
        if self.digits:
            return (
                "numpycnn predict's MNIST-style preprocessing: light on dark, cropped to its "
                f"ink, scaled to fit 20×20 and centred on its centre of mass in {h}×{w}"
            )
        how = "stretched to" if self.resize == "stretch" else "fitted, aspect kept, into"
        return (
            f"the {self.dataset} source's preparation: {'RGB' if self.colour else 'grey'}, "
            f"{how} {h}×{w} (Lanczos), transparency on white"
        )

    def prepare(self, data, name="uploaded image"):
        """The bytes of an image file as this model's input image (ImageError naming
        ``name`` when it cannot be read)."""
        if self.digits:
            return decode_digit(data, name)
        with open_image(io.BytesIO(data), name, image_files.MAX_PIXELS) as image:
            array = image_files.decode(image, self.shape, self.resize, name)
        return array[0] if self.shape[0] == 1 else array

    def from_pixels(self, pixels):
        """Pixel values 0-255, row-major (channels first), as this model's input image."""
        a = np.asarray(pixels)
        if a.size != self.size or a.dtype.kind not in "iuf":
            raise InspectionError(f"pixels must be {self.size} numbers 0-255")
        if not (np.isfinite(a).all() and a.min() >= 0 and a.max() <= 255):
            raise InspectionError("pixels must be numbers from 0 to 255")
        return np.rint(a).astype(np.uint8).reshape(self.image_shape)

    def images(self, images):
        """A set of images (N, C, H, W) or (N, H, W) in this form: (N, H, W) grey or
        (N, C, H, W) colour."""
        images = np.asarray(images)
        if images.ndim == 4 and images.shape[1] == 1 and self.shape[0] == 1:
            images = images[:, 0]
        if images.shape[1:] != self.image_shape:
            raise InspectionError(
                f"test images of shape {images.shape[1:]} do not fit the model's input "
                f"{'x'.join(map(str, self.shape))}"
            )
        return images

    def normalise(self, norm, images):
        """uint8 images in this form, one or many, as float32 (N, C, H, W), normalised by
        ``norm`` (a ``data.Normalization``: one mean and deviation, or one per channel)."""
        x = np.asarray(images)
        if x.ndim == len(self.image_shape):
            x = x[None]
        return norm.norm(x.reshape((len(x), *self.shape)))
