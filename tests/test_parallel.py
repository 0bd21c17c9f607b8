"""The worker pool (numpycnn.parallel): the gradients, losses and predictions of its
workers are the engine's own, in one process; its steps are bit-identical run after run; it
shares the model's buffers and releases everything it made. Real worker processes
throughout; the signal and crash scenarios are in test_parallel_processes.py."""

import glob
import multiprocessing
import os
import signal
import time

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from numpycnn.data import Normalization
from numpycnn.engine import Sequential, losses, reference_network
from numpycnn.engine.optim import Adam
from numpycnn.parallel import (
    CHUNK,
    MIN_SHARE,
    PREDICT_IN_PROCESS_BELOW,
    WorkerError,
    WorkerPool,
    default_workers,
    shares,
)

POOL_NET = [  # avgpool, sigmoid, tanh, a padded conv: every kind of layer but maxpool's
    {"type": "conv2d", "filters": 3, "kernel": 3, "padding": 1},
    {"type": "sigmoid"},
    {"type": "avgpool2d", "size": 2},
    {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2},
    {"type": "tanh"},
    {"type": "flatten"},
    {"type": "dense", "units": 10},
]
SMALL_NET = [
    {"type": "conv2d", "filters": 4, "kernel": 5},
    {"type": "leaky_relu", "alpha": 0.1},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 16},
    {"type": "relu"},
    {"type": "dense", "units": 10},
]


class Shift:
    """A picklable stand-in for an augmentation: adds each image's first parameter to all
    its pixels."""

    params_per_image = 2

    def apply(self, images, params):
        return images + params[:, :1, None, None].astype(images.dtype)


class Broken(Shift):
    """Fails in the helper processes only (``here``: the process that made it computes)."""

    def __init__(self, everywhere=False):
        self.home = None if everywhere else os.getpid()

    def apply(self, images, params):
        if os.getpid() != self.home:
            raise ValueError("this augmentation always fails")
        return super().apply(images, params)


def segments(pid=None):
    return sorted(glob.glob(f"/dev/shm/numpycnn-{os.getpid() if pid is None else pid}-*"))


@pytest.fixture(autouse=True)
def leaves_nothing_behind():
    """Each test's pools leave no process and no segment behind. (And the in-process
    references run on one BLAS thread, as the workers do: on a busy 2-core machine two
    OpenBLAS threads make these small products crawl.)"""
    before = segments()
    with threadpool_limits(1):
        yield
    assert multiprocessing.active_children() == []
    assert segments() == before


@pytest.fixture(scope="module")
def train_data(mnist):
    """512 real training images, standardised as training does, and their labels."""
    images = mnist.train_images[:512]
    return Normalization.fit("standard", images).norm(images), mnist.train_labels[:512]


def twin(model):
    """An in-process copy of ``model``: the same network and parameters."""
    other = Sequential(
        model.specs(), loss=model.loss.kind, input_shape=model.input_shape, dtype=model.dtype
    )
    other.set_params(model.get_params())
    return other


def in_process(model, x, y, idx):
    """(loss, correct, flat gradient) of the batch in one process, on a copy of ``model``."""
    ref = twin(model)
    loss, out = ref.loss_on(x[idx], y[idx])
    ref.backward()
    return loss, int((out.argmax(axis=1) == y[idx]).sum()), ref.flat_grads.copy()


def check_step(model, x, y, idx, workers, rtol, method="fork"):
    loss, correct, grads = in_process(model, x, y, idx)
    with WorkerPool(model, x, y, workers=workers, start_method=method) as pool:
        got_loss, got_correct = pool.step(idx)
        assert got_correct == correct
        assert got_loss == pytest.approx(loss, rel=rtol)
        scale = np.abs(grads).max()
        np.testing.assert_allclose(model.flat_grads, grads, rtol=rtol, atol=rtol * scale)
        for name, g in zip(model.param_names, model.grads):  # the layers' views see it too
            assert np.shares_memory(g, model.flat_grads), name
        return model.flat_grads.copy()


@pytest.mark.parametrize("loss", sorted(losses.LOSSES))
def test_every_loss_gives_the_in_process_gradient(loss, train_data):
    layers = SMALL_NET + ([{"type": "sigmoid"}] if loss == "binary_cross_entropy" else [])
    model = Sequential(layers, loss=loss, dtype="float64", init="he_normal", seed=1)
    x, y = train_data
    idx = np.random.default_rng(0).permutation(len(x))[:37]  # shares of 13, 12, 12
    check_step(model, x, y, idx, workers=3, rtol=1e-12)


