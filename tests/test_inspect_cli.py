"""``numpycnn inspect`` as a user runs it: a real process serving on 127.0.0.1 until
Ctrl-C, and ``--save`` writing the figures."""

import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import error_line, invoke
from PIL import Image
from test_inspect_api import image_body, request

from numpycnn.modelfile import load_model, save_model


def start(*args, env=None):
    """``numpycnn inspect ARGS --no-browser`` in its own process; (process, URL line)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "numpycnn.cli.main", "inspect", *map(str, args), "--no-browser"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    line = proc.stdout.readline()
    return proc, line


@pytest.fixture
def seven_png(tmp_path, mnist):
    path = tmp_path / "seven.png"
    Image.fromarray(255 - mnist.test_images[0]).resize((84, 84)).save(path)
    return path


def test_serves_until_ctrl_c_then_exits_0(reference_params_path, seven_png, mnist_dir, tmp_path):
    proc, line = start(reference_params_path, "--mirror", mnist_dir, "--data-dir", tmp_path)
    try:
        assert line.startswith("numpycnn inspect: escontrela-params.pkl at http://127.0.0.1:")
        url = line.split(" at ")[1].split()[0].rstrip("/")
        status, r = request(url + "/api/predict", image_body(seven_png.read_bytes()))
        assert status == 200 and r["predicted"] == 7
        status, r = request(url + "/api/unit", {"pixels": [0] * 784, "layer": 99, "unit": [0]})
        assert status == 400
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    # one line for the bad request, one for stopping
    assert err.splitlines() == ["POST /api/unit: 400 layer 99 is out of range (0 to 8)", "stopped"]


def test_binding_beyond_this_machine_warns(reference_params_path):
    proc, line = start(reference_params_path, "--host", "0.0.0.0")
    try:
        assert " at http://0.0.0.0:" in line
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert err.splitlines()[0] == (
        "Warning: listening on 0.0.0.0: anyone who can reach this address can use the page, "
        "which has no authentication."
    )


def test_a_busy_port_is_one_error_line(reference_params_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = error_line(invoke("inspect", reference_params_path, "--no-browser", "--port", port))
    assert line == f"cannot listen on 127.0.0.1:{port}: Address already in use"


def test_save_writes_the_figures(reference_params_path, seven_png, tmp_path):
    out = tmp_path / "figures"
    result = invoke("inspect", reference_params_path, "--image", seven_png, "--save", out)
    assert result.exit_code == 0, result.output
    names = ["input.png", "activations.png", "saliency.png", "filters.png", "training.png"]
    assert result.stdout.splitlines() == [f"wrote {out / name}" for name in names]
    for name in names:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200
            # a real figure, not a blank canvas
            assert np.asarray(im.convert("L")).std() > 5
    assert not list(out.glob(".*.tmp"))  # written atomically, nothing left behind


def test_save_without_an_image_writes_the_filters_and_training(reference_params_path, tmp_path):
    result = invoke("inspect", reference_params_path, "--save", tmp_path)
    assert result.exit_code == 0, result.output
    assert result.stdout == f"wrote {tmp_path / 'filters.png'}\nwrote {tmp_path / 'training.png'}\n"


def test_the_training_figure_shows_the_cost_and_the_epochs(tmp_path, reference_params_path):
    """--help promises the training cost: training.png has it, and the per-epoch accuracy
    when the model file holds it; a file without any history gets no such figure."""
    saved = load_model(reference_params_path)
    history = [
        {"epoch": 1, "train_loss": 0.3, "train_accuracy": 0.9, "val_accuracy": 0.95},
        {"epoch": 2, "train_loss": 0.1, "train_accuracy": 0.97, "val_accuracy": 0.98},
    ]
    with_epochs = tmp_path / "with-epochs.pkl"
    save_model(with_epochs, saved.model, saved.normalization, cost=saved.cost, history=history)
    bare = tmp_path / "bare.pkl"
    save_model(bare, saved.model, saved.normalization, cost=[])
    sizes = {}
    for path in (reference_params_path, with_epochs):
        out = tmp_path / path.stem
        assert invoke("inspect", path, "--save", out).exit_code == 0
        with Image.open(out / "training.png") as im:
            assert im.format == "PNG" and np.asarray(im.convert("L")).std() > 5
            sizes[path.stem] = im.size
    # the per-epoch panel makes it wider
    assert sizes["with-epochs"][0] > 1.5 * sizes[reference_params_path.stem][0]
    result = invoke("inspect", bare, "--save", tmp_path / "bare")
    assert result.exit_code == 0 and "training.png" not in result.stdout


def test_save_without_matplotlib_names_its_own_option(reference_params_path, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    line = error_line(invoke("inspect", reference_params_path, "--save", tmp_path / "f"))
    assert line == "--save needs matplotlib, which is not installed: pip install 'numpycnn[plot]'"
    assert not (tmp_path / "f").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "x.png"], "--image is used with --save DIR (the page has its own input)"),
        (["--class", "3"], "--class is used with --image"),
        (["--port", "70000"], "Invalid value for '--port': 70000 is not in the range 0<=x<=65535."),
    ],
)
def test_usage_errors(reference_params_path, args, message):
    result = invoke("inspect", reference_params_path, "--no-browser", *args)
    assert error_line(result, code=2) == message


def test_bad_files_are_one_error_line(tmp_path, reference_params_path):
    missing = tmp_path / "nope.pkl"
    assert error_line(invoke("inspect", missing, "--no-browser")) == f"{missing}: no such file"
    blank = tmp_path / "blank.png"
    Image.new("L", (40, 40), 255).save(blank)
    line = error_line(
        invoke("inspect", reference_params_path, "--image", blank, "--save", tmp_path)
    )
    assert line.startswith(f"{blank}: no ink found")


def test_help_reads_like_documentation():
    result = invoke("inspect", "--help")
    assert result.exit_code == 0
    for words in ("draw a digit", "--no-browser", "--save DIR", "Ctrl-C", "no authentication"):
        assert words in result.stdout
    for name in ("filters.png", "training.png", "input.png", "activations.png", "saliency.png"):
        assert name in result.stdout  # every figure --save writes, and only those
    assert "inspect" in invoke("--help").stdout


def test_the_test_set_needs_only_its_own_files(tmp_path, mnist_dir, reference_params_path):
    """After `eval` has cached only the test set's two files, the page's confusion matrix
    reads them without fetching the training images (offline: an empty mirror); the
    out-of-distribution cue's training images are said to be missing, in one line."""
    from numpycnn import data
    from numpycnn.inspector.sources import data_loaders

    cache = tmp_path / "data" / "mnist"
    cache.mkdir(parents=True)
    for name in (data.TEST_IMAGES, data.TEST_LABELS):
        (cache / name).symlink_to(mnist_dir / name)
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    saved = load_model(reference_params_path)
    test_set, train_set = data_loaders(saved.data_source, tmp_path / "data", [str(empty)])
    images, labels = test_set()
    assert images.shape == (10000, 28, 28) and labels.shape == (10000,)
    assert sorted(p.name for p in cache.iterdir()) == sorted([data.TEST_IMAGES, data.TEST_LABELS])
    with pytest.raises(data.DataError, match="MNIST training files are not in"):
        train_set()
