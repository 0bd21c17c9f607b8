"""Normalisation strategies and the training/validation split."""

import json

import numpy as np
import pytest

from numpycnn import data
from numpycnn.data import NORMALIZATIONS, Normalization, read_idx, split_train


@pytest.fixture(scope="module")
def train_images(mnist_dir):
    return read_idx(mnist_dir / data.TRAIN_IMAGES)


@pytest.fixture
def pixels():
    return np.random.default_rng(0).integers(0, 256, size=(50, 28, 28), dtype=np.uint8)


def test_reference_statistics_of_the_first_50000_training_images(train_images):
    """SPEC.md: the reference's truncated training mean and std are 33 and 78."""
    norm = Normalization.fit("reference", train_images[:50000])
    assert (norm.mean, norm.std) == (33.0, 78.0)


def test_standard_uses_the_exact_float_statistics(pixels):
    norm = Normalization.fit("standard", pixels)
    as_float = pixels.astype(np.float64)
    assert norm.mean == pytest.approx(as_float.mean(), rel=1e-12)
    assert norm.std == pytest.approx(as_float.std(), rel=1e-12)


def test_reference_truncates_the_statistics():
    images = np.array([[[0, 1], [4, 5]]], dtype=np.uint8)  # mean 2.5, std 2.06
    norm = Normalization.fit("reference", images)
    assert (norm.mean, norm.std) == (2.0, 2.0)


def test_unit_scales_to_zero_one(pixels):
    norm = Normalization.fit("unit", pixels)
    out = norm.norm(np.array([[0, 51], [255, 102]], dtype=np.uint8))
    expected = np.array([[0.0, 0.2], [1.0, 0.4]], dtype=np.float32)
    np.testing.assert_array_equal(out[0, 0], expected)


@pytest.mark.parametrize("strategy", NORMALIZATIONS)
def test_norm_gives_float32_channels_first(pixels, strategy):
    norm = Normalization.fit(strategy, pixels)
    before = pixels.copy()

    batch = norm.norm(pixels)
    single = norm.norm(pixels[3])

    assert batch.shape == (50, 1, 28, 28) and batch.dtype == np.float32
    assert single.shape == (1, 1, 28, 28)
    np.testing.assert_array_equal(single[0], batch[3])
    expected = (pixels.astype(np.float64) - norm.mean) / norm.std
    np.testing.assert_allclose(batch[:, 0], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(pixels, before)


def test_norm_rejects_other_shapes(pixels):
    norm = Normalization.fit("unit", pixels)
    with pytest.raises(ValueError, match=r"\(50, 1, 1, 28, 28\)"):
        norm.norm(pixels[:, None, None])


@pytest.mark.parametrize(
    ("strategy", "images", "message"),
    [
        ("zscore", np.zeros((1, 2, 2), np.uint8), "unknown normalization 'zscore'"),
        ("standard", np.zeros((1, 2, 2)), "needs uint8 images, got float64"),
        ("standard", np.zeros((0, 28, 28), np.uint8), "needs uint8 images"),
        ("standard", np.full((2, 2, 2), 7, np.uint8), "std must be finite and > 0, got 0.0"),
    ],
)
def test_fit_rejects(strategy, images, message):
    with pytest.raises(ValueError, match=message):
        Normalization.fit(strategy, images)


@pytest.mark.parametrize("strategy", NORMALIZATIONS)
def test_dict_round_trip(pixels, strategy):
    norm = Normalization.fit(strategy, pixels)
    stored = json.loads(json.dumps(norm.to_dict()))
    assert Normalization.from_dict(stored) == norm


@pytest.mark.parametrize(
    ("d", "message"),
    [
        ({"strategy": "unit", "mean": 0.0}, "missing key.*std"),
        ({"strategy": "minmax", "mean": 0.0, "std": 1.0}, "unknown normalization 'minmax'"),
        ({"strategy": "standard", "mean": "a", "std": 1.0}, "must be numbers"),
        ({"strategy": "standard", "mean": 0.0, "std": -1.0}, "std must be finite and > 0"),
        ({"strategy": "standard", "mean": float("nan"), "std": 1.0}, "mean must be finite"),
        (["unit", 0, 255], "must be a mapping"),
    ],
)
def test_from_dict_rejects(d, message):
    with pytest.raises(ValueError, match=message):
        Normalization.from_dict(d)


@pytest.fixture
def numbered():
    """Images whose only pixel value is their index, so every slice can be checked."""
    images = np.arange(100, dtype=np.uint8)[:, None, None] * np.ones((1, 2, 2), np.uint8)
    return images, np.arange(100) % 10


def test_split_limit_and_validation(numbered):
    images, labels = numbered
    train_x, train_y, val_x, val_y = split_train(images, labels, limit=60, validation=25)

    assert train_x[:, 0, 0].tolist() == list(range(60))
    assert val_x[:, 0, 0].tolist() == list(range(60, 85))
    np.testing.assert_array_equal(train_y, labels[:60])
    np.testing.assert_array_equal(val_y, labels[60:85])


def test_split_without_limit_trains_on_all_but_the_validation_images(numbered):
    images, labels = numbered
    train_x, _, val_x, _ = split_train(images, labels, validation=10)
    assert (len(train_x), len(val_x)) == (90, 10)
    assert val_x[0, 0, 0] == 90

    train_x, _, val_x, val_y = split_train(images, labels)
    assert (len(train_x), len(val_x), len(val_y)) == (100, 0, 0)


@pytest.mark.parametrize(
    ("limit", "validation", "message"),
    [
        (90, 11, "limit 90 plus validation 11 exceeds the 100 training images"),
        (101, 0, "limit 101 plus validation 0 exceeds"),
        (0, 0, "limit must be >= 1"),
        (None, 100, "validation 100 leaves none of the 100 images to train on"),
        (10, -1, "validation must be >= 0"),
    ],
)
def test_split_rejects(numbered, limit, validation, message):
    images, labels = numbered
    with pytest.raises(ValueError, match=message):
        split_train(images, labels, limit=limit, validation=validation)


def test_split_rejects_mismatched_labels(numbered):
    images, labels = numbered
    with pytest.raises(ValueError, match="100 images but 99 labels"):
        split_train(images, labels[:99])
