"""``numpycnn train``: options, output, run folders, resume, Ctrl-C, divergence and errors."""

import csv
import math
import re
import signal
import subprocess
import sys
import time
import types

import pytest
import yaml
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
from numpycnn.cli.interrupts import Interrupted
from numpycnn.config import DEFAULT_RECIPE, Config, load_config
from numpycnn.data import Normalization
from numpycnn.engine import Sequential
from numpycnn.modelfile import load_model, save_model
from numpycnn.parallel import default_workers

EPOCH_LINE = re.compile(
    r"epoch (\d+)/(\d+)  loss (\d+\.\d{4})  train acc (\d+\.\d\d)%"
    r"(?:  val loss (\d+\.\d{4})  val acc (\d+\.\d\d)%)?  lr (\S+)  (\d+\.\d) s  ([\d,]+) img/s"
)


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)


@pytest.fixture
def loader(monkeypatch, mnist_dir):
    return fake_mnist(monkeypatch, mnist_dir)


def workers_text(batch_size):
    """How the header names the default worker count for ``batch_size`` on this machine."""
    n = default_workers(batch_size)
    return f"{n} worker{'s' * (n > 1)}"


def results_rows(folder):
    with open(folder / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


def test_train_writes_a_run_folder_and_the_model(tmp_path, mnist_dir, loader):
    config = tiny_config(tmp_path, epochs=3, limit=300, validation=100, batch_size=50)

    result = invoke(
        "train", "--config", config, "--data-dir", tmp_path / "d", "--mirror", mnist_dir
    )

    assert result.exit_code == 0, result.output
    folder = tmp_path / "runs" / "tiny"  # named after the config file
    lines = result.stdout.splitlines()
    assert lines[0] == f"run folder {folder}"
    assert lines[1] == (
        f"training {TINY_PARAMS:,} parameters on 300 images (100 for validation), "
        f"3 epoch(s) of 6 batches, adam lr 0.01 (exponential schedule), {workers_text(50)}"
    )
    epochs = [EPOCH_LINE.fullmatch(line) for line in lines[2:5]]
    assert all(epochs), lines
    assert [m.group(1, 2) for m in epochs] == [("1", "3"), ("2", "3"), ("3", "3")]

    # results.csv: one row per epoch, the figures the epoch lines print, unrounded
    rows = results_rows(folder)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    for m, row in zip(epochs, rows):
        assert m.group(3) == f"{float(row['train_loss']):.4f}"
        assert m.group(4) == f"{100 * float(row['train_accuracy']):.2f}"
        assert m.group(5) == f"{float(row['val_loss']):.4f}"
        assert m.group(6) == f"{100 * float(row['val_accuracy']):.2f}"
        assert m.group(7) == f"{float(row['lr']):.3g}"
        assert m.group(8) == f"{float(row['seconds']):.1f}"
        assert m.group(9) == f"{float(row['images_per_second']):,.0f}"
        assert float(row["images_per_second"]) == pytest.approx(300 / float(row["seconds"]))

    # last.pkl is the final checkpoint; best.pkl the epoch with the best validation accuracy
    last, best = load_model(folder / "last.pkl"), load_model(folder / "best.pkl")
    assert last.checkpoint["epoch"] == 3 and len(last.history) == 3
    accuracies = [float(r["val_accuracy"]) for r in rows]
    best_epoch = accuracies.index(max(accuracies)) + 1  # the first of equal bests
    assert best.checkpoint["epoch"] == best_epoch
    assert best.history[-1]["val_accuracy"] == max(accuracies)
    assert not list(folder.glob("epoch-*.pkl"))  # per-epoch files only when asked

    # layers.csv: weight and gradient norms of the weighted layers, dead ReLUs
    with open(folder / "layers.csv", newline="") as f:
        layers = list(csv.DictReader(f))
    assert {r["layer"] for r in layers} == {"2-conv2d", "3-relu", "6-dense"}
    assert len(layers) == 3 * 3
    for r in layers:
        if r["layer"] == "3-relu":
            assert 0 <= float(r["dead_fraction"]) <= 1 and r["weight_norm"] == ""
        else:
            assert float(r["weight_norm"]) > 0 and float(r["grad_norm"]) > 0
    assert last.history[-1]["layers"]["6-dense"]["weight_norm"] == pytest.approx(
        float(layers[-1]["weight_norm"])
    )

    # the resolved config, every key, loads back as the config that was trained
    # the resolved config, every key, the options that changed it included
    assert load_config(folder / "config.yaml") == load_config(config).with_overrides(
        name="tiny", data_dir=str(tmp_path / "d"), mirrors=[str(mnist_dir)]
    )
    assert (folder / "results.png").stat().st_size > 1000  # matplotlib is a dev extra

    saved = load_model(tmp_path / "out.pkl")  # the config's output.params
    assert saved.checkpoint is None
    assert saved.metrics["epochs"] == 3 and len(saved.cost) == 18
    assert saved.history == last.history
    accuracy = saved.metrics["test_accuracy"]
    assert lines[5:] == [
        f"test accuracy {100 * accuracy:.2f}% ({round(accuracy * 10000)}/10000); "
        f"saved the model to {tmp_path / 'out.pkl'} (run folder {folder})"
    ]
    assert accuracy > 0.3  # it learnt something (chance: 0.1)
    assert loader.calls == [(tmp_path / "d", [str(mnist_dir)])]


def test_each_run_gets_a_new_folder_and_name_options_choose_it(tmp_path, loader):
    config = tiny_config(tmp_path, limit=100)
    for _ in range(3):
        assert invoke("train", "-c", config, "-q").exit_code == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["tiny", "tiny-2", "tiny-3"]

    result = invoke("train", "-c", config, "--name", "mine", "--runs-dir", tmp_path / "else")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"run folder {tmp_path / 'else' / 'mine'}"
    stored = yaml.safe_load((tmp_path / "else" / "mine" / "config.yaml").read_text())
    assert stored["output"]["name"] == "mine"
    assert stored["output"]["runs_dir"] == str(tmp_path / "else")


def test_save_epochs_keeps_a_checkpoint_per_epoch(tmp_path, loader):
    config = tiny_config(tmp_path, epochs=2, limit=100)
    raw = yaml.safe_load(config.read_text())
    raw["output"]["save_epochs"] = True
    config.write_text(yaml.safe_dump(raw))

    assert invoke("train", "-c", config, "-q").exit_code == 0

    folder = tmp_path / "runs" / "tiny"
    for epoch in (1, 2):
        assert load_model(folder / f"epoch-{epoch:03d}.pkl").checkpoint["epoch"] == epoch
    assert not (folder / "best.pkl").exists()  # no validation, so no best


def test_options_override_the_config(tmp_path, loader):
    config = tiny_config(tmp_path, epochs=3, limit=300, batch_size=50, seed=1)
    out = tmp_path / "other.pkl"

    result = invoke(
        "train", "--config", config, "--epochs", 1, "--batch-size", 64, "--lr", 0.005,
        "--seed", 7, "--limit", 200, "--out", out,
        "--data-dir", tmp_path / "d", "--mirror", "first/", "--mirror", "second/",
    )  # fmt: skip

    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].endswith(
        "on 200 images (0 for validation), 1 epoch(s) of 4 batches, adam lr 0.005 "
        f"(exponential schedule), {workers_text(64)}"
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
    recipe = DEFAULT_RECIPE.training
    assert result.stdout.splitlines()[:2] == [
        "run folder runs/default",
        "training 105,634 parameters on 64 images (5,000 for validation), 1 epoch(s) of 2 "
        f"batches, adam lr {recipe.optimizer.hyperparameters['lr']:g} "
        f"({recipe.schedule.name} schedule), {workers_text(32)}",
    ]
    assert "/200); saved the model to default.pkl (run folder runs/default)" in result.stdout
    saved = load_model(tmp_path / "default.pkl")  # NAME.pkl after the run's name, in the cwd
    expected = DEFAULT_RECIPE.with_overrides(
        epochs=1, limit=64, batch_size=32, name="default", params="default.pkl"
    )
    assert saved.config == expected.to_dict()
    assert load_model(tmp_path / "runs" / "default" / "last.pkl").checkpoint["epoch"] == 1


def test_json_prints_one_summary_object(tmp_path, loader):
    config = tiny_config(tmp_path, epochs=2, limit=200, validation=100)
    out = tmp_path / "model.pkl"

    result = invoke("train", "-c", config, "--out", out, "--json")

    assert result.exit_code == 0, result.output
    summary = last_json(result)  # no header, no epoch lines: just the JSON
    assert set(summary) == {
        "run", "params", "test_accuracy", "test_correct", "test_total", "val_accuracy",
        "train_loss", "seconds", "epochs", "workers", "replaced",
    }  # fmt: skip
    assert summary["workers"] == default_workers(32)
    assert summary["params"] == str(out)
    assert summary["run"] == str(tmp_path / "runs" / "tiny")
    assert summary["epochs"] == 2
    assert 0 <= summary["val_accuracy"] <= 1 and 0 <= summary["test_accuracy"] <= 1
    assert summary["train_loss"] > 0 and summary["seconds"] > 0
    assert {
        k: v for k, v in summary.items() if k not in ("params", "run", "replaced")
    } == load_model(out).metrics


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
        assert result.stdout.startswith("run folder ")


# ----- resuming -----


def test_resume_from_a_run_folder_continues_it_in_place(tmp_path, loader):
    straight = tmp_path / "straight.pkl"
    config = tiny_config(tmp_path, epochs=3, limit=300, validation=100, params="straight.pkl")
    assert invoke("train", "-c", config, "-q").exit_code == 0
    short = tiny_config(tmp_path, "short.yaml", epochs=1, limit=300, validation=100)
    assert invoke("train", "-c", short, "-q").exit_code == 0
    folder = tmp_path / "runs" / "short"

    resumed = tmp_path / "resumed.pkl"
    result = invoke("train", "--resume", folder, "--epochs", 3, "--out", resumed)

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"resuming {folder / 'last.pkl'} in {folder}"
    assert [m.group(1, 2) for m in map(EPOCH_LINE.fullmatch, lines) if m] == [
        ("2", "3"), ("3", "3")
    ]  # fmt: skip
    assert same_params(straight, resumed)  # bit for bit the uninterrupted run
    a, b = load_model(straight), load_model(resumed)
    assert a.cost == b.cost and a.metrics["test_accuracy"] == b.metrics["test_accuracy"]
    assert b.config["output"]["params"] == str(resumed)
    assert b.config["training"]["epochs"] == 3
    # the folder's results continue its own rows, and equal the straight run's
    straight_rows = results_rows(tmp_path / "runs" / "tiny")
    resumed_rows = results_rows(folder)
    strip = ("seconds", "images_per_second")
    assert [{k: v for k, v in r.items() if k not in strip} for r in resumed_rows] == [
        {k: v for k, v in r.items() if k not in strip} for r in straight_rows
    ]
    assert yaml.safe_load((folder / "config.yaml").read_text())["training"]["epochs"] == 3
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["short", "tiny"]


def test_resume_from_an_earlier_checkpoint_starts_a_new_folder(tmp_path, loader):
    config = tiny_config(tmp_path, epochs=2, limit=300, params="straight.pkl")
    raw = yaml.safe_load(config.read_text())
    raw["output"]["save_epochs"] = True
    config.write_text(yaml.safe_dump(raw))
    assert invoke("train", "-c", config, "-q").exit_code == 0
    folder = tmp_path / "runs" / "tiny"
    before = (folder / "last.pkl").read_bytes()

    resumed = tmp_path / "resumed.pkl"
    result = invoke("train", "--resume", folder / "epoch-001.pkl", "--out", resumed)

    assert result.exit_code == 0, result.output
    branch = tmp_path / "runs" / "tiny-2"
    assert result.stdout.splitlines()[0] == f"resuming {folder / 'epoch-001.pkl'} in {branch}"
    assert same_params(tmp_path / "straight.pkl", resumed)
    assert (folder / "last.pkl").read_bytes() == before  # the original run is untouched
    assert [int(r["epoch"]) for r in results_rows(branch)] == [1, 2]


def test_a_branched_run_has_its_results_and_best_from_the_start(tmp_path, loader):
    config = tiny_config(tmp_path, epochs=2, limit=300, validation=100)
    raw = yaml.safe_load(config.read_text())
    raw["output"]["save_epochs"] = True
    config.write_text(yaml.safe_dump(raw))
    assert invoke("train", "-c", config, "-q").exit_code == 0
    folder = tmp_path / "runs" / "tiny"

    stopped = invoke("train", "--resume", folder / "epoch-002.pkl", "-q")  # nothing left to train
    assert stopped.exit_code == 0, stopped.output
    branch = tmp_path / "runs" / "tiny-2"
    assert [int(r["epoch"]) for r in results_rows(branch)] == [1, 2]  # the inherited rows

    assert invoke("train", "--resume", folder / "epoch-001.pkl", "-q").exit_code == 0
    branch = tmp_path / "runs" / "tiny-3"
    assert load_model(branch / "best.pkl").checkpoint["epoch"] == 2  # the epoch it trained


def test_resume_refuses_an_epochs_change_the_schedule_depends_on(tmp_path, loader):
    config = tiny_config(tmp_path, epochs=2, limit=100)
    raw = yaml.safe_load(config.read_text())
    raw["training"]["schedule"] = {"name": "onecycle"}
    config.write_text(yaml.safe_dump(raw))
    assert invoke("train", "-c", config, "-q").exit_code == 0
    folder = tmp_path / "runs" / "tiny"
    before = (folder / "last.pkl").read_bytes()

    line = error_line(invoke("train", "--resume", folder, "--epochs", 3))
    assert line == (
        f"{folder / 'last.pkl'}: the onecycle schedule's rates depend on the run's length, so "
        "epochs cannot change on resume (2 planned); start a new run to train longer"
    )
    line = error_line(invoke("train", "--resume", folder, "--epochs", 1))
    assert line == f"{folder / 'last.pkl'}: the run has trained 2 epochs already; epochs 1 is fewer"
    assert (folder / "last.pkl").read_bytes() == before


def test_a_params_path_in_a_missing_folder_is_refused_before_training(tmp_path, loader):
    config = tiny_config(tmp_path, limit=100)
    out = tmp_path / "no-such-dir" / "x.pkl"
    line = error_line(invoke("train", "-c", config, "--out", out))
    assert line == f"{out}: cannot save the model there: no folder {out.parent}"
    assert not (tmp_path / "runs").exists()  # refused before any run folder was claimed


def test_a_user_config_yaml_is_not_taken_for_a_run_folder(tmp_path, loader, monkeypatch):
    config = tiny_config(tmp_path, epochs=2, limit=100)
    assert invoke("train", "-c", config, "-q").exit_code == 0
    project = tmp_path / "project"
    project.mkdir()
    mine = project / "config.yaml"
    mine.write_text("# my own notes\ntraining: {epochs: 9}\n")
    (project / "last.pkl").write_bytes((tmp_path / "runs" / "tiny" / "last.pkl").read_bytes())

    result = invoke("train", "--resume", project / "last.pkl", "-q")

    assert result.exit_code == 0, result.output
    assert mine.read_text() == "# my own notes\ntraining: {epochs: 9}\n"  # untouched
    assert sorted(p.name for p in project.iterdir()) == ["config.yaml", "last.pkl"]
    assert (tmp_path / "runs" / "tiny-2" / "last.pkl").is_file()  # a new folder instead


def test_resume_of_a_run_still_training_is_refused(tmp_path, loader):
    from numpycnn.runs import RunFolder

    config = tiny_config(tmp_path, limit=100)
    assert invoke("train", "-c", config, "-q").exit_code == 0
    folder = tmp_path / "runs" / "tiny"
    with RunFolder(folder).locked():  # as a training process holds it
        child = subprocess.run(
            [sys.executable, "-m", "numpycnn.cli.main", "train", "--resume", str(folder)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert child.returncode == 1
    assert child.stderr.strip() == (
        f"Error: {folder}: another training process is using this run folder"
    )


def test_two_runs_at_once_in_one_directory_keep_separate_complete_folders(tmp_path, mnist_dir):
    """Two real processes started together with the same config, in the same directory."""
    config = tiny_config(tmp_path, epochs=2, limit=2000, validation=200, batch_size=20)
    command = [
        sys.executable, "-m", "numpycnn.cli.main", "train", "-c", str(config), "--json",
        "--data-dir", str(tmp_path / "data"), "--mirror", str(mnist_dir),
    ]  # fmt: skip
    (tmp_path / "data").mkdir()
    assert subprocess.run([*command[:3], "download", *command[-4:]], timeout=120).returncode == 0
    first, second = (
        subprocess.Popen(
            [*command, "--seed", str(seed)], cwd=tmp_path, stdout=subprocess.PIPE, text=True
        )
        for seed in (1, 2)
    )
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]

    assert first.returncode == second.returncode == 0
    summaries = [yaml.safe_load(out) for out in outputs]
    folders = sorted(s["run"] for s in summaries)
    assert folders == [str(tmp_path / "runs" / "tiny"), str(tmp_path / "runs" / "tiny-2")]
    for summary in summaries:
        folder = tmp_path / "runs" / summary["run"].split("/")[-1]
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
            "best.pkl", "config.yaml", "last.pkl", "layers.csv", "results.csv", "results.png",
            "snapshots", "status.json", "steps.csv",
        ]  # fmt: skip
        last = load_model(folder / "last.pkl")
        assert last.checkpoint["epoch"] == 2
        assert last.metrics["test_accuracy"] == summary["test_accuracy"]
        assert (
            yaml.safe_load((folder / "config.yaml").read_text())["training"]["seed"]
            == (last.config["training"]["seed"])
        )
        assert len(results_rows(folder)) == 2
    seeds = {load_model(tmp_path / "runs" / f / "last.pkl").config["training"]["seed"]
             for f in ("tiny", "tiny-2")}  # fmt: skip
    assert seeds == {1, 2}
    # params.pkl is one whole model of the two, never a mixture or half a file
    final = load_model(tmp_path / "out.pkl")
    assert final.metrics["test_accuracy"] in {s["test_accuracy"] for s in summaries}


def test_a_params_file_replaced_during_the_run_is_left_alone(tmp_path, loader, monkeypatch):
    config = tiny_config(tmp_path, limit=100)
    out = tmp_path / "out.pkl"
    out.write_bytes(b"yesterday's model")
    import numpycnn.api

    original = numpycnn.api.evaluate

    def evaluate_while_another_run_saves(*args, **kwargs):
        out.write_bytes(b"another run's model")  # another process finished first
        return original(*args, **kwargs)

    monkeypatch.setattr(numpycnn.api, "evaluate", evaluate_while_another_run_saves)
    result = invoke("train", "-c", config)

    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"another run's model"
    last = tmp_path / "runs" / "tiny" / "last.pkl"
    assert result.stderr.splitlines()[-1] == (
        f"warning: {out} was replaced by another process during this run, so it was left "
        f"alone; this run's model is {last}"
    )
    assert "model not saved" in result.stdout
    assert load_model(last).metrics["epochs"] == 1


def test_ctrl_c_saves_a_checkpoint_exits_130_and_resumes_exactly(tmp_path, mnist_dir, loader):
    """A real SIGINT to a training process, after its first epoch's checkpoint."""
    epochs = 8
    config = tiny_config(tmp_path, epochs=epochs, limit=1000, batch_size=10, params="never.pkl")
    folder = tmp_path / "runs" / "tiny"
    command = [
        sys.executable, "-m", "numpycnn.cli.main", "train", "--config", str(config), "--quiet",
        "--data-dir", str(tmp_path / "data"), "--mirror", str(mnist_dir),
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (folder / "last.pkl").exists():
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 60 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    last = folder / "last.pkl"
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.splitlines()[-1] == (
        f"interrupted: checkpoint saved to {last}; continue with numpycnn train --resume {folder}"
    )
    assert stdout.splitlines()[0] == f"run folder {folder}"  # the run's results, under -q too
    assert stdout.splitlines()[1].startswith("epoch 1/8")
    state = load_model(last).checkpoint
    assert 1 <= state["epoch"] < epochs  # stopped mid-run
    assert not (tmp_path / "never.pkl").exists()  # no params file from an interrupted run

    resumed = tmp_path / "resumed.pkl"
    result = invoke("train", "--resume", folder, "--out", resumed, "-q")
    assert result.exit_code == 0, result.output
    straight = tiny_config(
        tmp_path, "straight.yaml", epochs=epochs, limit=1000, batch_size=10,
        params="straight.pkl",
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
        r"lower the learning rate; no epoch completed, so the run folder holds no checkpoint",
        line,
    ), line
    assert out.read_bytes() == b"an earlier, good model"
    assert not (tmp_path / "runs" / "tiny" / "last.pkl").exists()  # no diverged epoch


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
        ("epochs: 2\nseed: 1\n", "'epochs' belongs under 'training:'"),
        (
            "training:\n  epochs: [1, 2\n  seed: 3\n",
            "line 3, column 7: expected ',' or ']', but got ':'",
        ),
    ],
    ids=[
        "unknown-key",
        "wrong-type",
        "float-for-int",
        "wrong-number",
        "unknown-section",
        "flat",
        "yaml",
    ],  # fmt: skip
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
     ["--limit", "10"], ["--name", "x"], ["--runs-dir", "r"]],
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


def test_a_second_ctrl_c_stops_at_once_and_says_how_to_continue(tmp_path, loader, monkeypatch):
    import numpycnn.api

    config = tiny_config(tmp_path, epochs=3, limit=300)

    def second_ctrl_c(t, loss, accuracy):
        if t.epoch == 1 and t.batch == 2:  # what the handler raises on a second SIGINT
            raise Interrupted(signal.SIGINT, repeated=True)

    original = numpycnn.api.Callbacks

    def with_interrupt(**kwargs):
        return original(**{**kwargs, "on_batch": second_ctrl_c})

    monkeypatch.setattr(numpycnn.api, "Callbacks", with_interrupt)
    result = invoke("train", "-c", config, "-q")

    folder = tmp_path / "runs" / "tiny"
    assert result.exit_code == 130
    assert result.stderr.splitlines() == [
        f"interrupted again: stopped at once; continue from {folder / 'last.pkl'} (after epoch "
        f"1) with numpycnn train --resume {folder}"
    ]
    assert load_model(folder / "last.pkl").checkpoint["epoch"] == 1  # the last one, intact
