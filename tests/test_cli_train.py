"""``numpycnn train``: options, output, checkpoints, resume, Ctrl-C, divergence and errors."""

import math
import re
import signal
import subprocess
import sys
import time
import types

import pytest
from cli_helpers import (
    TINY_PARAMS,
    FakeTerminal,
    error_line,
    fake_mnist,
    invoke,
    last_json,
    malicious_pickle,
    same_params,
    tiny_config,
)

from numpycnn import data
from numpycnn.config import DEFAULT_RECIPE, Config
from numpycnn.data import Normalization
from numpycnn.engine import Sequential
from numpycnn.modelfile import load_model, save_model

EPOCH_LINE = re.compile(
    r"epoch (\d+)/(\d+)  loss \d+\.\d{4}  train acc \d+\.\d\d%  val acc (-|\d+\.\d\d%)  "
    r"\d+\.\d s  \(checkpoint (.+)\)"
)


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


@pytest.fixture
def loader(monkeypatch, mnist_dir):
    return fake_mnist(monkeypatch, mnist_dir)


def test_train_prints_epochs_and_saves_model_and_checkpoints(tmp_path, mnist_dir, loader):
    config = tiny_config(tmp_path, epochs=2, limit=300, validation=100, batch_size=50)

    result = invoke(
        "train", "--config", config, "--data-dir", tmp_path / "d", "--mirror", mnist_dir
    )

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"training {TINY_PARAMS:,} parameters on 300 images (100 for validation), "
        "2 epoch(s) of 6 batches, adam lr 0.01"
    )
    epochs = [EPOCH_LINE.fullmatch(line) for line in lines[1:3]]
    assert all(epochs), lines
    assert [m.group(1, 2) for m in epochs] == [("1", "2"), ("2", "2")]
    assert all(m.group(3) != "-" for m in epochs)  # validation accuracy is reported
    checkpoints = [tmp_path / "ck" / "epoch-001.pkl", tmp_path / "ck" / "epoch-002.pkl"]
    assert [m.group(4) for m in epochs] == [str(p) for p in checkpoints]
    for epoch, path in enumerate(checkpoints, 1):
        assert load_model(path).checkpoint["epoch"] == epoch

    saved = load_model(tmp_path / "out.pkl")  # the config's output.params
    assert saved.checkpoint is None
    assert saved.metrics["epochs"] == 2 and len(saved.cost) == 12
    accuracy = saved.metrics["test_accuracy"]
    assert lines[3:] == [
        f"test accuracy {100 * accuracy:.2f}% ({round(accuracy * 10000)}/10000); "
        f"saved the model to {tmp_path / 'out.pkl'}"
    ]
    assert accuracy > 0.3  # it learnt something (chance: 0.1)
    assert loader.calls == [(tmp_path / "d", [str(mnist_dir)])]


def test_options_override_the_config(tmp_path, loader):
    config = tiny_config(tmp_path, epochs=3, limit=300, batch_size=50, seed=1)
    out = tmp_path / "other.pkl"

    result = invoke(
        "train", "--config", config, "--epochs", 1, "--batch-size", 64, "--lr", 0.005,
        "--seed", 7, "--limit", 200, "--out", out,
        "--data-dir", tmp_path / "d", "--mirror", "first/", "--mirror", "second/",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].endswith(
        "on 200 images (0 for validation), 1 epoch(s) of 4 batches, adam lr 0.005"
    )
    saved = load_model(out)
    stored = saved.config
    assert stored["training"]["epochs"] == 1
    assert stored["training"]["batch_size"] == 64
    assert stored["training"]["seed"] == 7
    assert stored["training"]["optimizer"] == {"name": "adam", **stored_adam(0.005)}
    assert stored["data"]["limit"] == 200
    assert stored["output"]["params"] == str(out)
    assert len(saved.cost) == math.ceil(200 / 64)
    assert not (tmp_path / "out.pkl").exists()  # the config's params path was overridden
    assert loader.calls == [(tmp_path / "d", ["first/", "second/"])]  # mirrors in order


def stored_adam(lr):
    """Adam's hyperparameters with defaults filled in, as the config stores them."""
    return {**Config().training.optimizer.hyperparameters, "lr": lr}


def test_seed_decides_the_result(tmp_path, loader):
    config = tiny_config(tmp_path, limit=200)
    runs = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        runs[name] = tmp_path / f"{name}.pkl"
        result = invoke("train", "-c", config, "--seed", seed, "--out", runs[name], "-q")
        assert result.exit_code == 0, result.output

    assert same_params(runs["a"], runs["b"])
    assert not same_params(runs["a"], runs["c"])


