"""``numpycnn train --inspect``: the live view's server in the training process, against a
real training on real MNIST and a real server on 127.0.0.1."""

import signal
import subprocess
import sys
import urllib.error
from pathlib import Path

from cli_helpers import tiny_config
from test_inspect_api import request
from test_inspect_run import poll

from numpycnn import runs


def train_inspect(tmp_path, mnist_dir, **popen):
    """`numpycnn train --inspect --no-browser` of 20 epochs of the tiny network (a test
    stops it early) in its own process, stderr piped."""
    config = tiny_config(tmp_path, epochs=20, limit=20_000, batch_size=10)
    command = [sys.executable, "-m", "numpycnn.cli.main", "train", "-c", config, "--inspect",
               "--no-browser", "--mirror", mnist_dir, "--data-dir", tmp_path / "data"]  # fmt: skip
    return subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True, **popen)


def test_train_inspect_serves_the_run_and_ctrl_c_saves_stops_it_and_exits_130(tmp_path, mnist_dir):
    proc = train_inspect(tmp_path, mnist_dir, stdout=subprocess.PIPE)
    try:
        line = proc.stderr.readline()
        while line and not line.startswith("live view of "):  # download lines first
            line = proc.stderr.readline()
        assert line.startswith("live view of ") and " at http://127.0.0.1:" in line, line
        url = line.rsplit(" at ", 1)[1].strip().rstrip("/")
        model = poll(lambda: (r := request(url + "/api/model"))[0] == 200 and r[1])
        assert model and model["class_names"] == [str(k) for k in range(10)]
        first = poll(lambda: (r := request(url + "/api/run")[1]).get("step") and r)
        assert first["running"]
        later = poll(lambda: (r := request(url + "/api/run")[1])["step"] > first["step"] and r)
        assert later and later["step"] > first["step"]
        status, p = request(url + "/api/predict", {"test_index": 0})
        assert status == 200 and p["snapshot"] is not None

        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    folder = tmp_path / "runs" / "tiny"
    assert (folder / runs.LAST).is_file()  # saved as without --inspect
    try:
        request(url + "/api/run")
        raise AssertionError("the server still answers after train exited")
    except (urllib.error.URLError, ConnectionError):
        pass


def test_the_server_process_dies_with_a_sigkilled_training(tmp_path, mnist_dir):
    """The server is a process of its own (niced); a SIGKILL of the training leaves no
    server behind: the port stops answering within seconds."""
    proc = train_inspect(tmp_path, mnist_dir)
    try:
        line = proc.stderr.readline()
        while line and not line.startswith("live view of "):  # download lines first
            line = proc.stderr.readline()
        url = line.rsplit(" at ", 1)[1].strip().rstrip("/")
        assert poll(lambda: (r := request(url + "/api/run"))[0] == 200 and r[1]["running"])
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)

        def gone():
            try:
                request(url + "/api/snapshots")
            except (urllib.error.URLError, ConnectionError):
                return True
            return False

        assert poll(gone, timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        proc.stderr.close()


def live_servers_of(pid):
    """The live-server processes started by process ``pid`` that are still alive."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"inspector.live" in part for part in cmd) and str(pid).encode() in cmd:
            found.append(int(entry.name))
    return found


def test_the_server_started_before_the_data_is_read_ends_with_a_failing_command(tmp_path):
    """The server process starts before the training reads its data (its imports are done
    by the first batch); a train that fails before it has a run folder leaves none behind."""
    (tmp_path / "bad.yaml").write_text("training:\n  epochs: many\n")
    command = [sys.executable, "-m", "numpycnn.cli.main", "train", "-c", tmp_path / "bad.yaml",
               "--inspect", "--no-browser"]  # fmt: skip
    proc = subprocess.Popen(list(map(str, command)), stderr=subprocess.PIPE, text=True)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (1, 2), err
    assert "epochs" in err and "Traceback" not in err, err
    assert not live_servers_of(proc.pid)


def test_a_waiting_server_exits_when_its_training_ends_without_a_folder():
    from numpycnn.inspector.live import start_server

    server = start_server()
    try:
        assert server.process.poll() is None  # importing, then waiting for the folder
        server.process.stdin.close()  # the training ended first
        server.process.stdin = None
        assert server.process.wait(30) == 0
    finally:
        server.stop()


def test_a_live_view_that_cannot_listen_is_one_line_before_training(tmp_path, monkeypatch):
    from cli_helpers import invoke

    def refused(**options):
        raise OSError(98, "Address already in use")

    monkeypatch.setattr("numpycnn.inspector.live.start_server", refused)
    config = tiny_config(tmp_path, epochs=1, limit=200)
    result = invoke("train", "-c", config, "--inspect", "--no-browser", "--runs-dir", tmp_path)
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [
        "Error: cannot serve the live view: [Errno 98] Address already in use"
    ]
    assert not any(tmp_path.glob("*/steps.csv"))  # nothing trained
