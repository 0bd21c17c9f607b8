"""The sample digits in samples/: ten small photos-of-paper images, 0-9, drawn by
scripts/make_samples.py (not MNIST's own), that a trained network reads as their digits."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import numpycnn

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = [ROOT / "samples" / f"{digit}.png" for digit in range(10)]
#: Measured: all ten are read right by the 2018 reference's published parameters, by the
#: default recipe's models trained with 1 and 2 workers (confidence 99% to 100%), and by
#: the default recipe after one epoch of 5,000 images (the fallback below).
READ_RIGHT = 10


def test_ten_small_colour_images_of_several_sizes():
    assert sorted(p.name for p in (ROOT / "samples").glob("*.png")) == [p.name for p in SAMPLES]
    sizes = set()
    for path in SAMPLES:
        assert path.stat().st_size < 40_000, path
        with Image.open(path) as image:
            assert image.mode == "RGB"  # a photo, not a 28x28 grey MNIST image
            assert min(image.size) >= 64
            sizes.add(image.size)
            pixels = np.asarray(image, dtype=float)
        # dark ink on off-white paper: a light border, a few dark strokes
        assert pixels[0].mean() > 180 and pixels.min() < 100
    assert len(sizes) >= 4


def test_the_script_draws_them(tmp_path):
    """make_samples.py with its default seed gives these images again (up to rounding in
    Pillow's resampling across versions)."""
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_samples.py"), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for path in SAMPLES:
        with Image.open(path) as shipped, Image.open(tmp_path / path.name) as drawn:
            assert shipped.size == drawn.size
            diff = np.abs(np.asarray(shipped, float) - np.asarray(drawn, float))
            assert diff.mean() < 1, path.name


@pytest.fixture(scope="module")
def reader(request, tmp_path_factory):
    """A trained network: the 2018 reference's parameters when they are beside the project,
    else the default recipe trained here on 5,000 real MNIST images for one epoch."""
    reference = ROOT.parent / "shared" / "reference" / "escontrela-params.pkl"
    if reference.is_file():
        return numpycnn.load(reference)
    mnist_dir = request.getfixturevalue("mnist_dir")
    where = tmp_path_factory.mktemp("reader")
    result = numpycnn.train(
        "default", epochs=1, limit=5000, mirrors=[str(mnist_dir)], data_dir=where / "data",
        runs_dir=where / "runs", out=where / "small.pkl", workers=1,
    )  # fmt: skip
    return numpycnn.load(result.params)


def test_a_trained_network_reads_them(reader):
    predicted = reader.predict(SAMPLES)
    right = int((predicted == np.arange(10)).sum())
    assert right >= READ_RIGHT, f"read {predicted.tolist()} for 0-9"
