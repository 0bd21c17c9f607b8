"""A network whose layers do not fit together is a one-line config error that names the layer
at fault, what it needs and what the layer before it gives (never a bare unpacking error)."""

import pytest

from numpycnn.config import ConfigError, load_config
from numpycnn.engine import Sequential

CONV = "{type: conv2d, filters: 8, kernel: 5}"
POOL = "{type: maxpool2d, size: 2}"
DENSE = "{type: dense, units: 128}"
CLASSES = "{type: dense, units: 10}"


def error_of(path):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


@pytest.mark.parametrize(
    "layers, expected",
    [
        (
            ["{type: flatten}", DENSE, CONV, CLASSES],
            "network[2] (conv2d) needs an input of channels x height x width, but network[1] "
            "(dense) gives 128 values",
        ),
        (
            [CONV, "{type: flatten}", POOL, CLASSES],
            "network[2] (maxpool2d) needs an input of channels x height x width, but network[1] "
            "(flatten) gives 4,608 values",
        ),
        (
            ["{type: flatten}", "{type: relu}", "{type: avgpool2d, size: 2}", CLASSES],
            "network[2] (avgpool2d) needs an input of channels x height x width, but network[1] "
            "(relu) gives 784 values",
        ),
        (
            [CONV, "{type: relu}", CLASSES],
            "network[2] (dense) needs a flat input, but network[1] (relu) gives 8x24x24 "
            "(channels x height x width): add a flatten layer before it",
        ),
        (
            [CONV, POOL, "{type: conv2d, filters: 8, kernel: 13}", "{type: flatten}", CLASSES],
            "network[2] (conv2d): conv2d kernel 13 (padding 0) does not fit a 12x12 input, "
            "which network[1] (maxpool2d) gives",
        ),
        (
            ["{type: conv2d, filters: 8, kernel: 29}", "{type: flatten}", CLASSES],
            "network[0] (conv2d): conv2d kernel 29 (padding 0) does not fit a 28x28 input, "
            "which the 1x28x28 MNIST image gives",
        ),
        (
            [CONV, "{type: maxpool2d, size: 30}", "{type: flatten}", CLASSES],
            "network[1] (maxpool2d): maxpool2d window 30 does not fit a 24x24 input, which "
            "network[0] (conv2d) gives",
        ),
    ],
)
def test_layers_that_do_not_fit_are_named_in_the_configs_words(tmp_path, layers, expected):
    path = tmp_path / "net.yaml"
    path.write_text("network:\n" + "".join(f"  - {layer}\n" for layer in layers))
    assert error_of(path) == f"{path}: {expected}"


def test_ini_files_name_layers_their_way(tmp_path):
    path = tmp_path / "net.ini"
    path.write_text(
        "[layer.1]\ntype = flatten\n[layer.2]\ntype = dense\nunits = 128\n"
        "[layer.3]\ntype = conv2d\nfilters = 8\nkernel = 5\n"
    )
    assert "layer.3 (conv2d) needs an input of channels x height x width, but layer.2 " in (
        error_of(path)
    )


def test_the_engine_says_the_same_outside_a_config():
    with pytest.raises(ValueError) as info:
        Sequential([{"type": "flatten"}, {"type": "dense", "units": 64}, {"type": "maxpool2d"}])
    assert str(info.value) == (
        "layer 3 (maxpool2d) needs an input of channels x height x width, but layer 2 (dense) "
        "gives 64 values"
    )
    with pytest.raises(ValueError, match=r"^layer 1 \(conv2d\) needs .* but the input "):
        Sequential([{"type": "conv2d", "filters": 2, "kernel": 3}], input_shape=(784,))
