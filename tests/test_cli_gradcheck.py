"""``numpycnn gradcheck``: one line per parameter, non-zero exit above the tolerance."""

import re

import pytest
from cli_helpers import error_line, invoke, write_config

from numpycnn.engine.layers import Dense

LINE = re.compile(r" *(\w+)  (\d\.\d\de[+-]\d\d)  (ok|FAIL)  \((\d+) entries\)")


def parse(stdout):
    """{name: (error, verdict, entries)} of the per-parameter lines, in order."""
    rows = {}
    for line in stdout.splitlines():
        m = LINE.fullmatch(line)
        if m:
            rows[m[1]] = (float(m[2]), m[3], int(m[4]))
    return rows


@pytest.fixture
def tiny(tmp_path):
    return write_config(tmp_path / "tiny.yaml")


def test_default_network_passes(tmp_path):
    result = invoke("gradcheck", "--samples", 3, "--batch", 2)

    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    assert list(rows) == ["f1", "f2", "w3", "w4", "b1", "b2", "b3", "b4"]
    assert all(verdict == "ok" and entries == 3 for _, verdict, entries in rows.values())
    worst = max(error for error, _, _ in rows.values())
    assert worst < 1e-6
    last = result.stdout.splitlines()[-1]
    assert last == f"all 8 parameters within 1e-06 (max relative error {worst:.2e})"


def test_config_network_passes(tiny):
    result = invoke("gradcheck", "--config", tiny, "--samples", 5)

    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    assert list(rows) == ["f1", "w2", "b1", "b2"]
    assert {name: entries for name, (_, _, entries) in rows.items()} == {
        "f1": 5, "w2": 5, "b1": 4, "b2": 5  # b1 has 4 entries only
    }  # fmt: skip
    assert result.stdout.splitlines()[-1].startswith("all 4 parameters within 1e-06")


def test_impossible_tolerance_fails(tiny):
    result = invoke("gradcheck", "-c", tiny, "--tolerance", 0)

    line = error_line(result)
    rows = parse(result.stdout)
    worst = max(error for error, _, _ in rows.values())
    assert line == f"gradient check failed: max relative error {worst:.2e} > 0"
    assert all(verdict == "FAIL" for error, verdict, _ in rows.values() if error > 0)


def test_a_wrong_gradient_is_caught(tiny, monkeypatch):
    backward = Dense.backward

    def wrong_bias_gradient(self, grad):
        out = backward(self, grad)
        self.grads["bias"][...] *= 1.5
        return out

    monkeypatch.setattr(Dense, "backward", wrong_bias_gradient)

    result = invoke("gradcheck", "-c", tiny)

    line = error_line(result)
    rows = parse(result.stdout)
    assert {name for name, (_, verdict, _) in rows.items() if verdict == "FAIL"} == {"b2"}
    assert rows["b2"][0] > 0.1
    assert line.startswith("gradient check failed: max relative error ")


def test_seed_chooses_the_batch_and_entries(tiny):
    outputs = [invoke("gradcheck", "-c", tiny, "--seed", s).stdout for s in (1, 1, 2)]
    assert outputs[0] == outputs[1]
    assert outputs[0] != outputs[2]


def test_bad_config_is_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("network:\n  - {type: conv2d, filter: 8, kernel: 5}\n")

    line = error_line(invoke("gradcheck", "--config", config))

    assert line == (
        f"{config}: unknown key 'network[0].filter' for conv2d (did you mean 'filters'?)"
    )


@pytest.mark.parametrize(
    ("option", "value"), [("--tolerance", "-1"), ("--batch", "0"), ("--samples", "none")]
)
def test_bad_option_values_are_usage_errors(option, value):
    line = error_line(invoke("gradcheck", option, value), code=2)
    assert line.startswith(f"Invalid value for '{option}': ")


def test_batchnorm_and_dropout_network_passes(tmp_path):
    """gradcheck on a config with batch norm and dropout: training mode, a fixed mask."""
    network = [
        {"type": "conv2d", "filters": 3, "kernel": 5},
        {"type": "batchnorm2d"},
        {"type": "relu"},
        {"type": "maxpool2d", "size": 4},
        {"type": "flatten"},
        {"type": "dense", "units": 8},
        {"type": "batchnorm1d", "momentum": 0.3},
        {"type": "relu"},
        {"type": "dropout", "p": 0.5},
        {"type": "dense", "units": 10},
    ]
    config = write_config(tmp_path / "bn.yaml", network=network)
    result = invoke("gradcheck", "--config", config, "--samples", 8)

    assert result.exit_code == 0, result.output
    rows = parse(result.stdout)
    assert list(rows) == ["f1", "g2", "w3", "g4", "w5", "b1", "b2", "b3", "b4", "b5"]
    assert all(verdict == "ok" for _, verdict, _ in rows.values())
