"""``numpycnn inspect RUN_FOLDER``: the run's state and snapshots over the API, and any
snapshot's answers, against a real short training and a real server on 127.0.0.1."""

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import replace

import numpy as np
import pytest
import yaml
from cli_helpers import error_line, fake_mnist, invoke, tiny_config
from test_inspect_api import request
from test_inspect_cli import start

import numpycnn
from numpycnn import runlog
from numpycnn.config import load_config
from numpycnn.engine import Sequential
from numpycnn.inspector import Inspector, make_server
from numpycnn.inspector.run import RunView
from numpycnn.modelfile import load_model

#: 300 images in batches of 50, two epochs: 12 steps, a snapshot at every one.
STEPS, PER_EPOCH = 12, 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist_dir):
    """A finished tiny run: (run folder, final model file, config file)."""
    tmp = tmp_path_factory.mktemp("run")
    config = tiny_config(tmp, epochs=2, limit=300, batch_size=50)
    with pytest.MonkeyPatch.context() as mp:
        fake_mnist(mp, mnist_dir, test_limit=200)
        result = numpycnn.train(config, workers=1)
    return result.folder.path, result.params, config


def sets(mnist):
    test = (mnist.test_images[:100], mnist.test_labels[:100])
    return {"test_set": lambda: test}


@contextlib.contextmanager
def serving(inspector, run=None):
    server = make_server(inspector, log=lambda line: None, run=run)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@contextlib.contextmanager
def served_run(folder, mnist):
    view = RunView.open(folder, **sets(mnist), name=folder.name)
    with serving(view.base, view) as url:
        yield url


def pixels(mnist, i=0):
    return {"pixels": mnist.test_images[i].reshape(-1).tolist()}


def probabilities_of(inspector, mnist, i=0):
    return inspector.trace(mnist.test_images[i]).probabilities.tolist()


def test_run_and_snapshots_say_what_the_folder_says(trained, mnist):
    folder, _, _ = trained
    with served_run(folder, mnist) as url:
        status, run = request(url + "/api/run")
        assert status == 200
        assert (run["state"], run["running"], run["finished"], run["failed"]) == (
            "finished", False, True, False,
        )  # fmt: skip
        assert (run["step"], run["total_steps"], run["epoch"]) == (STEPS, STEPS, 2)
        assert run["per_batch"]["step"] == list(range(1, STEPS + 1))
        assert run["per_batch"]["epoch"] == [1] * PER_EPOCH + [2] * PER_EPOCH
        assert run["per_epoch"]["epoch"] == [1, 2]
        expected = json.loads(json.dumps(runlog.read_run(folder)))
        assert {k: run[k] for k in expected} == expected  # read_run's data, all of it

        status, newer = request(url + "/api/run?since=10")
        assert status == 200 and newer["per_batch"]["step"] == [11, 12]
        assert newer["per_batch"]["loss"] == run["per_batch"]["loss"][10:]
        status, bad = request(url + "/api/run?since=ten")
        assert status == 400 and bad["error"] == "'since' must be a step (an integer), got 'ten'"

        status, snaps = request(url + "/api/snapshots")
        assert status == 200
        assert [s["step"] for s in snaps["snapshots"]] == list(range(STEPS + 1))
        assert [s["epoch"] for s in snaps["snapshots"]] == [s / PER_EPOCH for s in range(13)]
        assert snaps["snapshots"][0]["time"] == 0.0