def test_without_config_trains_the_reference_network(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir, test_limit=200)  # the 105,634-parameter network
    monkeypatch.chdir(tmp_path)

    result = invoke("train", "--epochs", 1, "--limit", 64, "--batch-size", 32)

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        "training 105,634 parameters on 64 images (5,000 for validation), "
        "1 epoch(s) of 2 batches, adam lr 0.002"
    )
    assert "/200); saved the model to params.pkl" in result.stdout
    saved = load_model(tmp_path / "params.pkl")  # default output.params, in the cwd
    expected = DEFAULT_RECIPE.with_overrides(epochs=1, limit=64, batch_size=32)
    assert saved.config == expected.to_dict()
    assert (tmp_path / "checkpoints" / "epoch-001.pkl").is_file()


def test_json_prints_one_summary_object(tmp_path, loader):
    config = tiny_config(tmp_path, epochs=2, limit=200, validation=100)
    out = tmp_path / "model.pkl"

    result = invoke("train", "-c", config, "--out", out, "--json")

    assert result.exit_code == 0, result.output
    summary = last_json(result)  # no header, no epoch lines: just the JSON
    assert set(summary) == {
        "params", "test_accuracy", "val_accuracy", "train_loss", "seconds", "epochs"
    }  # fmt: skip
    assert summary["params"] == str(out)
    assert summary["epochs"] == 2
    assert 0 <= summary["val_accuracy"] <= 1 and 0 <= summary["test_accuracy"] <= 1
    assert summary["train_loss"] > 0 and summary["seconds"] > 0
    assert {k: v for k, v in summary.items() if k != "params"} == load_model(out).metrics


@pytest.mark.parametrize("quiet", [False, True])
def test_progress_bar_on_a_terminal_unless_quiet(tmp_path, loader, monkeypatch, quiet):
    terminal = FakeTerminal()
    monkeypatch.setattr("numpycnn.cli.options.sys", types.SimpleNamespace(stderr=terminal))
    config = tiny_config(tmp_path, limit=200, batch_size=50)

    result = invoke("train", "-c", config, *(["--quiet"] if quiet else []))

    assert result.exit_code == 0, result.output
    assert EPOCH_LINE.fullmatch(result.stdout.splitlines()[-2])  # epoch lines either way
    if quiet:
        assert terminal.getvalue() == ""
        assert not result.stdout.startswith("training ")
    else:
        assert "train: 100%" in terminal.getvalue() and "4/4" in terminal.getvalue()
        assert result.stdout.startswith(f"training {TINY_PARAMS:,} parameters")


# ----- resuming -----


def test_resume_from_an_epoch_checkpoint_gives_the_uninterrupted_result(tmp_path, loader):
    straight = tmp_path / "straight.pkl"
    config = tiny_config(tmp_path, epochs=2, limit=300, params="straight.pkl")
    assert invoke("train", "-c", config, "-q").exit_code == 0

    resumed = tmp_path / "resumed.pkl"
    result = invoke("train", "--resume", tmp_path / "ck" / "epoch-001.pkl", "--out", resumed)

    assert result.exit_code == 0, result.output
    assert [m.group(1, 2) for m in map(EPOCH_LINE.fullmatch, result.stdout.splitlines()) if m] == [
        ("2", "2")
    ]
    assert same_params(straight, resumed)
    a, b = load_model(straight), load_model(resumed)
    assert a.cost == b.cost and a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
    assert b.config["output"]["params"] == str(resumed)


