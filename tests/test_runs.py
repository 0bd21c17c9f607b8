"""Run folders: naming, claiming under concurrency, locks, results files."""

import csv
import threading

import pytest

from numpycnn import runs
from numpycnn.runs import RunFolder, RunFolderError
from numpycnn.training import EpochStats


def test_folders_are_numbered_from_the_first_free_name(tmp_path):
    names = [RunFolder.create(tmp_path / "runs", "exp").path.name for _ in range(3)]
    assert names == ["exp", "exp-2", "exp-3"]
    assert (tmp_path / "runs" / "exp" / runs.MARKER).is_file()
    (tmp_path / "runs" / "exp-2" / runs.MARKER).unlink()
    (tmp_path / "runs" / "exp-2").rmdir()
    assert RunFolder.create(tmp_path / "runs", "exp").path.name == "exp-2"  # a free name
    (tmp_path / "runs" / "exp-5").write_text("a file, not a run")
    assert RunFolder.create(tmp_path / "runs", "exp").path.name == "exp-4"


def test_concurrent_claims_never_share_a_folder(tmp_path):
    claimed, barrier = [], threading.Barrier(16)

    def claim():
        barrier.wait()
        claimed.append(RunFolder.create(tmp_path, "run").path)

    threads = [threading.Thread(target=claim) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 16


def test_open_refuses_a_folder_without_a_run(tmp_path):
    with pytest.raises(RunFolderError, match="not a run folder"):
        RunFolder.open(tmp_path)
    (tmp_path / "config.yaml").write_text("a user's own config\n")  # not enough to be a run
    with pytest.raises(RunFolderError, match="not a run folder"):
        RunFolder.open(tmp_path)
    assert RunFolder.holding(tmp_path / "last.pkl") is None
    folder = RunFolder.create(tmp_path, "r")
    folder.write_config({"training": {"epochs": 1}})
    assert RunFolder.open(folder.path).path == folder.path
    assert RunFolder.holding(folder.path / "last.pkl").path == folder.path
    assert RunFolder.holding(tmp_path / "elsewhere.pkl") is None


def test_the_lock_is_exclusive_and_released(tmp_path):
    folder = RunFolder.create(tmp_path, "r")
    with folder.locked():
        with pytest.raises(RunFolderError, match="another training process"):
            with RunFolder(folder.path).locked():
                pass
    with RunFolder(folder.path).locked():  # free again
        pass


def test_results_files_hold_one_row_per_epoch(tmp_path):
    folder = RunFolder.create(tmp_path, "r")
    history = [
        EpochStats(1, 0.5, 0.8, None, 2.0, None, 0.01, 100.0, {"1-dense": {"weight_norm": 1.5,
                   "grad_norm": 0.25}, "2-relu": {"dead_fraction": 0.125}}),
        EpochStats(2, 0.25, 0.9, 0.95, 2.5, 0.2, 0.005, 80.0, {}),
    ]  # fmt: skip
    folder.write_results(history)
    with open(folder.file(runs.RESULTS), newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows[0] == {
        "epoch": "1", "train_loss": "0.5", "train_accuracy": "0.8", "val_loss": "",
        "val_accuracy": "", "lr": "0.01", "seconds": "2", "images_per_second": "100",
    }  # fmt: skip
    assert rows[1]["val_accuracy"] == "0.95"
    with open(folder.file(runs.LAYERS), newline="") as f:
        layers = list(csv.DictReader(f))
    assert layers == [
        {"epoch": "1", "layer": "1-dense", "weight_norm": "1.5", "grad_norm": "0.25",
         "dead_fraction": ""},
        {"epoch": "1", "layer": "2-relu", "weight_norm": "", "grad_norm": "",
         "dead_fraction": "0.125"},
    ]  # fmt: skip
    pytest.importorskip("matplotlib")
    path = folder.write_plot(history)
    assert path.read_bytes().startswith(b"\x89PNG")
    assert not [p for p in folder.path.iterdir() if p.name.endswith(".tmp")]


def test_an_unwritable_runs_dir_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(RunFolderError, match="cannot create"):
        RunFolder.create(blocker / "runs", "r")
