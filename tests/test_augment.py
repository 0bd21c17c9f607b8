"""Augmentation: the warp's geometry, determinism, and that labels survive it."""

import numpy as np
import pytest

from numpycnn.augment import Augmentation, step_rng, warp
from numpycnn.data import Normalization
from numpycnn.modelfile import load_model

IDENTITY = (0.0, 0.0, 0.0, 1.0)


def moves(n, dx=0.0, dy=0.0, angle=0.0, scale=1.0):
    return np.tile([dx, dy, angle, scale], (n, 1))


def test_no_move_is_the_identity_for_any_shape():
    x = np.random.default_rng(0).random((3, 2, 7, 9)).astype(np.float32)
    out = warp(x, moves(3))
    assert out.dtype == np.float32 and out.shape == x.shape
    np.testing.assert_allclose(out, x, atol=1e-6)


@pytest.mark.parametrize(("dx", "dy"), [(2, 0), (0, -3), (-1, 2)])
def test_whole_pixel_shifts_move_the_image_and_fill_the_gap(dx, dy):
    x = np.random.default_rng(1).random((2, 1, 10, 10)).astype(np.float32)
    out = warp(x, moves(2, dx, dy), fill=-7.0)
    expected = np.full_like(x, -7.0)
    src = x[:, :, max(0, -dy) : 10 - max(0, dy), max(0, -dx) : 10 - max(0, dx)]
    expected[:, :, max(0, dy) : 10 - max(0, -dy), max(0, dx) : 10 - max(0, -dx)] = src
    np.testing.assert_allclose(out, expected, atol=1e-6)


def test_a_quarter_turn_is_rot90_counter_clockwise():
    x = np.random.default_rng(2).random((1, 1, 9, 9)).astype(np.float64)
    out = warp(x, moves(1, angle=np.pi / 2))
    np.testing.assert_allclose(out[0, 0], np.rot90(x[0, 0]), atol=1e-9)


def test_half_pixel_shift_interpolates_neighbours():
    x = np.zeros((1, 1, 5, 5))
    x[0, 0, 2, 2] = 1.0
    out = warp(x, moves(1, dx=0.5))
    np.testing.assert_allclose(out[0, 0, 2, 2:4], [0.5, 0.5])
    assert out.sum() == pytest.approx(1.0)


def test_scaling_up_grows_the_ink_about_the_centre():
    x = np.zeros((1, 1, 21, 21))
    x[0, 0, 8:13, 8:13] = 1.0
    big = warp(x, moves(1, scale=1.4))
    assert big.sum() == pytest.approx(25 * 1.4**2, rel=0.15)
    assert big[0, 0, 10, 10] == 1.0  # the centre stays put


def test_each_image_gets_its_own_move():
    x = np.zeros((2, 1, 6, 6))
    x[:, 0, 2, 2] = 1.0
    out = warp(x, np.array([IDENTITY, (1.0, 0.0, 0.0, 1.0)]))
    assert out[0, 0, 2, 2] == 1.0 and out[1, 0, 2, 3] == 1.0


def test_draws_are_within_limits_and_a_function_of_seed_and_step():
    a = Augmentation(shift=2, rotate=10, scale=0.1)
    p = a.draw(step_rng(0, 5), 1000)
    assert p.shape == (1000, 4)
    assert np.abs(p[:, :2]).max() <= 2 and np.abs(p[:, :2]).max() > 1.9
    assert np.abs(p[:, 2]).max() <= np.radians(10)
    assert 0.9 <= p[:, 3].min() and p[:, 3].max() <= 1.1
    np.testing.assert_array_equal(p, a.draw(step_rng(0, 5), 1000))
    assert not np.array_equal(p, a.draw(step_rng(0, 6), 1000))
    assert not np.array_equal(p, a.draw(step_rng(1, 5), 1000))


def test_a_batch_comes_out_the_same_however_it_is_split():
    """What data-parallel workers rely on: warping shares gives the whole batch's result."""
    a = Augmentation(shift=2, rotate=10, scale=0.1, fill=-0.4)
    x = np.random.default_rng(3).random((10, 1, 28, 28)).astype(np.float32)
    p = a.draw(step_rng(0, 0), 10)
    whole = a.apply(x, p)
    parts = np.concatenate([a.apply(x[:3], p[:3]), a.apply(x[3:], p[3:])])
    np.testing.assert_array_equal(whole, parts)


@pytest.mark.parametrize(
    "kwargs",
    [{"shift": -1}, {"shift": 513}, {"rotate": 181}, {"scale": 1.0}, {"scale": -0.1}]
    + [{"flip": 1.5}],
)
def test_limits_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        Augmentation(**kwargs)


def test_moved_digits_keep_their_label(mnist, reference_params_path):
    """The reference's trained parameters classify moved test digits about as well as the
    originals: the moves preserve what the digit is."""
    saved = load_model(reference_params_path)
    norm = Normalization.from_dict(saved.normalization)
    x = norm.norm(mnist.test_images[:500])
    y = mnist.test_labels[:500]
    a = Augmentation(
        shift=2, rotate=10, scale=0.1, fill=float(norm.norm(np.zeros((1, 1)))[0, 0, 0, 0])
    )
    moved = a.apply(x, a.draw(step_rng(0, 0), len(x)))
    plain = saved.model.predict(x)
    shifted = saved.model.predict(moved)
    assert (plain == y).mean() > 0.97
    assert (shifted == plain).mean() > 0.9  # measured: about 0.95 for the reference's net
    assert not np.allclose(moved, x)
