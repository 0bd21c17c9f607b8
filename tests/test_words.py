"""Messages take 'a' or 'an' by sound: 'it holds an int' (it said 'a int'), 'an 8x8 input'."""

import pickle

import pytest

from numpycnn.config import ConfigError, load_config
from numpycnn.modelfile import ModelFileError, load_model
from numpycnn.words import a


@pytest.mark.parametrize(
    "word, expected",
    [
        ("int", "an int"),
        ("dict", "a dict"),
        ("list", "a list"),
        ("ndarray", "an ndarray"),
        ("uint8", "a uint8"),
        ("object", "an object"),
        ("NoneType", "a NoneType"),
        ("8x8", "an 8x8"),
        ("11x11", "an 11x11"),
        ("18x18", "an 18x18"),
        ("80x80", "an 80x80"),
        ("28x28", "a 28x28"),
        ("110x110", "a 110x110"),
        ("1x1", "a 1x1"),
    ],
)
def test_the_article_follows_the_sound(word, expected):
    assert a(word) == expected


def test_a_model_file_holding_an_int_says_so(tmp_path):
    path = tmp_path / "number.pkl"
    path.write_bytes(pickle.dumps(7))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(info.value) == f"{path}: not a numpycnn model file (it holds an int)"


def test_a_window_that_does_not_fit_an_8x8_input(tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text(
        "network:\n  - {type: conv2d, filters: 4, kernel: 5, stride: 3}\n"
        "  - {type: conv2d, filters: 4, kernel: 9}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "conv2d kernel 9 (padding 0) does not fit an 8x8 input" in str(info.value)
