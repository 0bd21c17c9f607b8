"""Fashion-MNIST, KMNIST and CIFAR-10 through the commands: files the tests write in the
exact published formats (gzipped IDX; the binary CIFAR-10 archive), served by a real HTTP
server on 127.0.0.1 or a mirror folder, the sources' checksum tables patched to these
files' own MD5s (the real sets cannot be downloaded here). Train, eval, predict and
download take them by name, with their class names."""

import numpy as np
import pytest
import test_datasets
import yaml
from cli_helpers import error_line, invoke, last_json
from PIL import Image
from test_datasets import CIFAR_NAMES, RECORDS, idx_files, md5

from numpycnn import data
from numpycnn.datasets import cifar10, fashion_mnist, kmnist
from numpycnn.modelfile import load_model

server, cifar = test_datasets.server, test_datasets.cifar  # their fixtures, shared

GREY_NET = [
    {"type": "maxpool2d", "size": 4, "stride": 4},
    {"type": "flatten"},
    {"type": "dense", "units": 10},
]
COLOUR_NET = [
    {"type": "conv2d", "filters": 2, "kernel": 3, "stride": 2, "padding": 1},
    {"type": "relu"},
    {"type": "avgpool2d", "size": 4, "stride": 4},
    {"type": "flatten"},
    {"type": "dense", "units": 10},
]


def write_config(tmp_path, dataset, network, mirrors, augment=None):
    path = tmp_path / f"{dataset}.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "network": network,
                "data": {
                    "dataset": dataset,
                    "mirrors": mirrors,
                    "validation": 6,
                    "augment": augment,
                },
                "training": {"epochs": 1, "batch_size": 8},
                "output": {"runs_dir": str(tmp_path / "runs")},
            }
        )
    )
    return path


@pytest.mark.parametrize("source", [fashion_mnist, kmnist])
def test_an_idx_set_trains_evaluates_and_predicts_by_name(source, server, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arrays, files = idx_files(seed=7, n_train=40, n_test=12)
    server.files = files
    monkeypatch.setattr(source, "FILES", {name: md5(raw) for name, raw in files.items()})
    cfg = write_config(tmp_path, source.NAME, GREY_NET, [server.url("ok")], {"shift": 2})
    result = invoke("train", "-c", cfg, "-q", "--json")
    assert result.exit_code == 0, result.output
    assert last_json(result)["test_total"] == 12
    saved = load_model(f"{source.NAME}.pkl")
    assert saved.data_source == {"dataset": source.NAME}
    assert saved.class_names == source.CLASS_NAMES
    assert sorted(p.name for p in (tmp_path / "data" / source.NAME).iterdir()) == sorted(files)

    served = len(server.requests)  # eval reads the cache: no request
    report = last_json(invoke("eval", f"{source.NAME}.pkl", "--json", "-q"))
    assert len(server.requests) == served
    assert report["data"] == {"dataset": source.NAME} and report["total"] == 12
    assert list(report["per_class"]) == source.CLASS_NAMES
    expected = arrays[data.TEST_LABELS]
    assert [row["support"] for row in report["per_class"].values()] == np.bincount(
        expected, minlength=10
    ).tolist()

    image = tmp_path / "one.png"  # a whole picture, fitted as the set's images are
    Image.fromarray(arrays[data.TEST_IMAGES][0]).save(image)
    (row,) = last_json(invoke("predict", "--params", f"{source.NAME}.pkl", image, "--json"))
    assert row["class"] in source.CLASS_NAMES and "digit" not in row
    assert row["class"] == source.CLASS_NAMES[row["index"]]


def test_cifar10_trains_a_colour_network_with_flips_and_two_workers(cifar, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mirror = cifar()
    cfg = write_config(tmp_path, "cifar10", COLOUR_NET, [str(mirror)], {"shift": 3, "flip": 0.5})
    result = invoke("train", "-c", cfg, "-q", "--workers", 2, "--json")
    assert result.exit_code == 0, result.output
    assert last_json(result)["test_total"] == RECORDS and last_json(result)["workers"] == 2
    saved = load_model("cifar10.pkl")
    assert saved.class_names == CIFAR_NAMES and saved.model.input_shape == (3, 32, 32)
    assert len(saved.normalization["mean"]) == 3
    report = last_json(invoke("eval", "cifar10.pkl", "--json", "-q"))
    assert list(report["per_class"]) == CIFAR_NAMES and report["total"] == RECORDS
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (200, 100, 30)).save(photo)
    (row,) = last_json(invoke("predict", "--params", "cifar10.pkl", photo, "--json"))
    assert row["class"] in CIFAR_NAMES


def test_download_takes_a_dataset_name(server, tmp_path, monkeypatch):
    _, files = idx_files(seed=9)
    server.files = files
    monkeypatch.setattr(kmnist, "FILES", {name: md5(raw) for name, raw in files.items()})
    args = ["--data-dir", tmp_path, "--mirror", server.url("ok"), "-q"]
    result = invoke("download", "--dataset", "kmnist", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [str(tmp_path / "kmnist")]
    assert sorted(p.name for p in (tmp_path / "kmnist").iterdir()) == sorted(files)


def test_download_errors_are_one_line(server, tmp_path, monkeypatch):
    _, files = idx_files(seed=10)
    server.files = files  # the real MD5s stay pinned: these files fail them
    args = ["--data-dir", tmp_path, "--mirror", server.url("ok"), "-q"]
    line = error_line(invoke("download", "--dataset", "fashion-mnist", *args))
    assert line.startswith(f"could not fetch fashion-mnist file {data.TRAIN_IMAGES}")
    assert "content fails the MD5 check" in line
    assert list((tmp_path / "fashion-mnist").iterdir()) == []
    line = error_line(invoke("download", "--dataset", "kmnst", *args))
    assert line.startswith("--dataset: unknown dataset 'kmnst' (did you mean 'kmnist'?)")
    line = error_line(invoke("download", "--dataset", "folder", *args))
    assert line.startswith("--dataset folder: a folder is your own images, nothing to download")


def test_a_network_without_the_sets_class_count_is_refused_in_one_line(tmp_path):
    cfg = write_config(tmp_path, "cifar10", GREY_NET, [])
    cfg.write_text(cfg.read_text().replace("units: 10", "units: 7"))
    line = error_line(invoke("train", "-c", cfg))  # said before any download
    assert line == (
        f"{cfg}: network: the last layer, network[2] (dense), gives shape (7,), but cifar10 "
        "needs 10 class scores"
    )
    assert cifar10.INPUT_SHAPE == (3, 32, 32)
