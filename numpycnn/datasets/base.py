"""The common face of every data source: a ``Dataset`` of uint8 images (N, C, H, W).

A source (one module per data set, as in torchvision.datasets) returns one ``Dataset``:
the training and test images as uint8 arrays (N, C, H, W), their int64 labels, the class
names, and ``source``, a plain dict that says where the data came from, for the model file
(``{"dataset": "fashion-mnist"}``, ``{"dataset": "folder", "path": ...}``). Problems with
the data itself are ``DataError`` (from ``numpycnn.data``), one line naming the file or
folder at fault; warnings the caller should show (images skipped, say) are returned in
``warnings``, since the library never prints.
"""

from dataclasses import dataclass, field

import numpy as np

from ..data import DataError

__all__ = ["DataError", "Dataset"]


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set ready for training: images uint8 (N, C, H, W), labels int64 (N,)."""

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list
    source: dict
    warnings: tuple = field(default=())

    def __post_init__(self):
        shape = None
        for part in ("train", "test"):
            images = getattr(self, f"{part}_images")
            labels = getattr(self, f"{part}_labels")
            if images.dtype != np.uint8 or images.ndim != 4:
                raise ValueError(
                    f"{self.name}: {part} images must be uint8 (N, C, H, W), "
                    f"got {images.dtype} {images.shape}"
                )
            if shape is not None and images.shape[1:] != shape:
                raise ValueError(
                    f"{self.name}: test images {images.shape[1:]} differ from train's {shape}"
                )
            shape = images.shape[1:]
            if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
                raise ValueError(
                    f"{self.name}: {part} labels must be int64 ({len(images)},), "
                    f"got {labels.dtype} {labels.shape}"
                )
            if labels.size and not 0 <= labels.min() <= labels.max() < len(self.class_names):
                raise ValueError(
                    f"{self.name}: {part} labels outside 0..{len(self.class_names) - 1}"
                )
        if shape[0] not in (1, 3):
            raise ValueError(f"{self.name}: images must have 1 or 3 channels, got {shape[0]}")
        if not all(isinstance(name, str) for name in self.class_names):
            raise ValueError(f"{self.name}: class names must be strings")

    @property
    def input_shape(self):
        """One image's (C, H, W)."""
        return tuple(int(s) for s in self.train_images.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)

    def __repr__(self):
        c, h, w = self.input_shape
        return (
            f"Dataset({self.name!r}, {len(self.train_images)} train + "
            f"{len(self.test_images)} test images {c}x{h}x{w}, {self.num_classes} classes)"
        )
