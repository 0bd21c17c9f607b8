"""``numpycnn train --inspect``: the live view's server in the training process, against a
real training on real MNIST and a real server on 127.0.0.1."""

import signal
import subprocess
import sys
import urllib.error

from cli_helpers import tiny_config
from test_inspect_api import request
from test_inspect_run import poll

from numpycnn import runs


def test_train_inspect_serves_the_run_and_ctrl_c_saves_stops_it_and_exits_130(tmp_path, mnist_dir):
    config = tiny_config(tmp_path, epochs=3, limit=20_000, batch_size=10)
    command = [sys.executable, "-m", "numpycnn.cli.main", "train", "-c", config, "--inspect",
               "--no-browser", "--mirror", mnist_dir, "--data-dir", tmp_path / "data"]  # fmt: skip
    proc = subprocess.Popen(
        list(map(str, command)), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
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