def test_resume_with_more_epochs_continues_the_run(tmp_path, loader):
    two = tiny_config(tmp_path, "two.yaml", epochs=2, params="two.pkl", checkpoint_dir="ck2")
    one = tiny_config(tmp_path, "one.yaml", epochs=1, params="one.pkl", checkpoint_dir="ck1")
    assert invoke("train", "-c", two, "-q").exit_code == 0
    assert invoke("train", "-c", one, "-q").exit_code == 0

    out = tmp_path / "extended.pkl"
    result = invoke(
        "train", "--resume", tmp_path / "ck1" / "epoch-001.pkl", "--epochs", 2, "--out", out,
        "--json", "--data-dir", tmp_path / "d", "--mirror", "m/",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert last_json(result)["epochs"] == 2
    assert same_params(tmp_path / "two.pkl", out)
    assert (tmp_path / "ck1" / "epoch-002.pkl").is_file()  # the checkpoint's own directory
    assert loader.calls[-1] == (tmp_path / "d", ["m/"])


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resumes_exactly(tmp_path, mnist_dir, loader):
    """A real SIGINT to a training process, after its first epoch's checkpoint."""
    epochs = 8
    config = tiny_config(tmp_path, epochs=epochs, limit=1000, batch_size=10, params="never.pkl")
    checkpoints = tmp_path / "ck"
    command = [
        sys.executable, "-m", "numpycnn.cli.main", "train", "--config", str(config), "--quiet",
        "--data-dir", str(tmp_path / "data"), "--mirror", str(mnist_dir),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (checkpoints / "epoch-001.pkl").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    interrupted = checkpoints / "interrupted.pkl"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        f"interrupted: checkpoint saved to {interrupted}; "
        f"continue with numpycnn train --resume {interrupted}"
    )
    assert stdout.startswith("epoch 1/8")
    assert 1 <= load_model(interrupted).checkpoint["epoch"] < epochs  # stopped mid-run
    assert not (tmp_path / "never.pkl").exists()  # no params file from an interrupted run

    resumed = tmp_path / "resumed.pkl"
    result = invoke("train", "--resume", interrupted, "--out", resumed, "-q")
    assert result.exit_code == 0, result.output
    straight = tiny_config(
        tmp_path, "straight.yaml", epochs=epochs, limit=1000, batch_size=10,
        params="straight.pkl", checkpoint_dir="ck-straight",
    )  # fmt: skip
    assert invoke("train", "-c", straight, "-q").exit_code == 0
    assert same_params(resumed, tmp_path / "straight.pkl")
    assert load_model(resumed).cost == load_model(tmp_path / "straight.pkl").cost


# ----- divergence -----


def test_divergence_stops_with_a_message_and_keeps_the_old_params(tmp_path, loader):
    config = tiny_config(tmp_path, limit=300, optimizer={"name": "sgd", "lr": 1e6})
    out = tmp_path / "params.pkl"
    out.write_bytes(b"an earlier, good model")

    result = invoke("train", "-c", config, "--out", out)

    line = error_line(result)
    assert re.fullmatch(
        r"training diverged: the loss became (nan|inf) at epoch 1, batch \d+: "
        r"lower the learning rate; nothing was saved",
        line,
    ), line
    assert out.read_bytes() == b"an earlier, good model"
    assert not (tmp_path / "ck").exists()  # no checkpoint of a diverged epoch


# ----- bad input -----


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training:\n  epoch: 2\n", "unknown key 'training.epoch' (did you mean 'epochs'?)"),
        (
            "training:\n  batch_size: big\n",
            "training.batch_size: expected an integer >= 1, got 'big'",
        ),
        ("data:\n  limit: 1.5\n", "data.limit: expected an integer from 1 to 60000 or null"),
        (
            "training:\n  optimizer: {name: adam, lr: fast}\n",
            "training.optimizer.lr: expected a number, got 'fast'",
        ),
        ("trainning:\n  epochs: 2\n", "unknown section 'trainning' (did you mean 'training'?)"),
        (
            "training:\n  epochs: [1, 2\n  seed: 3\n",
            "line 3, column 7: expected ',' or ']', but got ':'",
        ),
    ],
    ids=["unknown-key", "wrong-type", "float-for-int", "wrong-number", "unknown-section", "yaml"],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, text, message):
    config = tmp_path / "bad.yaml"
    config.write_text(text)

    line = error_line(invoke("train", "--config", config))

    assert line.startswith(f"{config}: ") and message in line, line


def test_missing_and_unknown_format_config_files(tmp_path):
    missing = tmp_path / "missing.yaml"
    assert error_line(invoke("train", "-c", missing)) == f"{missing}: no such file"
    other = tmp_path / "config.json"
    other.write_text("{}")
    assert error_line(invoke("train", "-c", other)) == (
        f"{other}: unknown config format '.json' (expected .yaml, .yml, .ini)"
    )


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--epochs", "0"),
        ("--batch-size", "many"),
        ("--lr", "0"),
        ("--limit", "-5"),
        ("--seed", "x"),
    ],
)
def test_bad_option_values_are_usage_errors(option, value):
    line = error_line(invoke("train", option, value), code=2)
    assert line.startswith(f"Invalid value for '{option}': ")


@pytest.mark.parametrize(
    "extra",
    [["--config", "c.yaml"], ["--lr", "0.1"], ["--seed", "2"], ["--batch-size", "8"],
     ["--limit", "10"]],
)  # fmt: skip
def test_resume_refuses_options_that_would_change_the_run(tmp_path, extra):
    line = error_line(invoke("train", "--resume", tmp_path / "ck.pkl", *extra), code=2)
    assert line.startswith("--resume continues a run with its own settings: only --epochs,")


def text_file(path, text):
    path.write_text(text)
    return path


def model_without_checkpoint(path):
    model = Sequential([{"type": "flatten"}, {"type": "dense", "units": 10}])
    save_model(path, model, Normalization("unit", 0.0, 255.0), config=Config().to_dict())
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "no such file"),
        (model_without_checkpoint, "a trained model, not a training checkpoint"),
        (lambda p: text_file(p, "not a pickle"), "not a valid pickle"),
        (
            lambda p: malicious_pickle(p, p.with_name("marker")),
            "refused global 'pathlib.Path.touch'",
        ),
    ],
    ids=["missing", "trained-model", "text", "malicious"],
)
def test_resume_of_something_else_is_one_line_naming_it(tmp_path, make, message):
    path = make(tmp_path / "checkpoint.pkl")

    line = error_line(invoke("train", "--resume", path))

    assert line == f"{path}: {message}" or line.startswith(f"{path}: {message}"), line
    assert not (tmp_path / "marker").exists()
