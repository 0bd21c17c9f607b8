"""Kuzushiji-MNIST (Clanuwat et al., ROIS-DS Center for Open Data in the Humanities, 2018):
70,000 grey 28x28 images of ten cursive hiragana, in MNIST's four IDX files.

Mirror: the publishers' site (CODH), the one torchvision names. Each file is verified by
the MD5 of the .gz file that torchvision pins (see ``download``); no network request is
made when the cached files verify. The class names are the romanisations of the
publishers' class map (kmnist_classmap.csv): o, ki, su, tsu, na, ha, ma, ya, re, wo for
the hiragana U+304A, U+304D, U+3059, U+3064, U+306A, U+306F, U+307E, U+3084, U+308C and
U+3092, as torchvision names them too.
"""

from ..data import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS
from .idxfiles import INPUT_SHAPE, load_idx_source

NAME = "kmnist"

#: File name -> MD5 of the published .gz file.
FILES = {
    TRAIN_IMAGES: "bdb82020997e1d708af4cf47b453dcf7",
    TRAIN_LABELS: "e144d726b3acfaa3e44228e80efcd344",
    TEST_IMAGES: "5c965bf0a639b31b8f53240b1b52f4d7",
    TEST_LABELS: "7320c461ea6c1c855c0b718fb2a4b134",
}

DEFAULT_MIRRORS = ["http://codh.rois.ac.jp/kmnist/dataset/kmnist/"]

CLASS_NAMES = ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"]

#: The hiragana each class stands for, by label.
HIRAGANA = ["\u304a", "\u304d", "\u3059", "\u3064", "\u306a", "\u306f", "\u307e", "\u3084",
            "\u308c", "\u3092"]  # fmt: skip

__all__ = ["CLASS_NAMES", "DEFAULT_MIRRORS", "FILES", "HIRAGANA", "INPUT_SHAPE", "NAME", "load"]


def load(data_dir, mirrors=None, progress=None, **transfer):
    """KMNIST from ``<data_dir>/kmnist/``, fetched and verified if needed (arguments as
    ``fashion_mnist.load``)."""
    mirrors = DEFAULT_MIRRORS if mirrors is None else mirrors
    return load_idx_source(NAME, FILES, mirrors, CLASS_NAMES, data_dir, progress, **transfer)
