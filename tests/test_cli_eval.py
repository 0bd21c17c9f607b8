"""``numpycnn eval``: the reference's 98.40%, the report, --json, --plot and bad files."""

import pickle
import sys
import types

import numpy as np
import pytest
from cli_helpers import (
    TINY_NETWORK,
    FakeTerminal,
    ReusedEvaluation,
    error_line,
    fake_mnist,
    invoke,
    last_json,
    malicious_pickle,
)
from PIL import Image

from numpycnn import data
from numpycnn.config import Config
from numpycnn.data import Normalization
from numpycnn.engine import Sequential
from numpycnn.modelfile import save_model
from numpycnn.training import evaluate

#: The reference parameters' recall per digit on the test set (SPEC.md).
REFERENCE_RECALL = [0.9939, 0.9921, 0.9777, 0.9921, 0.9949, 0.9843, 0.9854, 0.9835, 0.9784, 0.9574]


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


@pytest.fixture(scope="module")
def shared_evaluation():
    return ReusedEvaluation(evaluate)


@pytest.fixture(scope="module")
def reference_text(reference_params_path, mnist_dir, tmp_path_factory, shared_evaluation):
    """The text report of the reference pickle, with --plot, through the real data path:
    (result, plot path, data dir)."""
    plot = tmp_path_factory.mktemp("plot") / "report.png"
    data_dir = tmp_path_factory.mktemp("data")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(data.MIRROR_ENV, raising=False)
        mp.setattr("numpycnn.cli.evaluate.evaluate", shared_evaluation)
        args = ["--data-dir", data_dir, "--mirror", mnist_dir, "--plot", plot]
        result = invoke("eval", reference_params_path, *args)
    return result, plot, data_dir


@pytest.fixture(scope="module")
def reference_json(reference_params_path, mnist_dir, reference_text, shared_evaluation):
    """The --json report of the reference pickle; it reuses the text report's evaluation."""
    with pytest.MonkeyPatch.context() as mp:
        fake_mnist(mp, mnist_dir)
        mp.setattr("numpycnn.cli.evaluate.evaluate", shared_evaluation)
        result = invoke("eval", reference_params_path, "--json")
    assert result.exit_code == 0, result.output
    assert shared_evaluation.reused == 1  # the same model on the same images
    return last_json(result)


def test_reference_pickle_scores_98_40_percent(reference_text, mnist_dir):
    result, plot, data_dir = reference_text
    assert result.exit_code == 0, result.output
    # no progress bars off a terminal: one line per MNIST file fetched, as pip prints, and
    # only the test set's two files: eval needs no training images
    assert [line.split()[:2] for line in result.stderr.splitlines()] == [
        ["downloading", name] for name in (data.TEST_IMAGES, data.TEST_LABELS)
    ]
    lines = result.stdout.splitlines()
    assert lines[0] == "test accuracy 98.40% (9840/10000)"
    assert lines[2] == "digit  precision  recall  support"
    rows = [line.split() for line in lines[3:13]]
    assert [row[0] for row in rows] == [str(k) for k in range(10)]
    assert [float(row[2]) for row in rows] == REFERENCE_RECALL
    assert all(0.95 < float(row[1]) <= 1 for row in rows)
    support = [int(row[3]) for row in rows]
    assert sum(support) == 10000

    assert lines[14] == "confusion matrix (rows: true digit, columns: predicted)"
    assert lines[15].split() == [str(k) for k in range(10)]
    matrix = np.array([[int(v) for v in line.split()] for line in lines[16:26]])
    assert matrix[:, 0].tolist() == list(range(10))  # the row labels
    confusion = matrix[:, 1:]
    assert confusion.sum(axis=1).tolist() == support
    assert np.trace(confusion) == 9840
    assert lines[26:] == ["", f"plot saved to {plot}"]
    # the test set only: eval never needs the training images
    assert sorted(p.name for p in (data_dir / "mnist").iterdir()) == sorted(data.SETS["test"])


def test_plot_is_a_png_of_the_report(reference_text):
    result, plot, _ = reference_text
    assert result.exit_code == 0, result.output
    with Image.open(plot) as image:
        assert image.format == "PNG"
        assert image.size == (1760, 528)  # 16 x 4.8 inches at 110 dpi
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # something is drawn
    assert [p.name for p in plot.parent.iterdir()] == [plot.name]  # no temporary file left


