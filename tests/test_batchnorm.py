"""Batch norm and dropout beyond their gradients (test_gradcheck, test_torch_parity): modes
and state, model files and exact resumption, config errors, and the worker pool's
whole-batch statistics with real processes."""

import pickle

import numpy as np
import pytest

from numpycnn import modelfile
from numpycnn.config import ConfigError, load_config
from numpycnn.engine import Sequential, optim
from numpycnn.parallel import WorkerPool
from numpycnn.training import Trainer

NETWORK = [
    {"type": "conv2d", "filters": 4, "kernel": 5},
    {"type": "batchnorm2d"},
    {"type": "relu"},
    {"type": "maxpool2d", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 24},
    {"type": "batchnorm1d", "momentum": 0.2},
    {"type": "relu"},
    {"type": "dropout", "p": 0.3},
    {"type": "dense", "units": 10},
]
NORM = {"strategy": "reference", "mean": 33.0, "std": 78.0}


@pytest.fixture(scope="module")
def images(mnist):
    x = (mnist.train_images[:800].reshape(-1, 1, 28, 28).astype(np.float32) - 33) / 78
    return x, mnist.train_labels[:800].astype(np.int64)


def test_state_is_not_a_parameter_and_moves_only_in_training(images):
    x, y = images
    model = Sequential(NETWORK, init="he_normal")
    assert model.num_params == 4 * 25 + 4 + 4 + 4 + 576 * 24 + 24 + 24 + 24 + 240 + 10
    assert model.state_names[:3] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    before = model.state()
    model.predict(x[:64])  # evaluation: the running statistics are read, never moved
    assert all(np.array_equal(a, b) for a, b in zip(before, model.state()))
    opt = optim.Adam(0.01)
    model.train().train_step(x[:64], y[:64], opt)
    after = model.state()
    assert after[2][0] == 1 and not np.array_equal(after[0], before[0])
    state = model.flat_state.copy()
    opt.step(model.flat_params, model.flat_grads)  # the optimiser never sees the state
    assert np.array_equal(state, model.flat_state)
    # prediction uses the running statistics whatever the mode, one image as a batch
    one = model.predict_proba(x[:1])
    assert model.training
    np.testing.assert_allclose(model.eval().predict_proba(x[:64])[:1], one, rtol=1e-5)


def make_trainer(data, seed=5, model_seed=1):
    x, y = data
    model = Sequential(NETWORK, init="he_normal", seed=model_seed)
    return Trainer(
        model, optim.Adam(3e-3), x[:600], y[:600], epochs=2, batch_size=40, seed=seed,
        val=(x[600:], y[600:]),
    )  # fmt: skip