def test_the_last_snapshot_is_the_final_model_and_step_0_the_seeded_start(trained, mnist):
    folder, params, config_path = trained
    final = Inspector(load_model(params))
    t = load_config(config_path).training
    init = Sequential(load_config(config_path).network, loss=t.loss, init=t.init, dtype=t.dtype,
                      seed=t.seed)  # fmt: skip
    start0 = Inspector(replace(load_model(params), model=init))
    with served_run(folder, mnist) as url:
        status, last = request(url + "/api/predict", {**pixels(mnist), "snapshot": STEPS})
        assert status == 200 and last["snapshot"] == STEPS
        assert last["probabilities"] == probabilities_of(final, mnist)
        _, default = request(url + "/api/predict", pixels(mnist))
        assert default["snapshot"] == STEPS
        assert default["probabilities"] == last["probabilities"]

        status, first = request(url + "/api/predict", {**pixels(mnist), "snapshot": 0})
        assert status == 200 and first["snapshot"] == 0
        assert first["probabilities"] == probabilities_of(start0, mnist)
        assert first["probabilities"] != last["probabilities"]  # it did learn

        status, inspected = request(url + "/api/inspect", {**pixels(mnist), "snapshot": 0})
        assert status == 200 and inspected["snapshot"] == 0
        assert inspected["logits"] == start0.trace(mnist.test_images[0]).logits.tolist()
        body = {**pixels(mnist), "snapshot": 0, "layer": 5, "unit": [3]}
        status, unit = request(url + "/api/unit", body)
        tr = start0.trace(mnist.test_images[0])
        assert status == 200 and unit["snapshot"] == 0
        assert unit["output"] == start0.unit(tr, 5, [3])["output"]


def test_an_unknown_snapshot_is_one_line(trained, mnist):
    folder, _, _ = trained
    with served_run(folder, mnist) as url:
        for route in ("/api/predict", "/api/inspect", "/api/unit"):
            status, r = request(url + route, {**pixels(mnist), "snapshot": 999})
            assert status == 400, route
            assert r == {"error": "no snapshot at step 999 (this run has steps 0 to 12)"}
        status, r = request(url + "/api/predict", {**pixels(mnist), "snapshot": "last"})
        assert status == 400 and r["error"] == "'snapshot' must be a step (an integer), got 'last'"


def test_a_model_file_has_no_run_and_no_snapshots(trained, mnist):
    _, params, _ = trained
    with serving(Inspector(load_model(params), name=params.name)) as url:
        status, r = request(url + "/api/run")
        assert status == 404 and r == {"error": f"not a run folder: {params.name} is a model file"}
        assert request(url + "/api/snapshots") == (200, {"snapshots": []})
        status, r = request(url + "/api/predict", pixels(mnist))
        assert status == 200 and r["snapshot"] is None
        status, r = request(url + "/api/predict", {**pixels(mnist), "snapshot": 3})
        assert status == 400 and r == {"error": "no snapshot at step 3: not a run folder"}


def test_a_deleted_folder_keeps_serving_what_it_has(trained, mnist, tmp_path):
    folder = shutil.copytree(trained[0], tmp_path / "copy")
    with served_run(folder, mnist) as url:
        _, before = request(url + "/api/run")
        _, three = request(url + "/api/predict", {**pixels(mnist), "snapshot": 3})
        shutil.rmtree(folder)

        status, run = request(url + "/api/run")
        assert status == 200
        assert run["state"] == "gone" and not (run["running"] or run["finished"] or run["failed"])
        assert run["error"] == f"{folder}: the run folder is gone"
        assert run["per_batch"] == before["per_batch"]
        status, snaps = request(url + "/api/snapshots")
        assert status == 200 and [s["step"] for s in snaps["snapshots"]] == [3, STEPS]
        assert request(url + "/api/predict", {**pixels(mnist), "snapshot": 3})[1] == three
        status, r = request(url + "/api/predict", pixels(mnist))
        assert status == 200 and r["snapshot"] == STEPS
        status, r = request(url + "/api/predict", {**pixels(mnist), "snapshot": 5})
        assert status == 400 and r["error"] == "no snapshot at step 5 (this run has steps 3 to 12)"


def test_a_killed_training_reads_as_crashed(trained, mnist, tmp_path):
    folder = shutil.copytree(trained[0], tmp_path / "copy")
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    status = json.loads((folder / runlog.STATUS).read_text())
    status.update(state="running", pid=int(gone.stdout), pid_start=None)
    (folder / runlog.STATUS).write_text(json.dumps(status))
    with served_run(folder, mnist) as url:
        _, run = request(url + "/api/run")
    assert (run["state"], run["running"], run["failed"]) == ("crashed", False, True)