def test_json_report_of_the_reference_pickle(reference_json, reference_params_path):
    report = reference_json
    assert set(report) == {
        *("params", "accuracy", "correct", "total", "per_class", "confusion"),
        *("data", "class_names"),  # what it was evaluated on: the 2018 pickle records none,
    }  # so MNIST's test set and digits, as before
    assert report["data"] == {"dataset": "mnist"}
    assert report["class_names"] == [str(k) for k in range(10)]
    assert report["params"] == str(reference_params_path)
    assert report["accuracy"] == 0.984
    assert (report["correct"], report["total"]) == (9840, 10000)
    assert list(report["per_class"]) == [str(k) for k in range(10)]
    assert [round(row["recall"], 4) for row in report["per_class"].values()] == REFERENCE_RECALL
    assert all(
        set(row) == {"precision", "recall", "support"} for row in report["per_class"].values()
    )
    confusion = np.array(report["confusion"])
    assert confusion.shape == (10, 10) and confusion.sum() == 10000
    assert np.trace(confusion) == 9840
    assert confusion.sum(axis=1).tolist() == [r["support"] for r in report["per_class"].values()]
    precision = np.diag(confusion) / confusion.sum(axis=0)
    assert [row["precision"] for row in report["per_class"].values()] == pytest.approx(precision)


def test_text_and_json_agree(reference_text, reference_json):
    rows = [line.split() for line in reference_text[0].stdout.splitlines()[3:13]]
    expected = [
        [k, f"{r['precision']:.4f}", f"{r['recall']:.4f}", str(r["support"])]
        for k, r in reference_json["per_class"].items()
    ]
    assert rows == expected


def tiny_model_file(path, zero=False, **data_settings):
    """A model file of the untrained tiny network (all parameters zero if ``zero``)."""
    model = Sequential(TINY_NETWORK, seed=0)
    if zero:
        model.set_params([np.zeros_like(p) for p in model.get_params()])
    config = Config.from_dict({"network": TINY_NETWORK, "data": data_settings})
    save_model(path, model, Normalization("unit", 0.0, 255.0), cost=[2.3, 2.2], config=config)
    return path


def test_digits_never_predicted_have_no_precision(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir)
    model = tiny_model_file(tmp_path / "zero.pkl", zero=True)  # predicts 0 for everything

    text = invoke("eval", model)
    report = last_json(invoke("eval", model, "--json"))

    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == "test accuracy 9.80% (980/10000)"
    assert lines[3].split() == ["0", "0.0980", "1.0000", "980"]
    assert lines[4].split() == ["1", "-", "0.0000", "1135"]
    assert report["accuracy"] == 0.098
    assert report["per_class"]["1"] == {"precision": None, "recall": 0.0, "support": 1135}


def test_progress_and_data_settings(tmp_path, monkeypatch, mnist_dir):
    """The model's own data settings apply without options; --data-dir and --mirror win
    over them; download bars show on a terminal unless --quiet."""
    terminal = FakeTerminal()
    monkeypatch.setattr("numpycnn.cli.options.sys", types.SimpleNamespace(stderr=terminal))
    own = tmp_path / "own-data"
    model = tiny_model_file(tmp_path / "m.pkl", data_dir=str(own), mirrors=[str(mnist_dir)])

    result = invoke("eval", model)

    assert result.exit_code == 0, result.output
    assert data.TEST_IMAGES in terminal.getvalue() and data.TEST_LABELS in terminal.getvalue()
    assert data.TRAIN_IMAGES not in terminal.getvalue()
    assert (own / "mnist" / data.TEST_IMAGES).is_file()

    terminal.seek(0)
    terminal.truncate()
    nowhere = tmp_path / "nowhere"  # the model's mirror: would fail
    model = tiny_model_file(tmp_path / "n.pkl", data_dir=str(own), mirrors=[str(nowhere)])
    given = tmp_path / "given-data"

    result = invoke("eval", model, "--quiet", "--data-dir", given, "--mirror", mnist_dir)

    assert result.exit_code == 0, result.output
    assert terminal.getvalue() == ""
    assert (given / "mnist" / data.TEST_IMAGES).is_file()