def test_a_checkpoint_through_a_model_file_resumes_exactly(images, tmp_path):
    """Stopped mid-epoch, saved, loaded and resumed: the same costs, parameters and running
    statistics as the uninterrupted run (dropout's masks are those of the same steps)."""
    whole = make_trainer(images)
    assert whole.run()
    first = make_trainer(images)
    calls = iter(range(10**6))
    assert not first.run(should_stop=lambda: next(calls) >= 20)  # stops in epoch 2
    path = tmp_path / "last.pkl"
    modelfile.save_model(path, first.model, NORM, checkpoint=first.state_dict())
    loaded = modelfile.load_model(path)
    resumed = make_trainer(images, seed=99, model_seed=42)
    resumed.model.set_params(loaded.model.get_params())
    resumed.model.set_state(loaded.model.state())
    resumed.load_state_dict(loaded.checkpoint)
    assert resumed.run()
    assert resumed.cost == whole.cost
    for a, b in zip(resumed.model.get_params(), whole.model.get_params()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(resumed.model.state(), whole.model.state()):
        np.testing.assert_array_equal(a, b)
    assert [s.val_accuracy for s in resumed.history] == [s.val_accuracy for s in whole.history]


def test_model_files_keep_the_state_and_older_files_load_without_it(images, tmp_path):
    x, _ = images
    model = Sequential(NETWORK, init="he_normal")
    model.train().forward(x[:50])
    model.eval()
    path = tmp_path / "bn.pkl"
    modelfile.save_model(path, model, NORM)
    loaded = modelfile.load_model(path).model
    np.testing.assert_array_equal(loaded.flat_state, model.flat_state)
    np.testing.assert_array_equal(loaded.predict_proba(x[:20]), model.predict_proba(x[:20]))

    stored = pickle.loads(path.read_bytes())
    del stored["state"]  # as a file written before state existed
    path.write_bytes(pickle.dumps(stored))
    fresh = modelfile.load_model(path).model
    assert list(fresh.layers[1].state["running_var"]) == [1.0] * 4
    assert fresh.layers[1].state["num_batches_tracked"][0] == 0

    stored["state"] = [np.zeros(3)] + model.state()[1:]
    path.write_bytes(pickle.dumps(stored))
    with pytest.raises(modelfile.ModelFileError) as info:
        modelfile.load_model(path)
    assert str(info.value) == (f"{path}: state 1.running_mean: expected shape (4,), got (3,)")


@pytest.mark.parametrize(
    "layer,message",
    [
        ("{type: batchnorm2d, momentum: 1.5}", "network[1] (batchnorm2d): momentum must be a "
         "number in [0, 1], got 1.5"),
        ("{type: batchnorm2d, eps: 0}", "network[1] (batchnorm2d): eps must be a number in "
         "(0, 1], got 0"),
        ("{type: dropout, p: 1}", "network[1] (dropout): p must be a number in [0, 1), got 1"),
        ("{type: dropout, rate: 0.5}", "unknown key 'network[1].rate' for dropout (known: p)"),
        ("{type: batchnorm1d}", "network[1] (batchnorm1d) needs a flat input, but network[0] "
         "(conv2d) gives 4x24x24 (channels x height x width): add a flatten layer before it"),
    ],
)  # fmt: skip
def test_config_errors_are_one_line(tmp_path, layer, message):
    path = tmp_path / "bad.yaml"
    path.write_text(
        "network:\n  - {type: conv2d, filters: 4, kernel: 5}\n"
        f"  - {layer}\n  - {{type: flatten}}\n  - {{type: dense, units: 10}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == f"{path}: {message}"


def test_momentum_null_is_the_cumulative_average(tmp_path):
    path = tmp_path / "cma.yaml"
    path.write_text(
        "network:\n  - {type: flatten}\n  - {type: dense, units: 10}\n"
        "  - {type: batchnorm1d, momentum: null}\n"
    )
    model = Sequential(load_config(path).network, dtype="float64").train()
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((16, 1, 28, 28)) for _ in range(3)]
    means = [model.forward(b) for b in batches]  # noqa: F841  (the state is the point)
    hidden = [b.reshape(16, -1) @ model.params[0].T for b in batches]
    np.testing.assert_allclose(
        model.layers[2].state["running_mean"], np.mean([h.mean(axis=0) for h in hidden], 0)
    )


# ----- the worker pool -----


def pool_steps(data, workers, steps=4, batch=48):
    """``steps`` SGD steps of a float64 network on ``workers`` real processes (1: in this
    process); returns (parameters, state, losses, predictions). SGD, because Adam turns
    rounding-sized gradients (the biases before batch norm have a zero one) into whole
    steps of either sign."""
    x, y = data
    model = Sequential(NETWORK, init="he_normal", dtype="float64", seed=2)
    opt, losses = optim.SGD(0.1), []
    rng = np.random.default_rng(0)
    with WorkerPool(model, x, y, workers=workers, start_method="fork") as pool:
        for step in range(steps):
            model.set_step(7, step)
            loss, _ = pool.step(rng.choice(len(x), batch, replace=False))
            opt.step(model.flat_params, model.flat_grads)
            losses.append(loss)
        probs = pool.predict_proba(x[:300])  # the helpers predict with the shared state
    return model.flat_params.copy(), model.flat_state.copy(), losses, probs


def test_one_and_two_workers_give_the_same_statistics_and_parameters(images):
    """Synchronised batch norm: two processes, each with half of every batch, compute the
    whole batch's statistics and gradients, so the running statistics, parameters and
    losses equal one process's up to rounding, and dropout draws the same masks."""
    x, y = images
    data = (x.astype(np.float64), y)
    one, two = pool_steps(data, 1), pool_steps(data, 2)
    for a, b in zip(one, two):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert one[1][8] == 4  # num_batches_tracked of the first batch norm: 4 steps
    # per-share statistics would not do: half a batch's mean is far from the batch's
    half = x[:24, 0].mean(), x[:48, 0].mean()
    assert abs(half[0] - half[1]) > 1e-3
