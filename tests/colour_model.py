"""A colour model for the inspector's tests: a folder of small RGB PNGs in three classes
(written here, read by the folder source) and a network trained on it for a few steps,
saved with its data source and class names."""

import numpy as np
from PIL import Image

from numpycnn import datasets
from numpycnn.data import Normalization
from numpycnn.engine import Sequential, optim
from numpycnn.modelfile import save_model

SHAPE = (3, 16, 16)
CLASSES = ("apple", "grass", "sky")
NETWORK = [
    {"type": "conv2d", "filters": 4, "kernel": 3, "padding": 1},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2, "stride": 2},
    {"type": "flatten"},
    {"type": "dense", "units": len(CLASSES)},
]


def picture(kind, rng, size=24):
    """A size x size RGB picture of class ``kind``: a red disc on white, green stripes,
    a blue sky darkening upwards; each with noise and its own offset."""
    yy, xx = np.mgrid[:size, :size].astype(float)
    noise = rng.normal(0, 12, (size, size, 3))
    if kind == "apple":
        cy, cx = rng.uniform(8, 16, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < rng.uniform(20, 40)
        rgb = np.where(disc[..., None], [200, 30, 30], [245, 245, 240])
    elif kind == "grass":
        stripes = ((xx + rng.integers(0, 4)) // 3) % 2 == 0
        rgb = np.where(stripes[..., None], [40, 160, 50], [90, 200, 80])
    else:
        t = yy / size
        rgb = np.stack([60 + 80 * t, 110 + 80 * t, 230 + 0 * t], axis=-1)
    return np.clip(rgb + noise, 0, 255).astype(np.uint8)


def write_folder(root, per_class=12, seed=0):
    """root/<class>/<i>.png for every class; returns root."""
    rng = np.random.default_rng(seed)
    for kind in CLASSES:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(picture(kind, rng)).save(root / kind / f"{i}.png")
    return root


def colour_model(tmp_path, steps=40):
    """(model file, Dataset, source dict) of a colour network trained ``steps`` full-batch
    Adam steps on a folder written under ``tmp_path``."""
    root = write_folder(tmp_path / "pictures")
    source = {"dataset": "folder", "path": str(root), "input_shape": list(SHAPE)}
    ds = datasets.load(source, tmp_path / "data")
    norm = Normalization.fit("standard", ds.train_images)
    net = Sequential(NETWORK, input_shape=SHAPE, init="he_normal", seed=0)
    x = norm.norm(ds.train_images)  # per-channel statistics for colour
    adam = optim.get("adam", lr=0.01)
    for _ in range(steps):
        net.train_step(x, ds.train_labels, adam)
    path = tmp_path / "colour.pkl"
    save_model(path, net, norm, data_source=ds.source, class_names=ds.class_names)
    return path, ds, source