@pytest.mark.parametrize(
    ("layers", "dtype", "rtol", "batch"),
    [
        ("reference", "float32", 2e-5, 32),
        ("reference", "float64", 1e-12, 33),
        (POOL_NET, "float64", 1e-12, 20),
        (POOL_NET, "float32", 2e-5, 1),  # fewer images than workers: one share is empty
        # shares of 70 and 69 images, each computed in chunks of 14 (CHUNK is 16)
        ("reference", "float64", 1e-12, 139),
    ],
    ids=["reference-f32", "reference-f64", "avgpool-sigmoid-f64", "one-image", "chunked"],
)
def test_networks_give_the_in_process_gradient(layers, dtype, rtol, batch, train_data):
    if layers == "reference":
        model = reference_network(dtype=dtype, seed=2)
    else:
        model = Sequential(layers, dtype=dtype, init="glorot_uniform", seed=2)
    x, y = train_data
    idx = np.random.default_rng(1).choice(len(x), batch, replace=False)
    check_step(model, x, y, idx, workers=2, rtol=rtol)


def train(x, y, workers, method="fork", steps=4, batch=32):
    """Parameters after ``steps`` Adam steps through a pool, and the losses on the way."""
    model = reference_network(seed=3)
    opt, rng, costs = Adam(lr=1e-3), np.random.default_rng(4), []
    with WorkerPool(model, x, y, workers=workers, start_method=method) as pool:
        for _ in range(steps):
            loss, _ = pool.step(rng.permutation(len(x))[:batch])
            opt.step(model.flat_params, model.flat_grads)
            costs.append(loss)
    return model.flat_params.copy(), costs


def test_adam_steps_are_bit_identical_run_after_run(train_data):
    x, y = train_data
    first, costs = train(x, y, workers=2)
    second, costs_again = train(x, y, workers=2)
    assert first.tobytes() == second.tobytes() and costs == costs_again
    # ... and the same training as in one process, up to summation order.
    model, opt, rng = reference_network(seed=3), Adam(lr=1e-3), np.random.default_rng(4)
    for _ in range(4):
        idx = rng.permutation(len(x))[:32]
        model.train_step(x[idx], y[idx], opt)
    np.testing.assert_allclose(first, model.flat_params, rtol=0, atol=1e-5)
    assert not np.array_equal(first, reference_network(seed=3).flat_params)  # it trained


def test_spawn_workers_compute_what_forked_ones_do(train_data):
    x, y = train_data
    idx = np.arange(40, 72)
    model = reference_network(seed=5)
    forked = check_step(model, x, y, idx, workers=2, rtol=2e-5, method="fork")
    spawned = check_step(model, x, y, idx, workers=2, rtol=2e-5, method="spawn")
    assert forked.tobytes() == spawned.tobytes()


def test_augmentation_is_applied_by_the_workers(train_data):
    x, y = train_data
    model = Sequential(SMALL_NET, dtype="float64", init="he_normal", seed=6)
    idx = np.arange(100, 131)
    aug = np.random.default_rng(7).normal(0, 0.5, (len(idx), 2))
    ref = twin(model)
    loss, out = ref.loss_on(Shift().apply(x[idx].astype(np.float64), aug), y[idx])
    ref.backward()
    with WorkerPool(model, x, y, workers=2, augment=Shift()) as pool:
        got = pool.step(idx, aug)
        assert got == (pytest.approx(loss, rel=1e-12), int((out.argmax(1) == y[idx]).sum()))
        np.testing.assert_allclose(model.flat_grads, ref.flat_grads, rtol=1e-12, atol=1e-15)
        plain, _ = pool.step(idx)  # no parameters: no augmentation for this step
        assert plain == pytest.approx(in_process(model, x, y, idx)[0], rel=1e-12)
        assert plain != pytest.approx(loss, rel=1e-6)
        with pytest.raises(ValueError, match=r"aug_params must have shape \(31, 2\)"):
            pool.step(idx, aug[:, :1])
    with WorkerPool(model, x, y, workers=1) as pool, pytest.raises(ValueError, match="no augment"):
        pool.step(idx, aug)


def test_chunks_of_a_share_see_their_own_augmentation(train_data):
    """A share larger than CHUNK is computed in pieces; each piece takes the augmentation
    parameters of its own images, and the pieces add up to the whole batch's gradient."""
    x, y = train_data
    model = Sequential(SMALL_NET, dtype="float64", init="he_normal", seed=6)
    idx = np.arange(3 * CHUNK + 5)  # one share in this process: 4 chunks
    aug = np.random.default_rng(8).normal(0, 0.5, (len(idx), 2))
    ref = twin(model)
    loss, _ = ref.loss_on(Shift().apply(x[idx].astype(np.float64), aug), y[idx])
    ref.backward()
    with WorkerPool(model, x, y, workers=1, augment=Shift()) as pool:
        got_loss, _ = pool.step(idx, aug)
        assert got_loss == pytest.approx(loss, rel=1e-12)
        np.testing.assert_allclose(model.flat_grads, ref.flat_grads, rtol=1e-11, atol=1e-14)


