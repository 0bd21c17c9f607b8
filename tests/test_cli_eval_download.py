"""``eval`` fetches the MNIST test set only: against a real HTTP mirror on 127.0.0.1, the
requests it makes are the two test files, never the 9.9 MB of training images."""

import threading

import pytest
from cli_helpers import invoke
from test_data_download import MirrorServer

from numpycnn import data


@pytest.fixture
def server(mnist_dir, monkeypatch):
    for name in ("HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)  # talk to 127.0.0.1 directly
    monkeypatch.delenv(data.MIRROR_ENV, raising=False)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    httpd = MirrorServer(mnist_dir)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def test_eval_requests_only_the_test_files(tmp_path, server, reference_params_path):
    cache = tmp_path / "data"
    args = ["--data-dir", cache, "--mirror", server.url("ok"), "--quiet"]
    result = invoke("eval", reference_params_path, *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "test accuracy 98.40% (9840/10000)"
    assert sorted(server.requests) == [f"/ok/{data.TEST_IMAGES}", f"/ok/{data.TEST_LABELS}"]
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(data.SETS["test"])

    again = invoke("eval", reference_params_path, *args, "--json")  # now from the cache
    assert again.exit_code == 0, again.output
    assert len(server.requests) == 2


def test_load_mnist_fetches_and_reads_only_the_sets_asked(tmp_path, server):
    test = data.load_mnist(tmp_path, [server.url("ok")], sets=("test",))
    assert test.train_images is None and test.train_labels is None
    assert test.test_images.shape == (10000, 28, 28) and test.test_labels.dtype == "int64"
    assert sorted(server.requests) == [f"/ok/{data.TEST_IMAGES}", f"/ok/{data.TEST_LABELS}"]
    full = data.load_mnist(tmp_path, [server.url("ok")])  # the training files are added
    assert full.train_images.shape == (60000, 28, 28)
    assert len(server.requests) == 4 and (full.test_labels == test.test_labels).all()
    with pytest.raises(ValueError, match="unknown MNIST set 'validation'"):
        data.load_mnist(tmp_path, sets=("validation",))
