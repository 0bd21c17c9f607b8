"""BLAS computes on one thread in every process that trains or predicts.

OpenBLAS's helper threads spin while they wait: on a machine where another job holds a
core, training in one process with two BLAS threads ran 5 to 25 times slower than with one
(README, "Speed"). Parallelism comes from worker processes and prediction threads instead,
each on one BLAS thread. These tests check the limit in force while the work runs (not the
speed: no timing in unit tests), starting from two BLAS threads so that they would see the
library's default.
"""

import numpy as np
import pytest
from cli_helpers import digit_files, fake_mnist, invoke, real_mnist, tiny_config
from threadpoolctl import threadpool_info, threadpool_limits

import numpycnn
from numpycnn import parallel
from numpycnn.engine import Sequential
from numpycnn.training import evaluate


def blas_threads():
    return sorted({lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"})


@pytest.fixture
def two_blas_threads():
    if not any(lib["user_api"] == "blas" for lib in threadpool_info()):
        pytest.skip("NumPy has no BLAS that threadpoolctl can see")
    with threadpool_limits(limits=2, user_api="blas"):
        assert blas_threads() == [2]
        yield


@pytest.fixture
def seen(monkeypatch):
    """The BLAS thread counts in force whenever the engine predicts."""
    found = []
    predict = Sequential.predict_proba

    def recording(self, *args, **kwargs):
        found.append(blas_threads())
        return predict(self, *args, **kwargs)

    monkeypatch.setattr(Sequential, "predict_proba", recording)
    return found


def test_training_in_one_process_uses_one_blas_thread(tmp_path, mnist_dir, two_blas_threads):
    during = []
    numpycnn.train(
        tiny_config(tmp_path, limit=200),
        workers=1,
        threads=1,
        mirrors=[str(mnist_dir)],
        data_dir=tmp_path / "data",
        callbacks=numpycnn.Callbacks(on_batch=lambda *args: during.append(blas_threads())),
    )
    assert during and all(t == [1] for t in during), during
    assert blas_threads() == [2]  # the caller's setting is back afterwards


def test_eval_and_prediction_in_one_process_use_one_blas_thread(mnist, two_blas_threads, seen):
    model = Sequential([{"type": "flatten"}, {"type": "dense", "units": 10}])
    images = mnist.test_images[:300].astype(np.float32) / 255
    evaluate(model, images, mnist.test_labels[:300], threads=1, workers=1)
    parallel.predict_proba(model, images[:10], workers=2)  # too few to start a pool
    assert seen and all(t == [1] for t in seen), seen


def test_the_commands_predict_on_one_blas_thread(
    tmp_path, monkeypatch, mnist_dir, two_blas_threads, seen
):
    fake_mnist(monkeypatch, mnist_dir, test_limit=200)
    params = tmp_path / "out.pkl"
    assert invoke("train", "-c", tiny_config(tmp_path, limit=100), "-q").exit_code == 0
    seen.clear()
    result = invoke("eval", params, "--workers", 1, "--threads", 1)
    assert result.exit_code == 0, result.output
    paths, _ = digit_files(tmp_path, real_mnist(str(mnist_dir)), 3)
    result = invoke("predict", *paths, "--params", params, "--workers", 1)
    assert result.exit_code == 0, result.output
    assert len(seen) >= 2 and all(t == [1] for t in seen), seen
