"""The engine additions for the model zoo: the LeNet appendix's half sum-of-squares loss
(seed 003, eq. A.1) and its fan-sum uniform initialiser (A.3.1, Table A.1)."""

import math

import numpy as np
import pytest

from numpycnn.config import Config
from numpycnn.engine import Sequential, gradcheck, init, losses

LOSS = "half_sum_squared_error"
INIT = "fan_sum_uniform"

#: Table A.1 of the appendix: weight shape -> (fan_in, fan_out, z as printed).
TABLE_A1 = {
    (6, 1, 5, 5): (25, 150, 0.0756),  # C1
    (12, 6, 5, 5): (150, 300, 0.0471),  # C2
    (10, 192): (192, 10, 0.0704),  # FC1
}


# ----- the loss -----


def test_loss_value_by_hand():
    """Two samples: (0.2^2 + 0.1^2 + 0.1^2) / 2 = 0.03 and (0.5^2 + 0.5^2) / 2 = 0.25."""
    out = np.array([[0.2, 0.9, 0.1], [0.5, 0.0, 0.5]])
    loss = losses.get(LOSS)
    assert loss.forward(out, np.array([1, 0])) == pytest.approx((0.03 + 0.25) / 2)


def test_loss_gradient_is_error_over_batch():
    """dL/dout = (out - onehot) / N: the appendix's O - T per image, averaged."""
    rng = np.random.default_rng(0)
    out = rng.uniform(0, 1, (4, 10))
    labels = np.array([3, 0, 9, 3])
    loss = losses.get(LOSS)
    loss.forward(out, labels)
    target = np.eye(10)[labels]
    np.testing.assert_allclose(loss.backward(), (out - target) / 4, rtol=1e-15)


def test_loss_is_mse_scaled_by_half_the_classes():
    rng = np.random.default_rng(1)
    out = rng.standard_normal((5, 10))
    labels = rng.integers(0, 10, 5)
    half, mse = losses.get(LOSS), losses.get("mean_squared_error")
    assert half.forward(out, labels) == pytest.approx(5 * mse.forward(out, labels), rel=1e-12)
    np.testing.assert_allclose(half.backward(), 5 * mse.backward(), rtol=1e-12)


@pytest.mark.parametrize("scale", [0.3, 1.0, 5.0])
def test_loss_gradcheck(scale):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((6, 10)) * scale
    labels = rng.integers(0, 10, 6)
    assert gradcheck.check_loss(losses.get(LOSS), z, labels) < 1e-8


def test_loss_zero_at_the_targets():
    labels = np.array([2, 7])
    loss = losses.get(LOSS)
    assert loss.forward(np.eye(10)[labels], labels) == 0
    assert not loss.backward().any()


def test_loss_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    z = rng.uniform(0, 1, (7, 10))
    labels = rng.integers(0, 10, 7)
    loss = losses.get(LOSS)
    value = loss.forward(z, labels)
    grad = loss.backward()
    zt = torch.tensor(z, requires_grad=True)
    onehot = torch.nn.functional.one_hot(torch.tensor(labels), 10).to(torch.float64)
    expected = 0.5 * torch.nn.functional.mse_loss(zt, onehot, reduction="sum") / len(labels)
    expected.backward()
    assert value == pytest.approx(expected.item(), rel=1e-12)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-12)


# ----- the initialiser -----


@pytest.mark.parametrize("shape", sorted(TABLE_A1))
def test_fans_and_bound_of_table_a1(shape):
    """The appendix's fans are init.fans's, and give the z it prints."""
    fan_in, fan_out, printed = TABLE_A1[shape]
    assert init.fans(shape) == (fan_in, fan_out)
    z = math.sqrt(1 / (fan_in + fan_out))
    assert round(z, 4) == printed
    rng = np.random.default_rng(4)
    draws = np.stack([init.fan_sum_uniform(shape, rng) for _ in range(200)])
    assert draws.shape == (200, *shape)
    assert np.abs(draws).max() <= z
    assert np.abs(draws).max() > 0.999 * z  # the whole interval is used, not a narrower one


@pytest.mark.parametrize("shape", [(64, 32, 3, 3), (300, 200)])
def test_uniform_statistics(shape):
    fan_in, fan_out = init.fans(shape)
    z = math.sqrt(1 / (fan_in + fan_out))
    w = init.fan_sum_uniform(shape, np.random.default_rng(5))
    assert w.std() == pytest.approx(z / math.sqrt(3), rel=0.02)  # variance of U[-z, z]
    assert abs(w.mean()) < 0.02 * z
    # a sixth of Glorot's variance: the same rule with 1 in place of 6
    g = init.glorot_uniform(shape, np.random.default_rng(5))
    assert w.var() == pytest.approx(g.var() / 6, rel=1e-9)


def test_seeded_draws_repeat():
    a = init.fan_sum_uniform((12, 6, 5, 5), np.random.default_rng(6))
    b = init.fan_sum_uniform((12, 6, 5, 5), np.random.default_rng(6))
    c = init.fan_sum_uniform((12, 6, 5, 5), np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_lenet_network_initialised_as_the_appendix():
    """The appendix's network built with the initialiser: weights within Table A.1's bounds,
    zero biases, and its parameter count (156 + 1,812 + 1,930)."""
    model = Sequential(
        [
            {"type": "conv2d", "filters": 6, "kernel": 5},
            {"type": "sigmoid"},
            {"type": "avgpool2d", "size": 2},
            {"type": "conv2d", "filters": 12, "kernel": 5},
            {"type": "sigmoid"},
            {"type": "avgpool2d", "size": 2},
            {"type": "flatten"},
            {"type": "dense", "units": 10},
            {"type": "sigmoid"},
        ],
        loss=LOSS,
        init=INIT,
        dtype="float64",
    )
    assert model.num_params == 3898
    weights = [p for name, p in zip(model.param_names, model.params) if name[0] in "fw"]
    biases = [p for name, p in zip(model.param_names, model.params) if name[0] == "b"]
    for w in weights:
        fan_in, fan_out, _ = TABLE_A1[w.shape]
        z = math.sqrt(1 / (fan_in + fan_out))
        assert np.abs(w).max() <= z
        assert np.abs(w).max() > 0.8 * z
    assert not any(b.any() for b in biases)


# ----- the config schema accepts both -----


def test_config_accepts_loss_and_initialiser():
    config = Config.from_dict({"training": {"loss": LOSS, "init": INIT}})
    assert (config.training.loss, config.training.init) == (LOSS, INIT)
    layer = Config.from_dict(
        {
            "network": [
                {"type": "flatten"},
                {"type": "dense", "units": 10, "init": INIT},
            ]
        }
    )
    assert layer.network[1]["init"] == INIT