def test_predictions_use_the_current_shared_parameters(train_data):
    x, y = train_data
    model = reference_network(seed=8)
    opt = Adam(lr=1e-2)
    with WorkerPool(model, x, y, workers=2) as pool:
        pool.step(np.arange(64))
        opt.step(model.flat_params, model.flat_grads)  # the workers see the update at once
        n = PREDICT_IN_PROCESS_BELOW + 77  # several uneven blocks per worker
        expected = twin(model).predict_proba(x[:n], batch_size=32)
        np.testing.assert_allclose(pool.predict_proba(x[:n]), expected, rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(
            pool.predict(x[:n], batch_size=50)[:3], expected[:3].argmax(1)
        )
        small = pool.predict_proba(x[:5])  # in process
        np.testing.assert_allclose(small, expected[:5], rtol=1e-5, atol=1e-7)
        assert pool.predict_proba(x[:0]).shape == (0, 10)
        with pytest.raises(ValueError, match="does not match"):
            pool.predict_proba(np.zeros((200, 1, 27, 27)))


def test_buffers_shared_while_open_and_private_after(train_data):
    x, y = train_data
    model = reference_network(seed=9)
    before = model.get_params()
    with WorkerPool(model, x[:100], y[:100], workers=2) as pool:
        assert len(segments()) == 2  # the model's state and the data set
        np.testing.assert_array_equal(pool.images, x[:100])
        np.testing.assert_array_equal(pool.labels, y[:100])
        state = pool._res.segments["state"].buf
        assert np.shares_memory(model.flat_params, np.frombuffer(state, np.uint8))
        for name, p, b in zip(model.param_names, model.params, before):
            np.testing.assert_array_equal(p, b, err_msg=name)
        pool.step(np.arange(32))
        assert len(segments()) == 3  # and the batch indices
        grads = model.flat_grads.copy()
    assert pool.closed and segments() == []
    np.testing.assert_array_equal(model.flat_grads, grads)  # values kept, memory private
    assert not np.shares_memory(model.flat_params, pool.images)
    model.train_step(x[:8], y[:8], Adam())  # and the model works alone, as before
    pool.close()  # idempotent
    with pytest.raises(WorkerError, match="closed"):
        pool.step(np.arange(4))


def test_bad_arguments_are_refused(train_data):
    x, y = train_data
    model = reference_network()
    with pytest.raises(ValueError, match="workers"):
        WorkerPool(model, x, y, workers=0)
    with pytest.raises(ValueError, match="labels"):
        WorkerPool(model, x, y[:10], workers=2)
    with WorkerPool(model, x, y, workers=2) as pool:
        for idx in ([], [0.5, 1.5], [[1, 2]]):
            with pytest.raises(ValueError, match="idx"):
                pool.step(np.array(idx))
        with pytest.raises(ValueError, match=r"\[0, 512\)"):
            pool.step(np.array([0, 512]))
        loss, _ = pool.step(np.arange(8))  # still fine after the refusals
        assert np.isfinite(loss)
        model.use_buffers(model.flat_params.copy(), model.flat_grads.copy())
        with pytest.raises(WorkerError, match="no longer live"):
            pool.step(np.arange(8))


def test_a_failing_worker_is_reported_and_the_pool_closed(train_data):
    x, y = train_data
    pool = WorkerPool(reference_network(), x, y, workers=3, augment=Broken())
    # both helpers fail; the first reply to arrive names its worker
    with pytest.raises(WorkerError, match=r"worker [12] \(pid \d+\) failed: ValueError: this") as e:
        pool.step(np.arange(8), np.zeros((8, 2)))
    assert "Traceback" in e.value.details and e.value.rank in (1, 2)
    assert e.value.pid == pool.pids[e.value.rank] and f"worker {e.value.rank} " in str(e.value)
    assert pool.closed


def test_a_failure_in_this_process_share_is_its_own_error(train_data):
    """Worker 0 is the calling process: its failure is raised as it is, and a helper's
    failure of the same step is reported by the next call."""
    x, y = train_data
    pool = WorkerPool(reference_network(), x, y, workers=2, augment=Broken(everywhere=True))
    with pytest.raises(ValueError, match="always fails"):
        pool.step(np.arange(8), np.zeros((8, 2)))
    assert not pool.closed
    with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) failed: ValueError: this"):
        pool.step(np.arange(8))
    assert pool.closed


def test_a_killed_worker_is_named_within_seconds(train_data):
    x, y = train_data
    pool = WorkerPool(reference_network(), x, y, workers=2)
    pool.step(np.arange(32))
    os.kill(pool.pids[1], signal.SIGKILL)
    started = time.monotonic()
    with pytest.raises(WorkerError, match=r"worker 1 \(pid \d+\) was killed by signal 9 \(SIGKILL"):
        pool.step(np.arange(32))
    assert time.monotonic() - started < 5
    assert pool.closed


def test_shares_and_default_workers():
    assert shares(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert shares(1, 2) == [(0, 1), (1, 1)]
    assert [b - a for a, b in shares(32, 4)] == [8] * 4
    cpus = len(os.sched_getaffinity(0))
    assert default_workers() == max(1, min(cpus, 32 // MIN_SHARE))
    assert default_workers(128) == min(cpus, 128 // MIN_SHARE)
    assert default_workers(4) == 1
