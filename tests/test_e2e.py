"""End to end, through the real download path: train the reference recipe on a small
subset of MNIST, evaluate it, resume it for a second epoch, predict digit images."""

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import digit_files, error_line, invoke, last_json, real_mnist
from PIL import Image

from numpycnn import __version__, data
from numpycnn.config import load_config
from numpycnn.data import Normalization
from numpycnn.imageprep import load_digit
from numpycnn.modelfile import load_model
from numpycnn.parallel import default_workers

RECIPE = Path(__file__).resolve().parent.parent / "configs" / "escontrela.yaml"


@pytest.mark.slow
def test_train_eval_resume_predict(tmp_path, monkeypatch, mnist_dir):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)  # the recipe's runs_dir is relative: runs/
    where = ["--data-dir", tmp_path / "data", "--mirror", mnist_dir]

    # One epoch of the reference recipe on 320 images, MNIST fetched from the mirror.
    options = ["--epochs", 1, "--limit", 320, "--batch-size", 16, "--out", "one.pkl"]
    result = invoke("train", "--config", RECIPE, *options, *where)

    assert result.exit_code == 0, result.output
    folder, header, epoch, summary = result.stdout.splitlines()
    assert folder == "run folder runs/escontrela"
    assert header == (
        "training 105,634 parameters on 320 images (0 for validation), "
        "1 epoch(s) of 20 batches, escontrela lr 0.01 (exponential schedule), "
        f"{default_workers(16)} worker{'s' * (default_workers(16) > 1)}"
    )
    assert epoch.startswith("epoch 1/1  loss ")
    assert epoch.endswith(" img/s")
    assert summary.endswith("/10000); saved the model to one.pkl (run folder runs/escontrela)")
    for name in data.MNIST_FILES:
        assert (tmp_path / "data" / "mnist" / name).read_bytes() == (mnist_dir / name).read_bytes()
    one = load_model("one.pkl")
    expected = load_config(RECIPE).with_overrides(
        epochs=1, batch_size=16, limit=320, params="one.pkl", name="escontrela",
        data_dir=str(tmp_path / "data"), mirrors=[str(mnist_dir)],
    )  # fmt: skip
    assert one.config == expected.to_dict()
    assert one.normalization["strategy"] == "reference"
    assert one.normalization["mean"].is_integer() and one.normalization["std"].is_integer()
    assert len(one.cost) == 20 and one.metrics["epochs"] == 1
    assert summary.startswith(f"test accuracy {100 * one.metrics['test_accuracy']:.2f}% ")

    # Its evaluation agrees with the accuracy measured at the end of training.
    result = invoke("eval", "one.pkl", "--json", "--plot", "one.png", *where)

    assert result.exit_code == 0, result.output
    report = last_json(result)
    assert report["accuracy"] == one.metrics["test_accuracy"] > 0.3
    assert report["total"] == 10000
    with Image.open("one.png") as image:
        assert image.format == "PNG" and image.size == (1760, 528)

    # A second epoch, continuing the run in its folder.
    result = invoke(
        "train", "--resume", "runs/escontrela", "--epochs", 2, "--out", "two.pkl", *where
    )

    assert result.exit_code == 0, result.output
    assert [line[:9] for line in result.stdout.splitlines() if line.startswith("epoch")] == [
        "epoch 2/2"
    ]
    two = load_model("two.pkl")
    assert two.cost[:20] == one.cost and len(two.cost) == 40  # continued, not restarted
    assert two.metrics["epochs"] == 2 and two.metrics["test_accuracy"] > 0.6
    assert load_model("runs/escontrela/last.pkl").checkpoint["epoch"] == 2

    # Real test digits saved as images of several kinds: predict gives the model's answers,
    # which are mostly right.
    paths, labels = digit_files(tmp_path, real_mnist(mnist_dir), 10)

    result = invoke("predict", "--params", "two.pkl", "--json", "--top-k", 3, *paths)

    assert result.exit_code == 0, result.output
    predictions = last_json(result)
    assert [p["file"] for p in predictions] == [str(p) for p in paths]
    assert all(len(p["top_k"]) == 3 for p in predictions)
    digits = np.stack([load_digit(path) for path in paths])
    probs = two.model.predict_proba(Normalization.from_dict(two.normalization).norm(digits))
    assert [p["digit"] for p in predictions] == probs.argmax(axis=1).tolist()
    assert [p["probability"] for p in predictions] == pytest.approx(probs.max(axis=1).tolist())
    correct = sum(p["digit"] == label for p, label in zip(predictions, labels))
    assert correct >= 6, (correct, [p["digit"] for p in predictions], labels)


def test_help_version_and_unknown_command():
    result = invoke("--help")
    assert result.exit_code == 0
    listed = result.stdout.split("Commands:\n")[1].splitlines()
    commands = [line.split()[0] for line in listed if line.strip()]
    assert commands == [
        "configs",
        "download",
        "eval",
        "export",
        "gradcheck",
        "inspect",
        "predict",
        "train",
    ]
    assert invoke("--version").stdout == f"numpycnn, version {__version__}\n"
    for command in ("train", "eval", "predict", "gradcheck"):
        assert invoke(command, "-h").stdout.startswith(f"Usage: main {command} ")
    assert error_line(invoke("trian"), code=2) == "No such command 'trian'."