def test_missing_matplotlib_is_a_clear_error(tmp_path, monkeypatch, reference_params_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    plot = tmp_path / "plot.png"

    line = error_line(invoke("eval", reference_params_path, "--plot", plot))

    assert line == "--plot needs matplotlib, which is not installed: pip install 'numpycnn[plot]'"
    assert not plot.exists()


def test_unwritable_plot_path_names_the_file(tmp_path, monkeypatch, mnist_dir):
    fake_mnist(monkeypatch, mnist_dir)
    plot = tmp_path / "no-such-dir" / "plot.png"

    line = error_line(invoke("eval", tiny_model_file(tmp_path / "m.pkl"), "--plot", plot))

    assert line == f"{plot}: cannot write the plot: No such file or directory"


def test_default_params_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert error_line(invoke("eval")).startswith(
        "default.pkl: no such file (the model `numpycnn train` saves"
    )


def write_bytes(path, content):
    path.write_bytes(content)
    return path


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p, ref: p, "no such file"),
        (lambda p, ref: write_bytes(p, b""), "empty file"),
        (
            lambda p, ref: write_bytes(p, ref.read_bytes()[:100_000]),
            "not a valid pickle (pickle data was truncated)",
        ),
        (
            lambda p, ref: write_bytes(p, ref.read_bytes()[:10]),
            "truncated file (the pickle ends early)",
        ),
        (lambda p, ref: write_bytes(p, b"epochs: 2\n"), "not a valid pickle"),
        (
            lambda p, ref: write_bytes(p, pickle.dumps({"weights": [1, 2]})),
            "not a numpycnn model file (it holds a dict)",
        ),
    ],
    ids=["missing", "empty", "truncated", "truncated-header", "not-a-pickle", "other-pickle"],
)
def test_bad_params_file_is_one_line_naming_it(tmp_path, reference_params_path, make, message):
    path = make(tmp_path / "params.pkl", reference_params_path)

    line = error_line(invoke("eval", path))

    assert line.startswith(f"{path}: {message}"), line


def test_malicious_pickle_is_refused_not_run(tmp_path):
    control = malicious_pickle(tmp_path / "control.pkl", tmp_path / "control-marker")
    pickle.loads(control.read_bytes())  # a plain unpickler runs it ...
    assert (tmp_path / "control-marker").exists()
    path = malicious_pickle(tmp_path / "evil.pkl", tmp_path / "marker")

    line = error_line(invoke("eval", path))

    assert line == (
        f"{path}: refused global 'pathlib.Path.touch': a model file may hold only NumPy "
        "arrays and plain data"
    )
    assert not (tmp_path / "marker").exists()  # ... the model loader does not


def test_params_that_is_a_directory_is_a_usage_error(tmp_path):
    line = error_line(invoke("eval", tmp_path), code=2)
    assert line.startswith("Invalid value for '[PARAMS]'") and str(tmp_path) in line


def test_one_thread_gives_the_same_report(reference_json, reference_params_path, mnist_dir):
    """--threads only shares the work: one thread reports exactly what the default did."""
    with pytest.MonkeyPatch.context() as mp:
        fake_mnist(mp, mnist_dir)
        result = invoke("eval", reference_params_path, "--json", "--threads", "1")
    assert result.exit_code == 0, result.output
    assert last_json(result) == reference_json


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_bad_thread_count_is_a_usage_error(tmp_path, reference_params_path, value):
    line = error_line(invoke("eval", reference_params_path, "--threads", value), code=2)
    assert "'--threads'" in line and value in line


def test_one_worker_gives_the_same_report(reference_json, reference_params_path, mnist_dir):
    """--workers only shares the work: in this process alone the report is the same as the
    default's, which predicts on the usable CPUs' worker processes."""
    with pytest.MonkeyPatch.context() as mp:
        fake_mnist(mp, mnist_dir)
        result = invoke("eval", reference_params_path, "--json", "--workers", "1")
    assert result.exit_code == 0, result.output
    assert last_json(result) == reference_json


@pytest.mark.parametrize("value", ["0", "x"])
def test_bad_worker_count_is_a_usage_error(reference_params_path, value):
    line = error_line(invoke("eval", reference_params_path, "--workers", value), code=2)
    assert "'--workers'" in line and value in line