def test_an_old_run_folder_without_snapshots_opens_its_last_pkl(trained, mnist, tmp_path):
    folder = shutil.copytree(trained[0], tmp_path / "old")
    for name in (runlog.STEPS, runlog.STATUS):
        (folder / name).unlink()
    shutil.rmtree(folder / runlog.SNAPSHOTS)
    last = Inspector(load_model(folder / "last.pkl"))
    with served_run(folder, mnist) as url:
        assert request(url + "/api/snapshots") == (200, {"snapshots": []})
        status, r = request(url + "/api/predict", pixels(mnist))
        assert status == 200 and r["snapshot"] is None
        assert r["probabilities"] == probabilities_of(last, mnist)
        _, run = request(url + "/api/run")
        assert run["finished"] and run["per_batch"]["step"] == []


def test_the_cli_serves_a_run_folder_and_refuses_another_folder(trained, mnist_dir, tmp_path):
    folder = trained[0]
    proc, line = start(folder, "--mirror", mnist_dir, "--data-dir", tmp_path)
    try:
        assert line.startswith(f"numpycnn inspect: {folder.name} at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0].rstrip("/")
        status, run = request(url + "/api/run")
        assert status == 200 and run["finished"] and run["step"] == STEPS
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err

    line = error_line(invoke("inspect", tmp_path, "--no-browser"))
    assert line == f"{tmp_path}: not a run folder of numpycnn train"


def poll(check, timeout=60.0):
    """``check()``'s first truthy value, asked again every 20 ms for up to ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def test_a_live_training_is_followed_then_killed(tmp_path, mnist, mnist_dir):
    config = tiny_config(tmp_path, epochs=3, limit=20_000, batch_size=10)
    folder = tmp_path / "runs" / "tiny"
    command = [sys.executable, "-m", "numpycnn.cli.main", "train", "-c", config, "-q",
               "--mirror", mnist_dir, "--data-dir", tmp_path / "data"]  # fmt: skip
    proc = subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True)
    try:
        assert poll(lambda: runlog.list_snapshots(folder) or proc.poll() is not None)
        assert proc.poll() is None, proc.stderr.read()
        with served_run(folder, mnist) as url:
            _, first = request(url + "/api/run")
            assert first["running"] and first["state"] == "running"
            later = poll(lambda: (r := request(url + "/api/run")[1])["step"] > first["step"] and r)
            assert later and later["running"], later
            assert later["step"] > first["step"] and later["total_steps"] == 6000
            newer = request(url + f"/api/run?since={first['step']}")[1]["per_batch"]["step"]
            assert newer and min(newer) == first["step"] + 1

            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            dead = poll(lambda: (r := request(url + "/api/run")[1])["state"] != "running" and r)
            assert dead["state"] == "crashed" and dead["failed"] and not dead["running"]
            status, r = request(url + "/api/predict", pixels(mnist))  # still serving
            assert status == 200 and r["snapshot"] is not None
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        proc.stderr.close()


@pytest.fixture(scope="module")
def reference_init(tmp_path_factory, mnist_dir):
    """A tiny run like ``trained`` from the 2018 reference's initialisation, whose small
    weights give every class about 1/10 before the first step (He's, the default, does
    not: up to 0.9 for some images)."""
    tmp = tmp_path_factory.mktemp("reference-init")
    config = tiny_config(tmp, epochs=2, limit=300, batch_size=50)
    raw = yaml.safe_load(config.read_text())
    raw["training"]["init"] = "reference"
    config.write_text(yaml.safe_dump(raw))
    with pytest.MonkeyPatch.context() as mp:
        fake_mnist(mp, mnist_dir, test_limit=200)
        result = numpycnn.train(config, workers=1)
    return result.folder.path, result.params


def test_the_timeline_starts_near_uniform_and_ends_at_the_final_model(reference_init, mnist):
    folder, params = reference_init
    final = Inspector(load_model(params))
    with served_run(folder, mnist) as url:
        status, t = request(url + "/api/timeline", pixels(mnist, 3))
        assert status == 200 and t["steps"] == list(range(STEPS + 1))
        assert t["epochs"] == [s / PER_EPOCH for s in range(STEPS + 1)]
        first, last = t["probabilities"][0], t["probabilities"][-1]
        assert max(first) < 0.12 and min(first) > 0.08  # ten classes, nothing learnt yet
        assert last == probabilities_of(final, mnist, 3)  # exactly the final model's
        assert max(last) > 0.5 and np.argmax(last) == mnist.test_labels[3]
        for k, step in enumerate(t["steps"]):  # each step as /api/predict gives it
            _, one = request(url + "/api/predict", {**pixels(mnist, 3), "snapshot": step})
            assert one["probabilities"] == t["probabilities"][k]

        # filters and the confusion matrix at a snapshot, on demand
        _, f0 = request(url + "/api/filters?snapshot=0")
        _, f12 = request(url + f"/api/filters?snapshot={STEPS}")
        assert f0["snapshot"] == 0 and f12["snapshot"] == STEPS
        assert f0["filters"][0]["weight"] != f12["filters"][0]["weight"]
        status, c0 = request(url + "/api/confusion?snapshot=0")
        _, c12 = request(url + "/api/confusion")
        assert status == 200 and c0["snapshot"] == 0 and c12["snapshot"] == STEPS
        assert c0["accuracy"] < c12["accuracy"]
        status, bad = request(url + "/api/filters?snapshot=99")
        assert status == 400 and bad["error"].startswith("no snapshot at step 99")
        _, run = request(url + "/api/run")
        assert {(r["epoch"], r["layer"]) for r in run["layers"]} >= {
            (1, "2-conv2d"),
            (2, "2-conv2d"),
        }


def test_save_on_a_run_writes_the_filters_evolution_and_the_probe_across_the_run(
    trained, mnist, mnist_dir, tmp_path
):
    from PIL import Image

    folder = trained[0]
    seven = tmp_path / "seven.png"
    Image.fromarray(255 - mnist.test_images[0]).save(seven)
    out = tmp_path / "figures"
    result = invoke("inspect", folder, "--image", seven, "--save", out, "--mirror", mnist_dir,
                    "--data-dir", tmp_path / "data")  # fmt: skip
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert {"filters.png", "filters-evolution.gif", "probe.png"} <= set(names), names
    gif = Image.open(out / "filters-evolution.gif")
    assert gif.format == "GIF" and gif.n_frames == STEPS + 1  # one frame a snapshot
    first = np.asarray(gif.convert("RGB"))
    gif.seek(STEPS)
    assert not np.array_equal(first, np.asarray(gif.convert("RGB")))  # the filters moved
    assert Image.open(out / "probe.png").size[0] > 500


def test_inspect_of_a_run_that_has_just_started_waits_for_its_first_snapshot(
    trained, mnist_dir, tmp_path
):
    folder = shutil.copytree(trained[0], tmp_path / "starting")
    shutil.move(folder / runlog.SNAPSHOTS, tmp_path / "later")
    for name in ("last.pkl", "best.pkl"):
        (folder / name).unlink(missing_ok=True)
    proc, line = start(folder, "--mirror", mnist_dir, "--data-dir", tmp_path / "data")
    try:
        assert line.startswith("numpycnn inspect: starting at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0].rstrip("/")
        status, r = request(url + "/api/model")
        assert status == 503 and r["error"].startswith("not ready yet:"), r
        shutil.move(tmp_path / "later", folder / runlog.SNAPSHOTS)  # the first ones land
        status, model = request(url + "/api/model")
        assert status == 200 and model["run"]
        assert request(url + "/api/snapshots")[1]["snapshots"][-1]["step"] == STEPS
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_layer_figures_at_a_snapshot_are_the_trainings_telemetry_on_test_images(trained, mnist):
    from numpycnn.data import Normalization
    from numpycnn.training import layer_telemetry

    folder, params, _ = trained
    saved = load_model(params)
    net, norm = saved.model, Normalization.from_dict(saved.normalization)
    x, y = norm.norm(mnist.test_images[:64]), mnist.test_labels[:64]
    net.loss_on(x, y)
    net.backward()
    expected = json.loads(json.dumps(layer_telemetry(net, x)))
    with served_run(folder, mnist) as url:
        status, last = request(url + f"/api/layers?snapshot={STEPS}")
        assert status == 200 and last["snapshot"] == STEPS and last["images"] == 64
        assert last["layers"] == expected  # the engine's own figures, exactly
        assert "dead_fraction" in last["layers"]["3-relu"]
        _, first = request(url + "/api/layers?snapshot=0")
        assert first["layers"]["2-conv2d"]["weight_norm"] != expected["2-conv2d"]["weight_norm"]
